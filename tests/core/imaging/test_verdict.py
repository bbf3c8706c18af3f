"""Verdicts on generated cases: each row is a kind of change a person would name.

The thresholds in core/imaging/verdict.py were tuned on these cases (and the spread of their
scores is printed by ``python -m tests.core.imaging.test_verdict``).
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import pytest

from core.imaging import CompareOptions, compare
from core.imaging.align.result import failed_alignment
from core.imaging.regions import Region
from core.imaging.verdict import DIFFERENT_MIN_REGIONS, VerdictInputs, classify
from tests.support.images import decode_rgb, jpeg, paste_patch, photo, png, similarity, warp

Case = Callable[[np.ndarray], tuple[bytes, bytes, CompareOptions | None]]


def _same(a: np.ndarray) -> tuple[bytes, bytes, CompareOptions | None]:
    return png(a), png(a), None


def _resaved_lossless(a: np.ndarray) -> tuple[bytes, bytes, CompareOptions | None]:
    ok, webp = cv2.imencode(
        ".webp", cv2.cvtColor(a, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_WEBP_QUALITY, 101]
    )
    assert ok
    return png(a), webp.tobytes(), None


def _jpeg(q: int) -> Case:
    return lambda a: (png(a), jpeg(a, q), None)


def _brightness(delta: int) -> Case:
    return lambda a: (
        png(a),
        png(np.clip(a.astype(np.int16) + delta, 0, 255).astype(np.uint8)),
        None,
    )


def _blur(sigma: float) -> Case:
    return lambda a: (png(a), png(cv2.GaussianBlur(a, (0, 0), sigma)), None)


def _saturation(factor: float) -> Case:
    def make(a: np.ndarray) -> tuple[bytes, bytes, CompareOptions | None]:
        hsv = cv2.cvtColor(a, cv2.COLOR_RGB2HSV).astype(np.float32)
        hsv[..., 1] = np.clip(hsv[..., 1] * factor, 0, 255)
        return png(a), png(cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)), None

    return make


def _patch(rect: tuple[int, int, int, int], quality: int | None = None) -> Case:
    def make(a: np.ndarray) -> tuple[bytes, bytes, CompareOptions | None]:
        b = paste_patch(a, rect)
        return png(a), (png(b) if quality is None else jpeg(b, quality)), None

    return make


def _removed_object(a: np.ndarray) -> tuple[bytes, bytes, CompareOptions | None]:
    b = a.copy()
    b[200:260, 380:470] = cv2.blur(a[140:200, 380:470], (9, 9))  # cloned from above, smoothed
    return png(a), png(b), None


def _shift(dx: float, dy: float, mode: str) -> Case:
    def make(a: np.ndarray) -> tuple[bytes, bytes, CompareOptions | None]:
        h, w = a.shape[:2]
        b = warp(a, similarity(0.0, 1.0, (0, 0), shift=(dx, dy)), (w, h))
        return png(a), png(b), CompareOptions(mode=mode)  # type: ignore[arg-type]

    return make


def _rotate_pixel(a: np.ndarray) -> tuple[bytes, bytes, CompareOptions | None]:
    h, w = a.shape[:2]
    return (
        png(a),
        png(warp(a, similarity(4.0, 1.0, (w / 2, h / 2)), (w, h))),
        CompareOptions(mode="pixel"),
    )


def _other(name: str) -> Case:
    return lambda a: (png(a), png(photo(a.shape[1], a.shape[0], name=name, seed=4)), None)


CASES: list[tuple[str, Case, set[str]]] = [
    ("same bytes", _same, {"identical"}),
    ("lossless webp re-save", _resaved_lossless, {"identical"}),
    ("jpeg q95", _jpeg(95), {"identical", "global_change"}),
    ("jpeg q60", _jpeg(60), {"global_change"}),
    ("jpeg q30", _jpeg(30), {"global_change"}),
    ("brightness +25", _brightness(25), {"global_change"}),
    ("brightness -15", _brightness(-15), {"global_change"}),
    ("blur sigma 1.5", _blur(1.5), {"global_change"}),
    ("saturation x1.4", _saturation(1.4), {"global_change"}),
    ("pasted patch", _patch((300, 180, 90, 70)), {"localized_edit"}),
    ("small pasted patch", _patch((60, 300, 30, 24)), {"localized_edit"}),
    ("pasted patch, jpeg q90", _patch((300, 180, 90, 70), 90), {"localized_edit"}),
    ("object removed", _removed_object, {"localized_edit"}),
    ("shift 5 px, pixel mode", _shift(5, 3, "pixel"), {"misaligned"}),
    ("rotation 4 deg, pixel mode", _rotate_pixel, {"misaligned"}),
    ("shift 5 px, auto mode", _shift(5, 3, "auto"), {"identical", "global_change"}),
    ("another photo (coffee)", _other("coffee"), {"different"}),
    ("another photo (chelsea)", _other("chelsea"), {"different"}),
]


@pytest.fixture(scope="module")
def base() -> np.ndarray:
    return photo(640, 480, name="astronaut", seed=11)


@pytest.mark.parametrize(("name", "case", "expected"), CASES, ids=[c[0] for c in CASES])
def test_verdict(base: np.ndarray, name: str, case: Case, expected: set[str]) -> None:
    a, b, options = case(base)
    d = compare(a, b, options).to_dict()
    assert d["verdict"] in expected, f"{name}: {d['verdict']} ({d['summary']})"
    assert d["summary"].endswith("."), d["summary"]


def test_auto_mode_shift_reports_the_shift(base: np.ndarray) -> None:
    a, b, _ = _shift(5, 3, "auto")(base)
    d = compare(a, b).to_dict()
    assert d["alignment"]["applied"]
    assert d["alignment"]["translation"] == pytest.approx([-5, -3], abs=0.3)
    assert "shift" in d["summary"]


if __name__ == "__main__":  # a table of the features behind each verdict, for tuning
    img = photo(640, 480, name="astronaut", seed=11)
    for name, case, expected in CASES:
        a, b, options = case(img)
        r = compare(a, b, options)
        d = r.to_dict()
        top = d["regions"][0] if d["regions"] else None
        print(
            f"{name:28s} {d['verdict']:15s} ssim={d['ssim']:.4f} "
            f"l={d['ssim_components']['luminance']:.4f} c={d['ssim_components']['contrast']:.4f} "
            f"s={d['ssim_components']['structure']:.4f} changed={d['changed_ratio']:.4f} "
            f"regions={len(d['regions'])} top={top and (top['area'], round(top['max_diff'], 2))} "
            f"align={d['alignment']['applied']} expect={sorted(expected)}"
        )
    _ = decode_rgb


def _inputs(regions: list[Region], **overrides: object) -> VerdictInputs:
    fields: dict[str, object] = {
        "identical_pixels": False,
        "ssim": 0.66,
        "changed_ratio": 0.09,
        "antialiased_ratio": 0.0,
        "changed_pixels": 9_000,
        "compared_pixels": 100_000,
        "regions": regions,
        "alignment": failed_alignment("not needed"),
        "content_correlation": 0.95,
    }
    fields.update(overrides)
    return VerdictInputs(**fields)  # type: ignore[arg-type]


def _spread(count: int) -> list[Region]:
    """``count`` separate 250x12 px regions down a 100,000 px page (extent beyond a local edit)."""
    return [
        Region(x=10, y=15 * i, width=250, height=12, area=1_500, mean_diff=0.4, max_diff=0.9)
        for i in range(count)
    ]


def test_many_separate_differences_on_one_layout_are_a_different_image() -> None:
    verdict, summary = classify(_inputs(_spread(DIFFERENT_MIN_REGIONS)))
    assert verdict == "different"
    assert f"{DIFFERENT_MIN_REGIONS} separate areas" in summary
    # a couple of regions left by a global filter (strong edges of a blurred photo) are not
    verdict, _ = classify(_inputs(_spread(2), ssim=0.75, changed_ratio=0.05))
    assert verdict == "global_change"
