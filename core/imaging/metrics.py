"""Full-reference similarity scores of two same-shape images: SSIM, PSNR, histogram similarity.

Every function takes two HxWxC arrays of the same shape and dtype (uint8 or uint16, C = 1..4,
normally 3 or 4) and an optional valid mask (bool HxW, True where a pixel is compared; ``None``
compares every pixel). ``data_range`` is the span of possible values: 255 for 8-bit images,
65535 for 16-bit ones. All channels, including alpha, are compared and averaged with equal weight.

Shape, dtype and option errors are programmer errors and raise ``ValueError`` before any maths.

A mask that selects no pixel at all compares nothing, so nothing differs: the scores are those of
identical images (SSIM 1, PSNR ``None`` with MSE 0, histogram similarity 1). Callers that must
refuse such a comparison check the mask first.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from core.imaging.parallel import parallel_map, thread_count

__all__ = [
    "SSIMResult",
    "bhattacharyya_mean",
    "channel_histograms",
    "histogram_similarity",
    "psnr",
    "psnr_from_squared_error",
    "squared_error_sum",
    "ssim",
]

#: Gaussian window radius in standard deviations, as scikit-image (and Wang et al.'s 11 taps).
_TRUNCATE = 3.5
#: Channel values per band of the band-wise SSIM (a band's float32 temporaries stay cache-sized).
_BAND_VALUES = 300_000
#: Fewest output rows per band (each band also filters 2 x radius rows of halo).
_MIN_BAND_ROWS = 32
# cv2.max with dst= in place: OpenCV's stubs differ between 4.x and 5.x releases (one rejects
# the call, the other accepts it), so the call goes through an untyped alias that both accept.
_cv2_max: Callable[..., Any] = cv2.max
#: Images with at least this many channel values get their two histograms on two threads.
_PARALLEL_HISTOGRAM_VALUES = 1_000_000


@dataclass(frozen=True)
class SSIMResult:
    """Mean structural similarity of two images and its three components.

    Attributes
    ----------
    score
        Mean SSIM in [-1, 1] (1 for identical images; callers clip at 0 for display).
    luminance
        Mean of ``l = (2 mu_a mu_b + C1) / (mu_a^2 + mu_b^2 + C1)``, in (0, 1].
    contrast
        Mean of ``c = (2 s_a s_b + C2) / (s_a^2 + s_b^2 + C2)``, in (0, 1].
    structure
        Mean of ``s = (s_ab + C3) / (s_a s_b + C3)`` with ``C3 = C2 / 2``, in [-1, 1].
    ssim_map
        float32 HxW: the per-pixel SSIM averaged over channels, for every pixel (the mask and the
        border crop apply to the means only); an empty 0x0 array when not kept.
    """

    score: float
    luminance: float
    contrast: float
    structure: float
    ssim_map: np.ndarray


# --------------------------------------------------------------------------------------------
# validation


def _prepare(
    a: np.ndarray, b: np.ndarray, mask: np.ndarray | None, data_range: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Validate the inputs; return contiguous ``a``, ``b`` and the mask as uint8 0/1 (or None).

    Raises ``ValueError`` unless ``a``, ``b``, ``mask`` and ``data_range`` fit together.
    """
    for name, x in (("a", a), ("b", b)):
        if not isinstance(x, np.ndarray):
            raise ValueError(f"{name} must be a numpy array, not {type(x).__name__}")
        if x.ndim != 3:
            raise ValueError(f"{name} must be HxWxC (3-D), got shape {x.shape}")
        if not 1 <= x.shape[2] <= 4:
            raise ValueError(f"{name} must have 1 to 4 channels, got {x.shape[2]}")
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"{name} is empty: shape {x.shape}")
        if x.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"{name} must be uint8 or uint16, not {x.dtype}")
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {a.shape} and {b.shape}")
    if a.dtype != b.dtype:
        raise ValueError(f"a and b must have the same dtype, got {a.dtype} and {b.dtype}")
    if mask is not None:
        if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_:
            raise ValueError("mask must be a bool numpy array or None")
        if mask.shape != a.shape[:2]:
            raise ValueError(f"mask must have shape {a.shape[:2]}, got {mask.shape}")
    if not (math.isfinite(data_range) and data_range > 0):
        raise ValueError(f"data_range must be a finite number > 0, got {data_range!r}")
    # OpenCV wants a contiguous uint8 0/1 mask; a bool array's bytes are exactly that.
    mask_u8 = None if mask is None else np.ascontiguousarray(mask).view(np.uint8)
    return np.ascontiguousarray(a), np.ascontiguousarray(b), mask_u8


