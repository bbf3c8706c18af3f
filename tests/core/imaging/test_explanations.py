"""Explanations a person can trust: one real generated pair per rule of the verdict, the
anti-aliasing detector, the region significance test and the findings.

Every expectation follows from how the pair was made (what a person would call it), never from a
recorded output of the engine.
"""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from bench.verdict_corpus import build_corpus
from core.imaging import CompareOptions, compare, noise
from core.imaging.findings import jpeg_info
from core.imaging.noise import SHIFT_SHARE, antialiased_mask, antialiased_masks
from core.imaging.regions import Region, merge_nearby, significant_regions, stacked
from core.imaging.significance import STRONG_SSIM_DROP, stand_out
from core.imaging.verdict import FILTER_MIN_CONFIDENCE
from tests.support.images import jpeg, paste_patch, photo, png

NO_PREVIEW = CompareOptions(preview_max_side=None)


def _page(words: list[str], resample: Image.Resampling) -> np.ndarray:
    """A UI-like page drawn at 2x and downscaled with ``resample`` (font smoothing)."""
    big = Image.new("RGB", (640, 400), (250, 250, 252))
    draw = ImageDraw.Draw(big)
    draw.rectangle((0, 0, 640, 60), fill=(33, 99, 186))
    font = ImageFont.load_default(size=26)
    for row, word_line in enumerate(words):
        draw.text((32, 100 + row * 48), word_line, fill=(30, 30, 36), font=font)
    return np.asarray(big.resize((320, 200), resample))


LINES = ["Account settings profile", "Billing invoice export", "Status pending shipped"]


def _iou(region: dict[str, int], box: tuple[int, int, int, int]) -> float:
    x, y, w, h = box
    ix = max(0, min(region["x"] + region["width"], x + w) - max(region["x"], x))
    iy = max(0, min(region["y"] + region["height"], y + h) - max(region["y"], y))
    inter = ix * iy
    return inter / (region["width"] * region["height"] + w * h - inter)


