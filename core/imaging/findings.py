"""Structured findings: what happened to the file, each ``{kind, confidence, details}``.

Every finding is read off the pair itself (the encoded B, the alignment, the compared pixels):

=====================  ===========================================================================
kind                   when, and its ``details``
=====================  ===========================================================================
``jpeg_reencode``      B is a JPEG: ``quality`` estimated from its luminance quantisation table
                       (libjpeg's scaling of the standard table), ``subsampling`` (4:4:4 ...)
``chroma_subsampling`` A and B are JPEGs with different chroma subsampling: ``a``, ``b``
``resampled``          B was scaled onto A (alignment ``scale`` != 1 or a resize): ``scale``
``crop``               the aligned B covers only part of A (``overlap_ratio`` < 0.98) at scale 1
``rotation``           the alignment turns B by ``rotation_deg`` (>= 0.5 degree) or warps it in
                       perspective (``perspective: true``)
``shift``              the alignment only moves B by ``dx``, ``dy`` px
``flip``               B is A mirrored: ``axis`` ``horizontal``, ``vertical`` or ``both``
``greyscale``          B has no colour while A has
``blur`` / ``sharpen`` the gradient energy of B is below 0.7 (above 1.3) times A's: ``ratio``
``tone``               brightness / contrast / gamma: the least-squares line ``gain``, ``offset``
                       (8-bit levels) of B's luminance against A's, and ``gamma`` fitted on the
                       log of the normalised luminance
``colour``             a colour cast or a saturation change: per-channel mean shifts and the
                       ``saturation_ratio`` of B to A
``antialiasing``       changed pixels explained as anti-aliasing / resampling (``ratio``)
``edit``               the significant regions: ``count`` and each region's box and ``kind``
=====================  ===========================================================================

Confidence is 0..1: how far the measured effect stands above its threshold (1 for facts read
from the files, such as a JPEG's quantisation table).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from PIL import Image

from core.imaging.align.result import Alignment
from core.imaging.regions import Region

#: The standard luminance quantisation table (ITU T.81 Annex K, libjpeg's quality 50), in
#: natural (row-major) order, as Pillow returns a file's tables.
_STD_LUMA = np.array(
    [
        *(16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55),
        *(14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62),
        *(18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92),
        *(49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99),
    ],
    dtype=np.float64,
)


def _libjpeg_tables() -> np.ndarray:
    """Luminance tables libjpeg writes for quality 1..100, shape (100, 64)."""
    q = np.arange(1, 101, dtype=np.float64)[:, None]
    scale = np.where(q < 50, 5000.0 / q, 200.0 - 2.0 * q)
    return np.clip(np.floor((_STD_LUMA[None, :] * scale + 50.0) / 100.0), 1, 255)


_LIBJPEG_TABLES = _libjpeg_tables()
_SUBSAMPLING = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}
#: Thresholds of the pixel findings.
BLUR_RATIO = 0.7
SHARPEN_RATIO = 1.3
TONE_MIN_SHIFT = 3.0  # levels of mean luminance
TONE_MIN_GAIN = 0.06  # |gain - 1|
GAMMA_MIN = 0.08  # |gamma - 1|
COLOUR_MIN_CAST = 4.0  # levels between channel mean shifts
SATURATION_MIN = 0.12  # |ratio - 1|
GREY_MAX_CHROMA = 1.0  # mean |channel - mean of channels|, levels
#: Pixel statistics are taken on copies whose longer side is at most this.
STATS_MAX_SIDE = 512
#: Tone curves are fitted on thumbnails of this longer side.
TONE_THUMB_SIDE = 32
#: A tone curve (gain, gamma) is fitted only when A's thumbnail tones spread this much (levels).
TONE_MIN_SPREAD = 12.0


@dataclass(frozen=True)
class Finding:
    """One thing that happened to the file: ``kind``, ``confidence`` 0..1, ``details``."""

    kind: str
    confidence: float
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: floats rounded to 4 decimals, NumPy scalars made plain."""
        return {
            "kind": self.kind,
            "confidence": round(float(self.confidence), 3),
            "details": _plain(self.details),
        }


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return round(float(value), 4)
    return value


