"""Photographic test pairs for benchmarks, generated offline from scikit-image's bundled samples.

A benchmark on flat synthetic images flatters every PNG codec and every filter, so the images here
look like photographs: a 2x2 mosaic of scikit-image samples (retina, astronaut, coffee, Hubble deep
field, Chelsea, rocket) resized to the cell size with ``cv2.resize(..., INTER_CUBIC)``, plus seeded
fine grain, slightly softened like a camera's noise, so that PNG compresses them about as badly as
a real photo (a 1920x1080 PNG of about 3.5 MB) and JPEG at quality 90 keeps them about as well
(SSIM about 0.97, PSNR about 40 dB, before the pasted patch). Image B of a pair is what a real
revision looks like: A with a small pasted patch (a local edit), then re-compressed as JPEG at
quality 90 (a global, thin difference).

Arrays follow the project convention: ``HxWx3`` RGB ``uint8`` (channel order RGB, not OpenCV's BGR);
:func:`write_png` and :func:`png_bytes` do the conversion for OpenCV's encoder.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from skimage import data as skdata

#: JPEG quality used to re-compress image B of a pair (OpenCV scale 0..100).
JPEG_QUALITY = 90
#: Standard deviation of the luminance grain added to A, in 8-bit levels, before softening.
GRAIN_LUMA_SIGMA = 3.0
#: Standard deviation of the per-channel (chroma) grain, in 8-bit levels, before softening.
GRAIN_CHROMA_SIGMA = 1.0
#: Sigma in pixels of the Gaussian that softens the grain (spatially correlated, like a camera's).
GRAIN_BLUR_SIGMA = 0.8
#: The pasted patch is this fraction of the image's width and height.
PATCH_FRACTION = 0.125

_SAMPLES: tuple[Callable[[], np.ndarray], ...] = (
    skdata.retina,
    skdata.astronaut,
    skdata.coffee,
    skdata.hubble_deep_field,
    skdata.chelsea,
    skdata.rocket,
)


def _crop_to_aspect(
    img: np.ndarray, width: int, height: int, rng: np.random.Generator
) -> np.ndarray:
    """Crop ``img`` to the aspect ratio ``width/height`` at a seeded offset."""
    h, w = img.shape[:2]
    target = width / height
    if w / h > target:
        cw = max(1, round(h * target))
        x0 = int(rng.integers(0, w - cw + 1))
        return img[:, x0 : x0 + cw]
    ch = max(1, round(w / target))
    y0 = int(rng.integers(0, h - ch + 1))
    return img[y0 : y0 + ch, :]


def _fit(img: np.ndarray, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """Crop ``img`` to the cell's aspect ratio, then resize it to ``width x height`` (bicubic)."""
    cropped = _crop_to_aspect(img, width, height, rng)
    out = cv2.resize(cropped, (width, height), interpolation=cv2.INTER_CUBIC)
    return np.ascontiguousarray(out[..., :3])


def _check_size(width: int, height: int) -> None:
    if width < 16 or height < 16:
        raise ValueError(f"image size must be at least 16x16, got {width}x{height}")