# --------------------------------------------------------------------------------------------
# SSIM


def _rows_op(op: np.ufunc, src: np.ndarray, per_channel: np.ndarray, out: np.ndarray) -> None:
    """``out = op(src, per_channel)`` with one float32 constant per channel of HxWxC ``src``.

    The constants are tiled along whole rows so that NumPy broadcasts over long rows rather
    than over a last axis of 3 or 4 (which is several times slower).
    """
    rows, width, chans = src.shape
    op(
        src.reshape(rows, width * chans),
        np.tile(per_channel, width),
        out=out.reshape(rows, width * chans),
        dtype=np.float32,
    )


class _SSIMBands:
    """Band-wise SSIM: each band of output rows is computed from its rows plus a halo.

    Working band by band keeps the temporaries in cache and memory bounded by the band size,
    and lets bands run on several threads. Each band filters its rows plus ``radius`` rows of
    halo on both sides (reflected at the true image border), so the result equals filtering the
    whole image at once.
    """

    def __init__(
        self,
        a: np.ndarray,
        b: np.ndarray,
        *,
        data_range: float,
        sigma: float,
        k1: float,
        k2: float,
        region: np.ndarray | None,
        crop: int,
        keep_map: bool = True,
        identical_rows: np.ndarray | None = None,
    ) -> None:
        self.a = a
        self.b = b
        self.height, self.width, self.channels = a.shape
        self.radius = int(_TRUNCATE * sigma + 0.5)
        self.kernel = cv2.getGaussianKernel(2 * self.radius + 1, sigma).astype(np.float32)
        self.c1 = float(np.float32((k1 * data_range) ** 2))
        self.c2 = np.float32((k2 * data_range) ** 2)
        self.region = region  # uint8 HxW (0/1) of the pixels averaged, or None for all
        self.crop = crop  # rows and columns left out at every border of the averaged area
        self.ssim_map = np.empty((self.height, self.width), dtype=np.float32) if keep_map else None
        self.mean_weights = np.full((1, self.channels), 1.0 / self.channels, dtype=np.float64)
        self.identical_rows = identical_rows  # bool H, True where a's row equals b's, or None

    def _filter(self, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        """Gaussian-filter ``src`` into ``dst`` (scipy 'reflect' border = BORDER_REFLECT)."""
        return cv2.sepFilter2D(
            src, cv2.CV_32F, self.kernel, self.kernel, dst=dst, borderType=cv2.BORDER_REFLECT
        )

    def run(self) -> np.ndarray:
        """Fill ``ssim_map``; return the sums of (S, l, c, s) over the averaged area and the count.

        Bands are handed out to a few threads; each thread reuses its own buffers. Per-band
        sums are added in band order, so the result does not depend on the scheduling.
        """
        rows = max(_MIN_BAND_ROWS, _BAND_VALUES // (self.width * self.channels))
        bands = [(r0, min(self.height, r0 + rows)) for r0 in range(0, self.height, rows)]
        sums = np.zeros((len(bands), 5), dtype=np.float64)
        todo = iter(range(len(bands)))
        lock = threading.Lock()
        shape = (min(self.height, rows + 2 * self.radius), self.width, self.channels)

        def worker() -> None:
            bufs = [np.empty(shape, np.float32) for _ in range(8)]
            while True:
                with lock:
                    i = next(todo, None)
                if i is None:
                    return
                sums[i] = self._band(*bands[i], bufs)

        threads = max(1, min(thread_count(), len(bands) // 2))
        parallel_map(lambda _: worker(), range(threads))
        return sums.sum(axis=0)

    def _band(self, r0: int, r1: int, bufs: list[np.ndarray]) -> np.ndarray:
        """Compute map rows ``r0:r1`` from those rows plus their halo; return their sums."""
        rad, chans = self.radius, self.channels
        h0, h1 = max(0, r0 - rad), min(self.height, r1 + rad)
        if self.identical_rows is not None and self.identical_rows[h0:h1].all():
            return self._identical(r0, r1)
        x, y, t, ma, mb, saa, sbb, sdd = (buf[: h1 - h0] for buf in bufs)
        band_a, band_b = self.a[h0:h1], self.b[h0:h1]
        # Centre each channel on its rounded band mean before squaring: variances are shift
        # invariant, and the float32 cancellation error of E[x^2] - E[x]^2 grows with the
        # magnitude of x. Integer offsets keep x exact.
        off_a = np.round(cv2.mean(band_a)[:chans]).astype(np.float32)
        off_b = np.round(cv2.mean(band_b)[:chans]).astype(np.float32)
        _rows_op(np.subtract, band_a, off_a, x)
        _rows_op(np.subtract, band_b, off_b, y)
        self._filter(x, ma)
        self._filter(y, mb)
        np.multiply(x, x, out=t)
        self._filter(t, saa)
        np.multiply(y, y, out=t)
        self._filter(t, sbb)
        np.subtract(x, y, out=t)
        np.multiply(t, t, out=t)
        self._filter(t, sdd)
        rows = slice(r0 - h0, r1 - h0)
        moments = (ma[rows], mb[rows], saa[rows], sbb[rows], sdd[rows])
        scratch = (x[: r1 - r0], y[: r1 - r0], t[: r1 - r0])
        return self._combine(r0, r1, off_a, off_b, moments, scratch)

    def _identical(self, r0: int, r1: int) -> np.ndarray:
        """Sums of map rows ``r0:r1`` whose windows see identical rows of a and b: every value
        of S, l, c and s is exactly 1 there (see ``_combine``), so each sum is the count."""
        if self.ssim_map is not None:
            self.ssim_map[r0:r1] = 1.0
        c = self.crop
        y0, y1 = max(r0, c), min(r1, self.height - c)
        out = np.zeros(5, dtype=np.float64)
        if y1 <= y0:
            return out
        if self.region is None:
            count = (y1 - y0) * (self.width - 2 * c)
        else:
            count = cv2.countNonZero(self.region[y0:y1, c : self.width - c])
        out[:] = count * self.channels
        return out

    def _combine(
        self,
        r0: int,
        r1: int,
        off_a: np.ndarray,
        off_b: np.ndarray,
        moments: tuple[np.ndarray, ...],
        scratch: tuple[np.ndarray, ...],
    ) -> np.ndarray:
        """Turn the filtered moments of rows ``r0:r1`` into SSIM map rows and component sums.

        ``moments`` are the Gaussian-weighted means of x, y, x^2, y^2 and (x - y)^2 for the
        centred data x = a - off_a, y = b - off_b; they are overwritten. The covariance comes
        from the variance of the difference, ``2 cov = var_a + var_b - var_(a-b)``, so that
        ``A2 = 2 cov + C2`` and ``B2 = var_a + var_b + C2`` share their rounding error, which
        cancels in ``A2 / B2`` where the images agree. Every step is symmetric in a and b and
        gives exactly 1 for identical inputs.
        """
        ma, mb, v_a, v_b, v_d = moments
        t1, t2, t3 = scratch
        np.subtract(ma, mb, out=t1)  # mu_a - mu_b - (off_a - off_b)
        shifted = bool(np.any(off_a != off_b))
        if shifted:
            np.multiply(t1, t1, out=t2)
            np.subtract(v_d, t2, out=v_d)  # var_(a-b)
            _rows_op(np.add, t1, off_a - off_b, t1)  # mu_a - mu_b
            np.multiply(t1, t1, out=t1)  # (mu_a - mu_b)^2
        else:
            np.multiply(t1, t1, out=t1)  # (mu_a - mu_b)^2
            np.subtract(v_d, t1, out=v_d)  # var_(a-b)
        np.multiply(ma, ma, out=t2)
        np.subtract(v_a, t2, out=v_a)
        # var_a >= 0: a negative value is a rounding error.
        _cv2_max(v_a, 0.0, dst=v_a)
        np.multiply(mb, mb, out=t2)
        np.subtract(v_b, t2, out=v_b)  # var_b
        _cv2_max(v_b, 0.0, dst=v_b)
        # B2 = var_a + var_b + C2 (NumPy: an exactly commutative sum, then C2)
        np.add(v_a, v_b, out=t2)
        t2 += self.c2
        np.subtract(t2, v_d, out=v_d)  # A2 = 2 cov + C2
        np.divide(v_d, t2, out=t3)  # contrast * structure = A2 / B2
        # Luminance l = A1 / B1 = 1 - (mu_a - mu_b)^2 / B1, with
        # B1 = ((mu_a + mu_b)^2 + (mu_a - mu_b)^2) / 2 + C1.
        np.add(ma, mb, out=ma)
        _rows_op(np.add, ma, off_a + off_b, ma)  # mu_a + mu_b
        np.multiply(ma, ma, out=ma)
        cv2.addWeighted(ma, 0.5, t1, 0.5, self.c1, dst=ma)  # B1
        np.divide(t1, ma, out=t1)
        np.subtract(np.float32(1), t1, out=t1)  # luminance
        np.multiply(t1, t3, out=t3)  # SSIM
        np.multiply(v_a, v_b, out=v_a)
        cv2.sqrt(v_a, dst=v_a)  # s_a s_b
        # 2 s_a s_b + C2, computed like B2 so that identical inputs give exactly 1.
        np.add(v_a, v_a, out=v_b)
        v_b += self.c2
        # structure (cov + C3) / (s_a s_b + C3) = A2 / (2 s_a s_b + C2), as C3 = C2 / 2
        np.divide(v_d, v_b, out=v_a)
        np.divide(v_b, t2, out=v_b)  # contrast
        parts = (t3, t1, v_b, v_a)

        if self.ssim_map is None:
            pass
        elif self.channels == 1:
            self.ssim_map[r0:r1] = t3[:, :, 0]
        else:
            cv2.transform(t3, self.mean_weights, dst=self.ssim_map[r0:r1])

        # Sums over the averaged area: rows and columns [crop, size - crop), masked.
        c = self.crop
        y0, y1 = max(r0, c), min(r1, self.height - c)
        out = np.zeros(5, dtype=np.float64)
        if y1 <= y0:
            return out
        sel = (slice(y0 - r0, y1 - r0), slice(c, self.width - c))
        if self.region is None:
            for i, arr in enumerate(parts):
                out[i] = sum(cv2.sumElems(arr[sel])[: self.channels])
            out[4] = (y1 - y0) * (self.width - 2 * c) * self.channels
        else:
            region = self.region[y0:y1, c : self.width - c]
            count = cv2.countNonZero(region)
            if count:
                for i, arr in enumerate(parts):
                    out[i] = sum(cv2.mean(arr[sel], mask=region)[: self.channels]) * count
                out[4] = count * self.channels
        return out


def ssim(
    a: np.ndarray,
    b: np.ndarray,
    *,
    data_range: float,
    mask: np.ndarray | None = None,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    keep_map: bool = True,
    identical_rows: np.ndarray | None = None,
) -> SSIMResult:
    """Mean structural similarity (SSIM) of two images, per Wang et al. (2004).

    Local means, variances and the covariance are weighted by a Gaussian window of standard
    deviation ``sigma`` pixels truncated at 3.5 sigma (11 taps for 1.5), with population
    (not sample) covariance; the image border is reflected (scipy's ``'reflect'``). SSIM is
    computed per channel and averaged over channels. With ``mask=None`` the score equals
    ``skimage.metrics.structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=data_range, channel_axis=-1)``: like scikit-image,
    the mean leaves out the window radius (5 pixels) at every border. With a mask the means
    cover the masked-in pixels of that same cropped interior. Images whose cropped interior is
    empty (a side under 11 pixels, where scikit-image refuses) average over every pixel, and a
    mask selecting nothing in the interior averages over its pixels anywhere.

    Parameters
    ----------
    a, b
        Images, HxWxC uint8 or uint16 of the same shape and dtype.
    data_range
        Span of possible pixel values (255 for 8-bit, 65535 for 16-bit); sets
        ``C1 = (k1 * data_range)^2`` and ``C2 = (k2 * data_range)^2``.
    mask
        bool HxW, True where a pixel counts towards the means, or ``None`` for all pixels.
    sigma
        Standard deviation of the Gaussian window, in pixels (> 0).
    k1, k2
        Stabilising constants (> 0).
    keep_map
        Whether to keep the per-pixel map (4 bytes per pixel); without it only the means are
        computed (the same numbers) and ``ssim_map`` is an empty 0x0 array.
    identical_rows
        Optional bool array of ``H``: True where row ``y`` of ``a`` equals row ``y`` of ``b``
        (e.g. from the difference map). Bands whose windows see only such rows are not
        filtered: their SSIM is exactly 1, so the result is the same, bit for bit. A wrong
        hint gives a wrong result.

    Returns
    -------
    SSIMResult
        Mean score in [-1, 1], its luminance, contrast and structure components, and the
        float32 HxW SSIM map (averaged over channels, defined at every pixel).

    Notes
    -----
    The window still sees masked-out pixels: a masked-in pixel within the window radius of a
    masked-out area is influenced by it. To exclude an area completely, also mask out a
    ``radius``-pixel ring around it (erode the mask with a ``2 * radius + 1`` square). The
    map is computed at every pixel whatever the mask.

    The image is processed in bands of rows (each with a halo of ``radius`` rows) on a few
    threads. Moments are filtered in float32 from data centred per band and channel on the
    rounded band mean, and the covariance comes from the variance of ``a - b``; the score
    matches scikit-image's float64 result to about 1e-7 on 8-bit and 16-bit images, the map to
    about 1e-4 per pixel, and the contrast and structure means (which take square roots of
    near-zero variances) to about 2e-4. Identical inputs give exactly 1 everywhere, and
    swapping ``a`` and ``b`` gives exactly the same result. Means are clipped to their ranges.

    References
    ----------
    Z. Wang, A. C. Bovik, H. R. Sheikh and E. P. Simoncelli, "Image quality assessment: from
    error visibility to structural similarity", IEEE Trans. Image Process. 13(4), 600-612, 2004.
    """
    a, b, region = _prepare(a, b, mask, data_range)
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a finite number > 0, got {sigma!r}")
    if not (math.isfinite(k1) and k1 > 0 and math.isfinite(k2) and k2 > 0):
        raise ValueError(f"k1 and k2 must be finite numbers > 0, got {k1!r} and {k2!r}")

    height, width, _ = a.shape
    radius = int(_TRUNCATE * sigma + 0.5)
    crop = radius if min(height, width) > 2 * radius else 0
    nothing_compared = False
    if region is not None:
        if not region.any():
            nothing_compared, region = True, None  # still compute the map
        elif not region[crop : height - crop, crop : width - crop].any():
            crop = 0

    work = _SSIMBands(
        a,
        b,
        data_range=data_range,
        sigma=sigma,
        k1=k1,
        k2=k2,
        region=region,
        crop=crop,
        keep_map=keep_map,
        identical_rows=identical_rows,
    )
    totals = work.run()
    ssim_map = work.ssim_map if work.ssim_map is not None else np.empty((0, 0), np.float32)
    if nothing_compared:
        return SSIMResult(1.0, 1.0, 1.0, 1.0, ssim_map)
    score, lum, con, struct = (float(v) for v in totals[:4] / totals[4])
    return SSIMResult(
        score=min(1.0, max(-1.0, score)),
        luminance=min(1.0, max(0.0, lum)),
        contrast=min(1.0, max(0.0, con)),
        structure=min(1.0, max(-1.0, struct)),
        ssim_map=ssim_map,
    )


# --------------------------------------------------------------------------------------------
# PSNR


def psnr(
    a: np.ndarray, b: np.ndarray, *, data_range: float, mask: np.ndarray | None = None
) -> tuple[float | None, float]:
    """Peak signal-to-noise ratio of two images, over all channels.

    ``MSE`` is the mean of ``(a - b)^2`` over every channel value of the compared pixels
    (accumulated in float64), and ``PSNR = 10 log10(data_range^2 / MSE)``; with ``mask=None``
    this equals ``cv2.PSNR(a, b, data_range)``.

    Parameters
    ----------
    a, b
        Images, HxWxC uint8 or uint16 of the same shape and dtype.
    data_range
        Peak value, 255 for 8-bit and 65535 for 16-bit images.
    mask
        bool HxW, True where a pixel is compared, or ``None`` for all pixels.

    Returns
    -------
    tuple
        ``(psnr_db, mse)``: PSNR in decibels (``None`` when ``mse == 0``, i.e. identical) and
        the MSE in squared pixel units (0 .. data_range^2).
    """
    a, b, m = _prepare(a, b, mask, data_range)
    sq, count = squared_error_sum(a, b, m)
    return psnr_from_squared_error(sq, count, data_range=data_range)


def squared_error_sum(
    a: np.ndarray, b: np.ndarray, mask_u8: np.ndarray | None
) -> tuple[float, int]:
    """``(sum of (a - b)^2, number of channel values summed)`` over the masked-in pixels.

    ``a`` and ``b`` are validated contiguous HxWxC arrays and ``mask_u8`` a uint8 0/1 HxW mask
    or None. The sum is exact (an integer) up to 2^50, so sums of bands add up to the sum of
    the whole image.
    """
    if mask_u8 is None:
        count = a.size
        sq = cv2.norm(a, b, cv2.NORM_L2SQR)
    else:
        count = cv2.countNonZero(mask_u8) * a.shape[2]
        sq = cv2.norm(a, b, cv2.NORM_L2SQR, mask=mask_u8) if count else 0.0
    # The exact sum of squared integer differences is an integer; OpenCV's (IPP) path returns
    # the square of the rounded L2 norm, a few ulps off. Round it back while that is exact.
    if sq < 2.0**50:
        sq = round(sq)
    return float(sq), int(count)


def psnr_from_squared_error(
    sq: float, count: int, *, data_range: float
) -> tuple[float | None, float]:
    """``(psnr_db, mse)`` from a sum of squared errors over ``count`` channel values (see
    :func:`psnr`): ``None`` dB when the MSE is 0."""
    mse = float(sq) / count if count else 0.0
    if mse == 0.0:
        return None, 0.0
    return 10.0 * math.log10(float(data_range) ** 2 / mse), mse


# --------------------------------------------------------------------------------------------
# histogram similarity


def histogram_similarity(
    a: np.ndarray,
    b: np.ndarray,
    *,
    data_range: float,
    mask: np.ndarray | None = None,
    bins: int = 64,
) -> float:
    """Similarity of the colour distributions of two images, in [0, 1].

    For each channel, the histograms of ``a`` and ``b`` (``bins`` equal bins over the integer
    levels ``0 .. data_range``, i.e. ``[0, data_range + 1)``, masked-in pixels only) are
    normalised to sum 1 and compared with the Bhattacharyya coefficient
    ``BC = sum_i sqrt(p_i q_i)``; the result is the mean BC over channels. It is 1 when the
    distributions are equal (whatever the pixel positions) and 0 when they share no bin.
    For normalised histograms ``BC = 1 - d^2``, ``d`` being OpenCV's
    ``HISTCMP_BHATTACHARYYA`` distance. Values above ``data_range`` are not counted.

    Parameters
    ----------
    a, b
        Images, HxWxC uint8 or uint16 of the same shape and dtype.
    data_range
        Largest pixel level, 255 for 8-bit and 65535 for 16-bit images.
    mask
        bool HxW, True where a pixel is counted, or ``None`` for all pixels.
    bins
        Number of bins per channel (>= 1).

    Returns
    -------
    float
        Mean Bhattacharyya coefficient over channels, in [0, 1]; 1 when the mask selects
        nothing. A channel where either histogram is empty (all values above ``data_range``)
        scores 1 if both are empty, else 0.
    """
    a, b, m = _prepare(a, b, mask, data_range)
    if isinstance(bins, bool) or not isinstance(bins, int | np.integer) or bins < 1:
        raise ValueError(f"bins must be an integer >= 1, got {bins!r}")
    if m is not None and not m.any():
        return 1.0

    def histograms(img: np.ndarray) -> list[np.ndarray]:
        return channel_histograms(img, m, bins=int(bins), data_range=data_range)

    if a.size >= _PARALLEL_HISTOGRAM_VALUES:
        hists_a, hists_b = parallel_map(histograms, (a, b))  # one image per thread
    else:
        hists_a, hists_b = histograms(a), histograms(b)
    return bhattacharyya_mean(hists_a, hists_b)


def channel_histograms(
    img: np.ndarray, mask_u8: np.ndarray | None, *, bins: int, data_range: float
) -> list[np.ndarray]:
    """Per channel of a validated HxWxC image: float64 counts in ``bins`` equal bins over
    ``[0, data_range + 1)`` of the pixels where ``mask_u8`` (uint8 0/1 HxW, or None) is set.
    Counts of bands add up to the counts of the whole image."""
    return [_histogram(img, ch, mask_u8, bins, data_range) for ch in range(img.shape[2])]


def bhattacharyya_mean(hists_a: list[np.ndarray], hists_b: list[np.ndarray]) -> float:
    """Mean Bhattacharyya coefficient over channels of two lists of histograms, in [0, 1]
    (see :func:`histogram_similarity`)."""
    total = 0.0
    for ha, hb in zip(hists_a, hists_b, strict=True):
        sa, sb = ha.sum(), hb.sum()
        if sa == 0 or sb == 0:
            total += 1.0 if sa == sb else 0.0
            continue
        total += float(np.sqrt(ha * hb).sum() / math.sqrt(sa * sb))
    return min(1.0, max(0.0, total / len(hists_a)))


def _histogram(
    img: np.ndarray, channel: int, mask: np.ndarray | None, bins: int, data_range: float
) -> np.ndarray:
    """Counts of ``img[..., channel]`` in ``bins`` equal bins over ``[0, data_range + 1)``."""
    if img.dtype == np.uint8 and data_range == 255:
        # OpenCV's 256-bin 8-bit histogram is its fastest; fold it into ``bins`` bins. Level v
        # falls in bin floor(v * bins / 256), as in calcHist (bins / 256 is exact in binary).
        fine = cv2.calcHist([img], [channel], mask, [256], [0, 256]).ravel()
        fold = (np.arange(256) * bins) // 256
        return np.bincount(fold, weights=fine, minlength=bins)
    ranges = [0.0, float(data_range) + 1.0]
    return cv2.calcHist([img], [channel], mask, [bins], ranges).ravel().astype(np.float64)
