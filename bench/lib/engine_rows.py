"""What the engine benchmark times: the decode floor, our engine (bytes in, result and heatmap
PNG out) and a plain reference pipeline with PIL and scikit-image doing the same work."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

__all__ = [
    "EngineOutput",
    "ReferenceOutput",
    "decode_floor",
    "ours",
    "reference",
    "reference_colour_lut",
]

#: The reference heatmap's colour scale: difference level -> RGB, linear between breakpoints.
REFERENCE_SCALE_LEVELS = (0.0, 1.0, 32.0, 255.0)
REFERENCE_SCALE_COLOURS = ((0, 0, 255), (0, 64, 255), (0, 255, 0), (255, 0, 0))


def decode_floor(png_a: bytes, png_b: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Row (a): decode two PNG files with OpenCV, unchanged (the floor of any comparison).

    Parameters
    ----------
    png_a, png_b : bytes
        Encoded PNG files.

    Returns
    -------
    tuple of numpy.ndarray
        The decoded arrays (BGR order, as OpenCV decodes).
    """
    a = cv2.imdecode(np.frombuffer(png_a, np.uint8), cv2.IMREAD_UNCHANGED)
    b = cv2.imdecode(np.frombuffer(png_b, np.uint8), cv2.IMREAD_UNCHANGED)
    if a is None or b is None:
        raise ValueError("OpenCV could not decode the pair")
    return np.asarray(a), np.asarray(b)


@dataclass
class EngineOutput:
    """What one engine comparison produced: the result contract and the heatmap PNG."""

    result: dict[str, Any]
    heatmap_png: bytes


def ours(png_a: bytes, png_b: bytes, *, mode: str) -> EngineOutput:
    """Rows (b) and (d): our ``compare``, bytes in, result dict and heatmap PNG out.

    Parameters
    ----------
    png_a, png_b : bytes
        Encoded images.
    mode : str
        ``"pixel"``, ``"auto"`` or ``"align"``; every other option is the default.

    Returns
    -------
    EngineOutput
        ``result.to_dict()`` and ``result.heatmap_png``.
    """
    from core.imaging import CompareOptions, compare

    result = compare(png_a, png_b, CompareOptions(mode=mode))  # type: ignore[arg-type]
    return EngineOutput(result=result.to_dict(), heatmap_png=result.heatmap_png)


def reference_colour_lut() -> np.ndarray:
    """The reference heatmap's colour scale as a lookup table.

    Returns
    -------
    numpy.ndarray
        ``256x3`` ``uint8``: row ``d`` is the RGB colour of difference level ``d`` (0..255),
        blue at 0, green at 32, red at 255, linear in between (see ``REFERENCE_SCALE_*``).
    """
    levels = np.arange(256, dtype=np.float64)
    colours = np.asarray(REFERENCE_SCALE_COLOURS, dtype=np.float64)
    lut = np.stack(
        [np.interp(levels, REFERENCE_SCALE_LEVELS, colours[:, c]) for c in range(3)], axis=1
    )
    return np.rint(lut).astype(np.uint8)


@dataclass
class ReferenceOutput:
    """What the plain reference produced."""

    ssim: float
    psnr: float
    heatmap_png: bytes


def _pil_decode(data: bytes) -> np.ndarray:
    img: Image.Image = Image.open(io.BytesIO(data))
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img)


def reference(png_a: bytes, png_b: bytes) -> ReferenceOutput:
    """Row (c): the same work written plainly with PIL, scikit-image and numpy.

    PIL decodes both files; SSIM is ``skimage.metrics.structural_similarity`` with Wang et al.'s
    settings (Gaussian sigma 1.5, population covariance, data range 255, per channel); PSNR is
    ``skimage.metrics.peak_signal_noise_ratio``; the heatmap is the per-pixel largest channel
    difference mapped through :func:`reference_colour_lut` and encoded by PIL with its defaults.

    Parameters
    ----------
    png_a, png_b : bytes
        Encoded 8-bit RGB images of equal size.

    Returns
    -------
    ReferenceOutput
        SSIM in [-1, 1], PSNR in dB (``inf`` for identical images) and the heatmap PNG.
    """
    a = _pil_decode(png_a)
    b = _pil_decode(png_b)
    ssim = structural_similarity(
        a,
        b,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=255,
        channel_axis=-1,
    )
    with np.errstate(divide="ignore"):
        psnr = peak_signal_noise_ratio(a, b, data_range=255)
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=2).astype(np.uint8)
    rgb = reference_colour_lut()[diff]
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return ReferenceOutput(ssim=float(ssim), psnr=float(psnr), heatmap_png=buf.getvalue())