def photographic(width: int, height: int, *, seed: int) -> np.ndarray:
    """Generate a photographic-looking RGB image.

    Parameters
    ----------
    width, height : int
        Size in pixels, each at least 16.
    seed : int
        Seed of every random choice (which samples, crops, grain); same seed, same image.

    Returns
    -------
    numpy.ndarray
        ``height x width x 3`` RGB ``uint8``.
    """
    _check_size(width, height)
    rng = np.random.default_rng([seed, 0])
    order = rng.permutation(len(_SAMPLES))[:4]
    w0, h0 = width // 2, height // 2
    cells = [(0, 0, w0, h0), (w0, 0, width - w0, h0), (0, h0, w0, height - h0)]
    cells.append((w0, h0, width - w0, height - h0))
    canvas = np.empty((height, width, 3), np.uint8)
    for (x, y, cw, ch), index in zip(cells, order, strict=True):
        canvas[y : y + ch, x : x + cw] = _fit(_SAMPLES[index](), cw, ch, rng)
    noise_rng = np.random.default_rng([seed, 2])
    grain = noise_rng.standard_normal((height, width, 1), dtype=np.float32) * GRAIN_LUMA_SIGMA
    grain = grain + noise_rng.standard_normal((height, width, 3), dtype=np.float32) * (
        GRAIN_CHROMA_SIGMA
    )
    # A camera's noise is not independent per pixel (demosaicing spreads it): soften it slightly.
    soft = cv2.GaussianBlur(grain, (0, 0), GRAIN_BLUR_SIGMA).reshape(height, width, 3)
    out = canvas.astype(np.float32) + soft
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def pasted_patch_box(width: int, height: int, *, seed: int) -> tuple[int, int, int, int]:
    """Where :func:`photographic_pair` pastes its patch into image B.

    Parameters
    ----------
    width, height : int
        Size of the pair in pixels, each at least 16.
    seed : int
        The pair's seed.

    Returns
    -------
    tuple of int
        ``(x, y, w, h)`` in pixels, in A's (and B's) coordinates, inside the image.
    """
    _check_size(width, height)
    rng = np.random.default_rng([seed, 1])
    pw = max(8, round(width * PATCH_FRACTION))
    ph = max(8, round(height * PATCH_FRACTION))
    x = int(rng.integers(width // 10, width - pw - width // 10 + 1))
    y = int(rng.integers(height // 10, height - ph - height // 10 + 1))
    return x, y, pw, ph


def jpeg_roundtrip(img: np.ndarray, *, quality: int = JPEG_QUALITY) -> np.ndarray:
    """Re-compress an RGB ``uint8`` image as JPEG and decode it again.

    Parameters
    ----------
    img : numpy.ndarray
        ``HxWx3`` RGB ``uint8``.
    quality : int, optional
        JPEG quality 0..100 (OpenCV's scale, default 4:2:0 chroma subsampling).

    Returns
    -------
    numpy.ndarray
        The decoded ``HxWx3`` RGB ``uint8`` image.
    """
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if decoded is None:
        raise RuntimeError("JPEG decoding failed")
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


def photographic_pair(width: int, height: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Generate a photographic image A and a realistic revision B of it.

    B is A with a patch of another photograph pasted at :func:`pasted_patch_box` (a local edit),
    then re-compressed as JPEG at quality :data:`JPEG_QUALITY` (small differences everywhere).

    Parameters
    ----------
    width, height : int
        Size in pixels, each at least 16.
    seed : int
        Seed of every random choice; same seed, same pair.

    Returns
    -------
    tuple of numpy.ndarray
        ``(a, b)``, each ``height x width x 3`` RGB ``uint8``.
    """
    a = photographic(width, height, seed=seed)
    x, y, pw, ph = pasted_patch_box(width, height, seed=seed)
    patch_rng = np.random.default_rng([seed, 3])
    edited = a.copy()
    edited[y : y + ph, x : x + pw] = _fit(skdata.chelsea(), pw, ph, patch_rng)
    return a, jpeg_roundtrip(edited)


def rotation_matrix(width: int, height: int, degrees: float, scale: float) -> np.ndarray:
    """The 3x3 matrix :func:`rotated` applies: it maps a point (x, y) of the input to the output.

    Parameters
    ----------
    width, height : int
        Image size in pixels.
    degrees : float
        Rotation angle in degrees, counter-clockwise on screen (OpenCV's convention).
    scale : float
        Isotropic scale factor (> 0), about the image centre.

    Returns
    -------
    numpy.ndarray
        ``3x3`` float64. Its inverse maps a point of the rotated image back to the input, which is
        the B -> A homography of the result contract when B = ``rotated(A, ...)``.
    """
    centre = ((width - 1) / 2.0, (height - 1) / 2.0)
    m = cv2.getRotationMatrix2D(centre, degrees, scale)
    return np.vstack([m, [0.0, 0.0, 1.0]])


def rotated(img: np.ndarray, degrees: float, scale: float) -> np.ndarray:
    """Rotate and scale an image about its centre, keeping its size.

    Parameters
    ----------
    img : numpy.ndarray
        ``HxW`` or ``HxWxC`` image (any dtype OpenCV's ``warpAffine`` takes).
    degrees : float
        Rotation angle in degrees, counter-clockwise on screen.
    scale : float
        Isotropic scale factor (> 0); values near 1 (e.g. 1.05) for "slightly scaled".

    Returns
    -------
    numpy.ndarray
        Same shape and dtype; bicubic interpolation, uncovered corners black (0).
    """
    h, w = img.shape[:2]
    m = rotation_matrix(w, h, degrees, scale)[:2]
    return cv2.warpAffine(
        img, m, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )


def _to_opencv(img: np.ndarray) -> np.ndarray:
    if img.ndim == 3 and img.shape[2] == 3:
        return cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    if img.ndim == 3 and img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_RGBA2BGRA)
    return img


def png_bytes(img: np.ndarray) -> bytes:
    """Encode an RGB/RGBA/grey image as PNG with OpenCV's default compression.

    Parameters
    ----------
    img : numpy.ndarray
        ``HxW``, ``HxWx3`` (RGB) or ``HxWx4`` (RGBA), ``uint8`` or ``uint16``.

    Returns
    -------
    bytes
        The PNG file.
    """
    ok, buf = cv2.imencode(".png", _to_opencv(img))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def write_png(path: str | Path, img: np.ndarray) -> None:
    """Write an RGB/RGBA/grey image as a PNG file with OpenCV's default compression.

    Parameters
    ----------
    path : str or pathlib.Path
        Destination file (overwritten).
    img : numpy.ndarray
        ``HxW``, ``HxWx3`` (RGB) or ``HxWx4`` (RGBA), ``uint8`` or ``uint16``.
    """
    Path(path).write_bytes(png_bytes(img))


def photographic_png_pairs(
    distinct: int, width: int, height: int, *, seed: int
) -> list[tuple[bytes, bytes]]:
    """PNG bytes of ``distinct`` photographic pairs (pair i from ``photographic_pair`` with
    ``seed + i``).

    Parameters
    ----------
    distinct : int
        Number of pairs (>= 1).
    width, height : int
        Size in pixels (>= 16 each).
    seed : int
        Seed of the first pair.

    Returns
    -------
    list of tuple of bytes
        ``[(png_a, png_b), ...]``; the two images of a pair differ (B is a revision of A).
    """
    out = []
    for i in range(distinct):
        a, b = photographic_pair(width, height, seed=seed + i)
        out.append((png_bytes(a), png_bytes(b)))
    return out


def noise_png_pairs(distinct: int, size: int, *, seed: int) -> list[tuple[bytes, bytes]]:
    """PNG bytes of ``distinct`` tiny pairs: A random RGB noise (``default_rng(seed + i)``), B
    the same with one inverted square (a localised edit), both ``size`` x ``size``.

    Returns
    -------
    list of tuple of bytes
        ``[(png_a, png_b), ...]``; A and B of a pair differ.
    """
    out = []
    for i in range(distinct):
        rng = np.random.default_rng(seed + i)
        a = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        b = a.copy()
        lo, hi = size // 4, size // 2
        b[lo:hi, lo:hi] = 255 - b[lo:hi, lo:hi]
        out.append((png_bytes(a), png_bytes(b)))
    return out