def _changed_box(a: np.ndarray, b: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(np.abs(a.astype(np.int16) - b).max(axis=2) > 25)
    return int(xs.min()), int(ys.min()), int(np.ptp(xs) + 1), int(np.ptp(ys) + 1)


# Rendering noise ------------------------------------------------------------------------------


def test_other_font_smoothing_is_antialiasing_not_change() -> None:
    a = _page(LINES, Image.Resampling.LANCZOS)
    b = _page(LINES, Image.Resampling.HAMMING)
    d = compare(png(a), png(b), NO_PREVIEW).to_dict()
    assert d["verdict"] == "identical", d["summary"]
    assert d["antialiased_ratio"] > 0.0
    assert d["regions"] == []
    off = compare(png(a), png(b), CompareOptions(antialiasing=False, preview_max_side=None))
    assert off.antialiased_ratio == 0.0
    # Without the detector the smoothing pixels count as changes.
    assert off.changed_pixels == d["changed_pixels"] + d["antialiased_pixels"]


def test_antialiased_pixels_are_drawn_magenta_on_the_heatmap() -> None:
    a = _page(LINES, Image.Resampling.LANCZOS)
    b = _page(LINES, Image.Resampling.HAMMING)
    on = compare(png(a), png(b), CompareOptions(preview_max_side=64))
    with Image.open(io.BytesIO(on.heatmap_png)) as image:
        indices = np.asarray(image)
    # Exactly the pixels the detector counted take the anti-aliasing colour (palette index 254).
    assert int(np.count_nonzero(indices == 254)) == on.antialiased_pixels > 0
    with Image.open(io.BytesIO(on.preview_png)) as image:
        assert (np.asarray(image.convert("RGB")) == (255, 0, 255)).all(axis=-1).any()
    off = compare(png(a), png(b), CompareOptions(antialiasing=False, preview_max_side=None))
    with Image.open(io.BytesIO(off.heatmap_png)) as image:
        assert not (np.asarray(image) == 254).any()


def test_one_word_changed_on_a_page_is_found_despite_smoothing_noise() -> None:
    a = _page(LINES, Image.Resampling.LANCZOS)
    edited = [LINES[0], "Billing receipt export", LINES[2]]
    truth = _changed_box(a, _page(edited, Image.Resampling.LANCZOS))
    b = _page(edited, Image.Resampling.HAMMING)  # and smoothed differently
    d = compare(png(a), png(b), NO_PREVIEW).to_dict()
    assert d["verdict"] == "localized_edit", d["summary"]
    assert len(d["regions"]) == 1
    assert _iou(d["regions"][0], truth) >= 0.5
    assert "One localised change" in d["summary"]


def test_antialiased_mask_explains_a_softer_edge_but_not_a_patch() -> None:
    a = np.full((40, 40, 3), 255, np.uint8)
    a[:, 21:] = 0
    a[:, 19], a[:, 20] = 170, 60  # a smoothed edge ...
    b = a.copy()
    b[:, 19], b[:, 20] = 140, 90  # ... smoothed by another filter
    b[5:12, 5:12] = (255, 0, 0)  # a red patch on the white background
    diff = np.abs(a.astype(np.int16) - b).max(axis=2)
    changed = diff > 25
    mask = antialiased_mask(a, b, changed, threshold=25)
    assert not mask[5:12, 5:12].any()
    assert mask[:, 19:21].mean() > 0.9
    assert not (mask & ~changed).any()


def test_a_stroke_moved_a_third_of_a_pixel_is_noise_but_ink_turned_to_paper_is_not() -> None:
    a = np.full((30, 60, 3), 255, np.uint8)
    a[:, 10:12] = 0  # a two-pixel vertical stroke
    a[:, 40:42] = 0  # another one
    b = a.copy()
    # The first stroke rendered a third of a pixel to the right: its left pixel lightens and the
    # paper on its right darkens by a third of the contrast. Both stay the darkest (brightest)
    # tone of their own neighbourhood, so only the moved-edge test explains them.
    b[:, 10], b[:, 12] = 85, 170
    # The second stroke is gone (ink turned to paper): the whole contrast changed.
    b[:, 40:42] = 255
    changed = np.abs(a.astype(np.int16) - b).max(axis=2) > 25
    masks = antialiased_masks(a, b, changed, threshold=25)
    assert masks.all[:, 10].all() and masks.all[:, 12].all()
    assert not masks.edges[:, 10].any() and not masks.edges[:, 12].any()
    assert not masks.all[:, 40:42].any()
    assert not (masks.all & ~changed).any() and not (masks.edges & ~masks.all).any()
    # The share is what separates them: a third of the contrast passes, the whole does not.
    assert 1 / 3 <= SHIFT_SHARE < 1.0


@pytest.mark.parametrize("band_rows", [1, 2, 5, 64])
def test_the_noise_masks_are_the_same_band_by_band(
    band_rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The tests run in bands of rows (bounded memory); each band sees its neighbours' rows,
    # so the masks equal those of the whole box, rows at the bands' edges included.
    a = photo(301, 203, seed=4)
    b = np.asarray(Image.open(io.BytesIO(jpeg(a, quality=60))).convert("RGB"))
    b = paste_patch(b, (60, 80, 40, 30), seed=5)
    changed = np.abs(a.astype(np.int16) - b).max(axis=2) > 10
    changed[:3] = changed[-3:] = False  # a box smaller than the image: its own edges
    monkeypatch.setattr(noise, "BAND_ROWS", 10**6)
    whole = antialiased_masks(a, b, changed, threshold=10)
    monkeypatch.setattr(noise, "BAND_ROWS", band_rows)
    banded = antialiased_masks(a, b, changed, threshold=10)
    assert whole.all.any() and whole.edges.any() and not whole.all.all()
    assert np.array_equal(banded.all, whole.all) and np.array_equal(banded.edges, whole.edges)


def _offset(img: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """``img`` resampled (bilinear) ``dx``, ``dy`` px away: a page rendered a fraction off."""
    shift = np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]], np.float32)
    size = (img.shape[1], img.shape[0])
    return cv2.warpAffine(img, shift, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def test_a_page_rendered_a_third_of_a_pixel_off_is_identical_above_its_rendering_floor() -> None:
    a = _page(LINES, Image.Resampling.LANCZOS)
    b = _offset(a, 0.33, 0.25)
    d = compare(png(a), png(b), NO_PREVIEW).to_dict()
    # Every glyph edge was re-rasterised: SSIM is well under the 99 % a re-save keeps ...
    assert d["ssim"] < 0.99
    # ... but no lower than A moved by a quarter pixel (the rendering floor) allows.
    assert d["ssim_floor"] is not None and d["ssim"] >= d["ssim_floor"] - 0.01
    assert d["verdict"] == "identical", d["summary"]
    assert d["regions"] == [] and d["antialiased_ratio"] > d["changed_ratio"]


def test_a_blurred_photo_gets_no_rendering_floor() -> None:
    a = photo(320, 240, name="astronaut", seed=2)
    b = cv2.GaussianBlur(a, (0, 0), 1.2)
    d = compare(png(a), png(b), NO_PREVIEW).to_dict()
    assert d["verdict"] == "global_change", d["summary"]
    assert d["ssim_floor"] is None  # a blur is not rendering noise: no floor is estimated


# Resampling floor, flips, misregistration ---------------------------------------------------


def test_rotated_copy_is_the_same_image_moved() -> None:
    a = photo(480, 360, name="astronaut", seed=4)
    b = cv2.warpAffine(
        a,
        cv2.getRotationMatrix2D((240, 180), 5.0, 1.0),
        (480, 360),
        flags=cv2.INTER_LINEAR,
    )
    d = compare(png(a), png(b), NO_PREVIEW).to_dict()
    assert d["alignment"]["applied"]
    assert d["ssim_floor"] is not None and d["ssim"] >= d["ssim_floor"] - 0.01
    assert d["verdict"] == "identical", d["summary"]
    assert "rotation" in d["summary"] and "moved" in d["summary"]
    assert "rotation" in {f["kind"] for f in d["findings"]}


def test_flip_is_found_in_auto_mode_and_diagnosed_in_pixel_mode() -> None:
    a = photo(320, 240, name="coffee", seed=2)
    b = np.ascontiguousarray(a[:, ::-1])
    auto = compare(png(a), png(b), NO_PREVIEW).to_dict()
    assert auto["verdict"] == "identical", auto["summary"]
    assert auto["alignment"]["method"] == "flip-horizontal"
    assert {"kind": "flip", "confidence": 1.0, "details": {"axis": "horizontal"}} in auto[
        "findings"
    ]
    pixel = compare(png(a), png(b), CompareOptions(mode="pixel", preview_max_side=None))
    assert pixel.verdict == "misaligned", pixel.summary
    assert not pixel.alignment.applied and pixel.alignment.method == "flip-horizontal"


def test_one_pixel_shift_is_misaligned_in_pixel_mode() -> None:
    a = _page(LINES, Image.Resampling.LANCZOS)
    b = np.ascontiguousarray(np.roll(a, 1, axis=1))
    pixel = compare(png(a), png(b), CompareOptions(mode="pixel", preview_max_side=None))
    assert pixel.verdict == "misaligned", pixel.summary


# Edits and regions ----------------------------------------------------------------------------


def test_small_red_patch_on_a_nearly_identical_pair_is_an_edit() -> None:
    a = photo(480, 360, name="chelsea", seed=1)
    b = a.copy()
    b[100:123, 200:221] = (230, 20, 20)  # 21 x 23 px
    d = compare(png(a), jpeg(b, 95), NO_PREVIEW).to_dict()
    assert d["verdict"] == "localized_edit", d["summary"]
    assert len(d["regions"]) == 1
    assert _iou(d["regions"][0], (200, 100, 21, 23)) >= 0.5
    assert d["summary"].startswith("One localised change at x=")


def test_jpeg_noise_makes_no_regions_and_the_summary_counts_what_it_returns() -> None:
    a = photo(480, 360, name="astronaut", seed=3)
    noisy = compare(png(a), jpeg(a, 60), NO_PREVIEW).to_dict()
    assert noisy["verdict"] == "global_change", noisy["summary"]
    assert noisy["regions"] == []
    # Every percentage in the summary is a result field.
    assert (
        f"{noisy['changed_ratio'] * 100:.1f} % of pixels beyond the tolerance" in (noisy["summary"])
    )
    edited = paste_patch(a, (300, 60, 60, 50))
    d = compare(png(a), jpeg(edited, 85), NO_PREVIEW).to_dict()
    assert d["verdict"] == "localized_edit", d["summary"]
    assert len(d["regions"]) == 1 and "One localised change" in d["summary"]
    assert d["regions"][0]["ssim"] < 0.8
    edit = next(f for f in d["findings"] if f["kind"] == "edit")
    assert edit["details"]["count"] == len(d["regions"])


def test_two_pasted_objects_are_two_classified_regions() -> None:
    a = photo(480, 360, name="rocket", seed=5)
    donor = photo(480, 360, name="coffee", seed=6)
    b = a.copy()
    b[40:90, 40:110] = donor[200:250, 100:170]
    b[250:300, 330:420] = donor[20:70, 300:390]
    d = compare(png(a), png(b), NO_PREVIEW).to_dict()
    assert d["verdict"] == "localized_edit", d["summary"]
    boxes = [(40, 40, 70, 50), (330, 250, 90, 50)]
    assert len(d["regions"]) == 2
    for box in boxes:
        assert any(_iou(r, box) >= 0.5 for r in d["regions"])
    assert all(r["kind"] in ("added", "removed", "recoloured", "changed") for r in d["regions"])
    assert "2 localised changes" in d["summary"]


def test_removed_object_region_is_classified_removed() -> None:
    a = np.full((200, 300, 3), 200, np.uint8)
    rng = np.random.default_rng(0)
    a[60:120, 100:180] = rng.integers(0, 255, size=(60, 80, 3), dtype=np.uint8)  # an object
    b = a.copy()
    b[60:120, 100:180] = 200  # painted out
    d = compare(png(a), png(b), NO_PREVIEW).to_dict()
    assert d["verdict"] == "localized_edit"
    assert d["regions"][0]["kind"] == "removed"
    d2 = compare(png(b), png(a), NO_PREVIEW).to_dict()
    assert d2["regions"][0]["kind"] == "added"


def test_a_sticker_over_a_busy_edge_is_added_and_taking_it_off_is_removed() -> None:
    # A flat red ring over a black/white edge has less gradient energy than what it covers:
    # the colours that stand out from the surroundings say which image holds the object.
    a = np.zeros((240, 320, 3), np.uint8)
    a[:, 160:] = 235
    a[::6, :] = 128  # busy stripes on both sides of the edge
    b = a.copy()
    cv2.circle(b, (160, 120), 30, (30, 30, 220), thickness=-1)
    cv2.circle(b, (160, 120), 12, (235, 235, 235), thickness=-1)
    added = compare(png(a), png(b), NO_PREVIEW).to_dict()
    assert added["verdict"] == "localized_edit", added["summary"]
    assert added["regions"][0]["kind"] == "added"
    assert "added" in added["summary"]
    removed = compare(png(b), png(a), NO_PREVIEW).to_dict()
    assert removed["regions"][0]["kind"] == "removed"


def test_significance_drops_noise_specks_but_keeps_a_dense_block() -> None:
    rng = np.random.default_rng(1)
    noise = rng.random((200, 200)) < 0.02
    noise[50:80, 50:90] = True
    specks = [Region(x=10, y=10, width=2, height=2, area=4, mean_diff=0.12, max_diff=0.2)]
    block = Region(x=50, y=50, width=40, height=30, area=1200, mean_diff=0.6, max_diff=0.9)
    kept = significant_regions([block, *specks], noise)
    assert kept == [block]
    clean = np.zeros((200, 200), bool)
    clean[10:12, 10:12] = True
    assert significant_regions(specks, clean) == specks


def test_merge_nearby_joins_fragments_of_one_word() -> None:
    left = Region(x=10, y=10, width=20, height=10, area=80, mean_diff=0.5, max_diff=0.9)
    right = Region(x=33, y=11, width=15, height=9, area=60, mean_diff=0.3, max_diff=0.7)
    far = Region(x=100, y=10, width=10, height=10, area=50, mean_diff=0.5, max_diff=0.5)
    merged = merge_nearby([left, right, far], gap=6)
    assert len(merged) == 2
    assert (merged[0].x, merged[0].width, merged[0].area) == (10, 38, 140)
    assert merged[0].mean_diff == pytest.approx((0.5 * 80 + 0.3 * 60) / 140)


def test_merge_nearby_joins_the_lines_of_one_changed_text_block_only() -> None:
    # A changed word that reflows its paragraph: two lines, 8 px apart (more than the gap).
    line1 = Region(x=21, y=78, width=33, height=14, area=200, mean_diff=0.5, max_diff=0.9)
    line2 = Region(x=22, y=100, width=37, height=14, area=210, mean_diff=0.5, max_diff=0.9)
    assert stacked(line1, line2)
    merged = merge_nearby([line1, line2], gap=6)
    assert [(r.x, r.y, r.width, r.height) for r in merged] == [(21, 78, 38, 36)]
    # Side by side (no shared columns), or a line and a block further down: kept apart.
    beside = Region(x=80, y=100, width=30, height=14, area=200, mean_diff=0.5, max_diff=0.9)
    below = Region(x=21, y=130, width=33, height=14, area=200, mean_diff=0.5, max_diff=0.9)
    assert not stacked(line1, beside) and not stacked(line1, below)
    assert len(merge_nearby([line1, beside, below], gap=6)) == 3


# Global changes and findings -----------------------------------------------------------------


def test_unrelated_photographs_are_different() -> None:
    a = photo(400, 300, name="astronaut", seed=1)
    b = photo(400, 300, name="coffee", seed=1)
    d = compare(png(a), png(b), NO_PREVIEW).to_dict()
    assert d["verdict"] == "different", d["summary"]
    assert d["content_correlation"] < 0.5


def test_blur_is_described_as_blur_not_brightness() -> None:
    a = photo(400, 300, name="chelsea", seed=2)
    b = cv2.GaussianBlur(a, (0, 0), 1.8)
    d = compare(png(a), png(b), NO_PREVIEW).to_dict()
    assert d["verdict"] == "global_change", d["summary"]
    kinds = {f["kind"] for f in d["findings"]}
    assert "blur" in kinds and "tone" not in kinds
    assert "blurred" in d["summary"] and "brightness" not in d["summary"]


@pytest.mark.parametrize("quality", [40, 75, 92])
def test_jpeg_quality_is_estimated_from_the_quantisation_table(quality: int) -> None:
    a = photo(320, 240, seed=1)
    out = io.BytesIO()
    Image.fromarray(a).save(out, format="JPEG", quality=quality)
    info = jpeg_info(out.getvalue())
    assert info is not None and abs(info[0] - quality) <= 2
    d = compare(png(a), out.getvalue(), NO_PREVIEW).to_dict()
    found = next(f for f in d["findings"] if f["kind"] == "jpeg_reencode")
    assert abs(found["details"]["quality"] - quality) <= 2
    assert jpeg_info(png(a)) is None


def test_chroma_subsampling_change_is_a_finding() -> None:
    a = photo(320, 240, name="coffee", seed=1)

    def encode(sampling: int) -> bytes:
        out = io.BytesIO()
        Image.fromarray(a).save(out, format="JPEG", quality=95, subsampling=sampling)
        return out.getvalue()

    d = compare(encode(0), encode(2), NO_PREVIEW).to_dict()
    found = next(f for f in d["findings"] if f["kind"] == "chroma_subsampling")
    assert found["details"] == {"a": "4:4:4", "b": "4:2:0"}


def test_greyscale_gamma_and_crop_findings() -> None:
    a = photo(400, 300, name="astronaut", seed=7)
    grey = np.repeat(cv2.cvtColor(a, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
    d = compare(png(a), png(grey), NO_PREVIEW).to_dict()
    assert "greyscale" in {f["kind"] for f in d["findings"]}
    assert d["verdict"] == "global_change"
    lut = np.clip(255.0 * (np.arange(256) / 255.0) ** 0.7 + 0.5, 0, 255).astype(np.uint8)
    d = compare(png(a), png(lut[a]), NO_PREVIEW).to_dict()
    tone = next(f for f in d["findings"] if f["kind"] == "tone")
    assert tone["details"]["gamma"] == pytest.approx(0.7, abs=0.1)
    crop = np.ascontiguousarray(a[30:270, 40:360])
    d = compare(png(a), png(crop), NO_PREVIEW).to_dict()
    assert d["verdict"] == "identical", d["summary"]
    assert "crop" in {f["kind"] for f in d["findings"]}


def test_a_weak_tone_fit_on_a_resmoothed_document_does_not_forbid_identical() -> None:
    # Fonts smoothed again make the ink a little bolder: a tone curve fits it weakly. Only a
    # confident filter (verdict.FILTER_MIN_CONFIDENCE) keeps a pair from being identical.
    pairs = [p for p in build_corpus(("doc3",)) if p.category == "antialias"]
    assert pairs
    weak = 0
    for pair in pairs:
        result = compare(pair.a, pair.b, NO_PREVIEW)
        assert result.verdict == "identical", result.summary
        weak += any(
            f.kind == "tone" and f.confidence < FILTER_MIN_CONFIDENCE for f in result.findings
        )
    assert weak  # the finding is still reported, with its confidence
    # A real gamma change on a photograph is confident, and stays a global change.
    a = photo(seed=3)
    b = (255.0 * (a / 255.0) ** 0.7).round().astype(np.uint8)
    real = compare(png(a), png(b), NO_PREVIEW)
    assert real.verdict == "global_change"
    assert any(f.kind == "tone" and f.confidence >= FILTER_MIN_CONFIDENCE for f in real.findings)


def test_an_edit_softened_by_recompression_still_stands_out_by_its_structure() -> None:
    # A pair with a global residual (rest SSIM ~0.98 < 0.99): a region must differ by two
    # tolerances on average, unless its own SSIM lies STRONG_SSIM_DROP below the rest's.
    tolerance, compared = 0.1, 400 * 300
    softened = Region(
        x=256, y=83, width=45, height=33, area=934, mean_diff=0.146, max_diff=0.235, ssim=0.3
    )
    faint = Region(
        x=20, y=20, width=45, height=33, area=900, mean_diff=0.146, max_diff=0.235, ssim=0.7
    )
    kept = stand_out([softened, faint], 0.975, compared, tolerance)
    assert kept == [softened]
    assert softened.ssim is not None and softened.ssim <= 0.975 - STRONG_SSIM_DROP


# Misregistration in pixel mode ----------------------------------------------------------------


@pytest.mark.parametrize("category", ["webp", "blur", "colour"])
def test_pixel_mode_says_misaligned_only_when_the_transform_explains_the_pair(
    category: str,
) -> None:
    """A smooth photograph re-encoded or filtered fits some small transform too (the features
    of a clock face drift); warping by it does not raise SSIM, so it is not misregistration."""
    (pair,) = [p for p in build_corpus(("clock",)) if p.category == category]
    result = compare(pair.a, pair.b, CompareOptions(mode="pixel", preview_max_side=None))
    assert result.verdict == "global_change", result.summary
    assert result.alignment.applied is False
    moved = np.roll(cv2.imdecode(np.frombuffer(pair.a, np.uint8), cv2.IMREAD_COLOR), 3, axis=1)
    shifted = compare(pair.a, png(moved), CompareOptions(mode="pixel", preview_max_side=None))
    assert shifted.verdict == "misaligned", shifted.summary


def test_a_rotated_copy_that_looks_like_broad_local_edits_is_aligned() -> None:
    """Rotated by about 10 degrees, the clock matches near its centre and differs in broad
    areas: a localised edit covering a sixth of the image is checked for misregistration, and
    the alignment (adopted because it raises SSIM) shows the same image, moved."""
    (pair,) = [p for p in build_corpus(("clock",)) if p.category == "rotation"]
    direct = compare(pair.a, pair.b, CompareOptions(mode="pixel", preview_max_side=None))
    assert direct.verdict == "misaligned", direct.summary
    result = compare(pair.a, pair.b, NO_PREVIEW)
    assert result.alignment.applied and abs(result.alignment.rotation_deg or 0.0) > 5
    assert result.verdict == "identical", result.summary


def test_a_big_pasted_patch_stays_a_localised_edit() -> None:
    """A patch over 15 % of a photograph makes it a suspect too; no transform improves it, so
    it stays the localised edit it is."""
    a = photo(480, 360)
    b = paste_patch(a, (60, 50, 200, 130))  # 26,000 of 172,800 px
    result = compare(png(a), png(b), NO_PREVIEW)
    assert result.verdict == "localized_edit", result.summary
    assert result.alignment.applied is False
    (region,) = result.regions
    assert (region.x, region.y) == (60, 50)


def test_a_text_page_edited_then_rotated_is_aligned_despite_its_thin_strokes() -> None:
    """Rotated by about 2 degrees after an edit: the coarse fit is a few pixels off on strokes
    a pixel or two wide, so the tone curve fitted for the tracking maps B's ink onto A's paper
    and washes it out; the tracks are then taken on the levels as they are."""
    (pair,) = [p for p in build_corpus(("page",)) if p.category == "edit_moved"]
    result = compare(pair.a, pair.b, NO_PREVIEW)
    assert result.alignment.applied, result.alignment.reason
    assert result.verdict == "localized_edit", result.summary
    (box,) = pair.boxes
    assert max(_iou(r.to_dict(), box) for r in result.regions) >= 0.5