def jpeg_info(data: bytes) -> tuple[int, str] | None:
    """``(estimated quality 1..100, subsampling)`` of a JPEG file, or None for other files.

    The quality is the one whose libjpeg luminance table (the standard table scaled by
    ``5000 / q`` below 50, ``200 - 2 q`` from 50) is nearest to the file's (least absolute
    difference): exact for files written by libjpeg and its descendants, the nearest
    equivalent for other encoders.
    """
    if not data.startswith(b"\xff\xd8"):
        return None
    try:
        with Image.open(io.BytesIO(data)) as im:
            tables = getattr(im, "quantization", None)
            layers = getattr(im, "layers", 0)
            sampling = -1
            if layers == 3:
                from PIL import JpegImagePlugin

                sampling = JpegImagePlugin.get_sampling(im)
    except Exception:
        return None
    if not tables or 0 not in tables:
        return None
    luma = np.asarray(tables[0], dtype=np.float64)[:64]
    if luma.size != 64:
        return None
    quality = int(np.argmin(np.abs(_LIBJPEG_TABLES - luma[None, :]).sum(axis=1))) + 1
    return quality, _SUBSAMPLING.get(sampling, "grey")


def _small(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    k = max(1, math.ceil(max(h, w) / STATS_MAX_SIDE))
    if k == 1:
        return img
    return cv2.resize(img, (w // k, h // k), interpolation=cv2.INTER_AREA)


def _as_float(img: np.ndarray) -> np.ndarray:
    scale = 255.0 / 65535.0 if img.dtype == np.uint16 else 1.0
    return img[..., :3].astype(np.float32) * scale


def file_findings(
    *,
    a_bytes: bytes,
    b_bytes: bytes,
    a_size: tuple[int, int],
    b_size: tuple[int, int],
    alignment: Alignment,
) -> list[Finding]:
    """Findings about the files and the geometry (no pixels needed beyond the alignment)."""
    out: list[Finding] = []
    info_b = jpeg_info(b_bytes)
    info_a = jpeg_info(a_bytes)
    if info_b is not None:
        quality, sampling = info_b
        same = info_a is not None and info_a == info_b
        if not same:
            out.append(Finding("jpeg_reencode", 1.0, {"quality": quality, "subsampling": sampling}))
    if info_a is not None and info_b is not None and info_a[1] != info_b[1]:
        out.append(Finding("chroma_subsampling", 1.0, {"a": info_a[1], "b": info_b[1]}))
    method = alignment.method or ""
    if alignment.applied and method.startswith("flip"):
        out.append(Finding("flip", 1.0, {"axis": method.removeprefix("flip-")}))
        return out
    scale = alignment.scale if alignment.applied else None
    if scale is None and a_size != b_size:
        scale = math.sqrt((a_size[0] * a_size[1]) / max(b_size[0] * b_size[1], 1))
    if scale is not None and abs(scale - 1.0) >= 0.02:
        out.append(Finding("resampled", min(1.0, abs(scale - 1.0) / 0.1), {"scale": scale}))
    if not alignment.applied or alignment.homography is None:
        return out
    h = alignment.homography
    rotation = alignment.rotation_deg or 0.0
    perspective = bool(abs(h[2, 0]) > 1e-5 or abs(h[2, 1]) > 1e-5)
    if abs(rotation) >= 0.5 or perspective:
        out.append(
            Finding(
                "rotation",
                min(1.0, max(abs(rotation) / 2.0, 0.8 if perspective else 0.0)),
                {"rotation_deg": rotation, "perspective": perspective},
            )
        )
    overlap = alignment.overlap_ratio or 1.0
    if overlap < 0.98 and abs((scale or 1.0) - 1.0) < 0.02 and abs(rotation) < 0.5:
        kind = "crop" if b_size[0] * b_size[1] < a_size[0] * a_size[1] else "shift"
        out.append(Finding(kind, min(1.0, (1.0 - overlap) / 0.05), {"overlap_ratio": overlap}))
    elif alignment.translation is not None and abs(rotation) < 0.5 and not perspective:
        dx, dy = alignment.translation
        if abs((scale or 1.0) - 1.0) < 0.02 and math.hypot(dx, dy) >= 0.5:
            out.append(Finding("shift", 1.0, {"dx": dx, "dy": dy}))
    return out


def pixel_findings(
    pa: np.ndarray, pb: np.ndarray, valid: np.ndarray | None, *, skip_tone: bool = False
) -> list[Finding]:
    """Findings read off the compared pixels: greyscale, blur/sharpen, tone, colour."""
    a = _as_float(_small(pa))
    b = _as_float(_small(pb))
    mask = None
    if valid is not None:
        mask = _small(valid.astype(np.uint8) * 255) == 255
        if not mask.any():
            return []
    sel_a = a[mask] if mask is not None else a.reshape(-1, 3)
    sel_b = b[mask] if mask is not None else b.reshape(-1, 3)
    out: list[Finding] = []
    chroma_a = float(np.abs(sel_a - sel_a.mean(axis=1, keepdims=True)).mean())
    chroma_b = float(np.abs(sel_b - sel_b.mean(axis=1, keepdims=True)).mean())
    grey = chroma_b <= GREY_MAX_CHROMA and chroma_a > 4 * GREY_MAX_CHROMA
    if grey:
        out.append(Finding("greyscale", 1.0, {"chroma_a": chroma_a, "chroma_b": chroma_b}))
    energy_a = _gradient_energy(a, mask)
    energy_b = _gradient_energy(b, mask)
    if energy_a > 1e-6:
        ratio = energy_b / energy_a
        if ratio < BLUR_RATIO:
            out.append(Finding("blur", min(1.0, (BLUR_RATIO - ratio) / 0.2), {"ratio": ratio}))
        elif ratio > SHARPEN_RATIO:
            conf = min(1.0, (ratio - SHARPEN_RATIO) / 0.3)
            out.append(Finding("sharpen", conf, {"ratio": ratio}))
    if skip_tone:
        return out
    # Tone is fitted on thumbnails: blur, noise or compression do not move their pixels, so
    # they do not dilute the fitted curve as they would per pixel.
    ya, yb = _thumb_luma(a, mask), _thumb_luma(b, mask)
    shift = float(yb.mean() - ya.mean())
    if ya.size >= 2 and float(ya.std()) >= TONE_MIN_SPREAD:
        gain, offset = (float(v) for v in np.polyfit(ya, yb, 1))
        gamma = _gamma(ya, yb)
    else:  # too little spread of tones (a text page's thumbnail) to fit a curve: the mean only
        gain, offset, gamma = 1.0, shift, 1.0
    strength = max(
        abs(shift) / TONE_MIN_SHIFT,
        abs(float(gain) - 1.0) / TONE_MIN_GAIN,
        abs(gamma - 1.0) / GAMMA_MIN,
    )
    if strength >= 1.0 and not grey:
        out.append(
            Finding(
                "tone",
                min(1.0, strength - 0.5),
                {"gain": float(gain), "offset": float(offset), "mean_shift": shift, "gamma": gamma},
            )
        )
    if not grey and chroma_a > GREY_MAX_CHROMA:
        shifts = (sel_b - sel_a).mean(axis=0)
        cast = float(shifts.max() - shifts.min())
        sat = chroma_b / chroma_a if chroma_a > 1e-6 else 1.0
        colour_strength = max(cast / COLOUR_MIN_CAST, abs(sat - 1.0) / SATURATION_MIN)
        if colour_strength >= 1.0:
            out.append(
                Finding(
                    "colour",
                    min(1.0, colour_strength - 0.5),
                    {"channel_shift": [float(v) for v in shifts], "saturation_ratio": sat},
                )
            )
    return out


def _thumb_luma(img: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Mean of the channels on a thumbnail of longer side ``TONE_THUMB_SIDE`` px (area
    averaging), only thumbnail pixels wholly inside ``mask``."""
    h, w = img.shape[:2]
    k = TONE_THUMB_SIDE / max(h, w)
    size = (max(1, round(w * k)), max(1, round(h * k)))
    luma = cv2.resize(img.mean(axis=2), size, interpolation=cv2.INTER_AREA)
    if mask is None:
        return np.asarray(luma.ravel())
    keep = cv2.resize(mask.astype(np.float32), size, interpolation=cv2.INTER_AREA) >= 0.999
    return np.asarray(luma[keep])


def _grey(img: np.ndarray) -> np.ndarray:
    """``_as_float(img).mean(axis=2)`` (the same operations in the same order, so the same
    bits) holding one ``float32`` plane at a time instead of a copy of every channel."""
    scale = np.float32(255.0 / 65535.0 if img.dtype == np.uint16 else 1.0)
    channels = min(img.shape[2], 3)
    grey = img[..., 0].astype(np.float32) * scale
    for c in range(1, channels):
        grey += img[..., c].astype(np.float32) * scale
    grey /= np.float32(channels)
    return grey


def _gradient_energy(img: np.ndarray, mask: np.ndarray | None) -> float:
    """Mean squared Sobel gradient of a float ``HxWx3`` image's channel mean (or of an
    ``HxW`` grey plane), over ``mask`` eroded by one pixel (or the inner pixels)."""
    grey = img.mean(axis=2) if img.ndim == 3 else img
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
    energy = gx * gx + gy * gy
    if mask is not None:
        inner = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        return float(energy[inner].mean()) if inner.any() else 0.0
    return float(energy[1:-1, 1:-1].mean())


def _gamma(ya: np.ndarray, yb: np.ndarray) -> float:
    """Exponent ``g`` of ``yb/255 = (ya/255) ** g``, least squares on the logs of mid-tones."""
    keep = (ya > 12) & (ya < 243) & (yb > 2)
    if np.count_nonzero(keep) < 20:
        return 1.0
    la = np.log(ya[keep] / 255.0)
    lb = np.log(yb[keep] / 255.0)
    denominator = float(la @ la)
    return float(la @ lb / denominator) if denominator > 0 else 1.0


def classify_region(pa: np.ndarray, pb: np.ndarray, region: Region) -> tuple[str, float | None]:
    """``(kind, local SSIM)`` of one region: ``added``/``removed``/``recoloured``/``changed``.

    The local SSIM is measured over the box grown to at least ``REGION_SSIM_MIN_SIDE`` px a side.

    Over the region's box: when the grey patterns of A and B correlate (>= 0.8) the shapes
    stayed and the colours moved (``recoloured``). Otherwise the image in which the box's
    colours stand out from its own surroundings holds the object: B (``added``: a sticker,
    a pasted object) or A (``removed``: painted out, so B's box looks like its surroundings),
    when one stands out at least ``FOREIGN_RATIO`` times more than the other. Failing that,
    the side with at least 1.5 times the other's gradient energy gained (``added``) or lost
    (``removed``) the detail, else ``changed``.
    """
    from core.imaging.metrics import ssim

    y0, y1 = region.y, region.y + region.height
    x0, x1 = region.x, region.x + region.width
    ca, cb = pa[y0:y1, x0:x1], pb[y0:y1, x0:x1]
    data_range = 65535 if pa.dtype == np.uint16 else 255
    # SSIM over the box grown to at least the SSIM window's support on each side, so a speck
    # of a few pixels is judged with its surroundings, as SSIM judges every pixel.
    sy0, sy1 = _grow(y0, y1, pa.shape[0])
    sx0, sx1 = _grow(x0, x1, pa.shape[1])
    local = ssim(pa[sy0:sy1, sx0:sx1], pb[sy0:sy1, sx0:sx1], data_range=data_range).score
    ga, gb = _grey(ca), _grey(cb)
    if ga.std() > 2 and gb.std() > 2:
        corr = float(np.corrcoef(ga.ravel(), gb.ravel())[0, 1])
        if corr >= 0.8:
            return "recoloured", local
    foreign_a = _foreignness(pa, region)
    foreign_b = _foreignness(pb, region)
    if foreign_b > FOREIGN_RATIO * foreign_a + FOREIGN_MIN:
        return "added", local
    if foreign_a > FOREIGN_RATIO * foreign_b + FOREIGN_MIN:
        return "removed", local
    ea = _gradient_energy(ga, None) if min(ca.shape[:2]) >= 3 else 0.0
    eb = _gradient_energy(gb, None) if min(cb.shape[:2]) >= 3 else 0.0
    if eb > 1.5 * ea + 1.0:
        return "added", local
    if ea > 1.5 * eb + 1.0:
        return "removed", local
    return "changed", local


#: One image's box must stand out from its surroundings this many times more than the other's
#: (plus :data:`FOREIGN_MIN`) for the region to be called added or removed by its colours.
FOREIGN_RATIO = 1.5
#: Below this distance (0..1) of colour distributions, a box does not stand out at all.
FOREIGN_MIN = 0.05


def _foreignness(img: np.ndarray, region: Region) -> float:
    """How far the colours of ``region``'s box are from those of a ring around it in ``img``:
    1 - the Bhattacharyya coefficient of their 64-bin colour histograms (0 = alike, 1 = none
    in common). The ring is as wide as half the box's shorter side (at least 4 px), clipped to
    the image; 0 when there is no ring."""
    h, w = img.shape[:2]
    margin = max(4, min(region.width, region.height) // 2)
    y0, y1 = max(region.y - margin, 0), min(region.y + region.height + margin, h)
    x0, x1 = max(region.x - margin, 0), min(region.x + region.width + margin, w)
    shift = 14 if img.dtype == np.uint16 else 6
    levels = (img[y0:y1, x0:x1, :3] >> shift).astype(np.uint8)  # 0..3 per channel
    codes = levels[..., 0] * np.uint8(16)  # 0..63 fits a byte: no 4-byte copies of the box
    codes += levels[..., 1] * np.uint8(4)
    codes += levels[..., 2]
    inside = np.zeros(codes.shape, bool)
    inside[
        region.y - y0 : region.y - y0 + region.height, region.x - x0 : region.x - x0 + region.width
    ] = True
    box, ring = codes[inside], codes[~inside]
    if box.size == 0 or ring.size == 0:
        return 0.0
    p = np.bincount(box, minlength=64) / box.size
    q = np.bincount(ring, minlength=64) / ring.size
    return float(1.0 - np.sqrt(p * q).sum())


#: Smallest side, in px, of the box a region's SSIM is measured on (the SSIM window's support).
REGION_SSIM_MIN_SIDE = 11


def _grow(start: int, stop: int, limit: int) -> tuple[int, int]:
    """``[start, stop)`` widened symmetrically to at least ``REGION_SSIM_MIN_SIDE``, clipped."""
    missing = REGION_SSIM_MIN_SIDE - (stop - start)
    if missing <= 0:
        return start, stop
    start = max(start - (missing + 1) // 2, 0)
    stop = min(start + REGION_SSIM_MIN_SIDE, limit)
    return max(min(start, stop - REGION_SSIM_MIN_SIDE), 0), stop


def edit_finding(regions: Sequence[Region]) -> Finding | None:
    """One ``edit`` finding listing the significant regions, or None without any."""
    if not regions:
        return None
    return Finding(
        "edit",
        1.0,
        {
            "count": len(regions),
            "regions": [
                {"x": r.x, "y": r.y, "width": r.width, "height": r.height, "kind": r.kind}
                for r in regions
            ],
        },
    )
