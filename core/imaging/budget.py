"""Memory budget of one comparison, estimated from the image headers before any pixel is decoded.

The engine's memory grows with the decoded size of the pair in its *working* format: both images
are brought to one channel count and sample width (``harmonise``: RGBA when either has alpha,
16-bit when either is 16-bit). Its peak resident memory, intermediates included (float maps,
masks, the warped image, the heatmap), is about :data:`ENGINE_PEAK_FACTOR` times that decoded
size (``bench/bench_memory.py`` measures it at 10, 50 and 100 megapixels).

A job whose estimate exceeds its budget is refused with ``image_too_large`` before decoding, the
budget in the message. Everything here is arithmetic on numbers passed in: no settings are read.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.imaging.errors import ErrorCode, ImagingError
from core.imaging.header import ImageHeader, read_header
from core.imaging.structure import check_structure

__all__ = [
    "ENGINE_PEAK_FACTOR",
    "PairFootprint",
    "check_budget",
    "check_pair",
    "footprint",
]

#: Peak memory of one comparison job (above the worker process's idle size) as a multiple of
#: the pair's decoded size in the working format. ``bench/bench_memory.py`` measured a job as
#: the worker runs it (engine, stored files, heatmap and previews) at 4.8x (10 MP), 3.5x
#: (50 MP) and 3.4x (100 MP) the two 8-bit RGB images, and the engine in ``align`` mode (the
#: warped copy too) at 6.1x, 5.1x and 5.2x; 7x covers both, so a job admitted under the
#: budget fits in it. Was 11x before the noise tests ran in bands (12.3x, 10.2x and 8.2x).
ENGINE_PEAK_FACTOR = 7.0
_MiB = 1024 * 1024


@dataclass(frozen=True)
class PairFootprint:
    """Decoded size of a pair in the engine's working format.

    Attributes
    ----------
    pixels
        Pixels of both images together (width x height of each, summed).
    channels
        3 (RGB) or 4 (RGBA: either image has alpha).
    bytes_per_sample
        1 (8-bit) or 2 (either image is 16-bit).
    """

    pixels: int
    channels: int
    bytes_per_sample: int

    @property
    def decoded_bytes(self) -> int:
        """Bytes of both decoded images in the working format."""
        return self.pixels * self.channels * self.bytes_per_sample

    def peak_bytes(self, factor: float = ENGINE_PEAK_FACTOR) -> int:
        """Estimated peak memory of comparing the pair, in bytes (``factor`` x decoded)."""
        return int(self.decoded_bytes * factor)

    def describe(self) -> str:
        """E.g. ``200.0 megapixels as 16-bit RGBA``."""
        kind = "RGBA" if self.channels == 4 else "RGB"
        return f"{self.pixels / 1e6:.1f} megapixels as {8 * self.bytes_per_sample}-bit {kind}"


def footprint(a: ImageHeader, b: ImageHeader | None = None) -> PairFootprint:
    """The pair's decoded size from the two headers; with one header, the image paired with an
    image like itself (what an upload may at most cost a comparison it takes part in).

    Parameters
    ----------
    a, b
        Headers from ``core.imaging.header.read_header`` (or an equivalent canvas size).

    Returns
    -------
    PairFootprint
        Pixels of both, working channels (3 or 4) and bytes per sample (1 or 2).
    """
    other = a if b is None else b
    return PairFootprint(
        pixels=a.width * a.height + other.width * other.height,
        channels=4 if (a.has_alpha or other.has_alpha) else 3,
        bytes_per_sample=2 if max(a.bit_depth, other.bit_depth) > 8 else 1,
    )


def check_budget(
    pair: PairFootprint, budget_bytes: int, *, factor: float = ENGINE_PEAK_FACTOR
) -> None:
    """Refuse a pair whose estimated peak exceeds the budget.

    Parameters
    ----------
    pair
        The pair's decoded size (:func:`footprint`).
    budget_bytes
        Bytes one comparison may use (> 0).
    factor
        Peak memory as a multiple of the decoded size (default :data:`ENGINE_PEAK_FACTOR`).

    Raises
    ------
    ImagingError
        ``image_too_large``, the estimate and the budget (in MiB) in the message.
    """
    need = pair.peak_bytes(factor)
    if need > budget_bytes:
        raise ImagingError(
            ErrorCode.IMAGE_TOO_LARGE,
            f"comparing {pair.describe()} needs about {need // _MiB} MiB of memory, more than "
            f"the per-job budget of {budget_bytes // _MiB} MiB",
        )


def check_pair(
    a: bytes, b: bytes, *, max_bytes: int, max_pixels: int, budget_bytes: int
) -> PairFootprint:
    """Read both headers and refuse the pair before decoding when it cannot be compared within
    ``budget_bytes``, or when a JPEG is too short for the size its header declares.

    Parameters
    ----------
    a, b
        Encoded images.
    max_bytes, max_pixels
        The header limits (see ``read_header``).
    budget_bytes
        Bytes the comparison may use (> 0).

    Returns
    -------
    PairFootprint
        The pair's decoded size.

    Raises
    ------
    ImagingError
        The codes of ``read_header`` and ``check_structure`` (attributed to image "a" or "b"),
        or ``image_too_large`` with the estimate and the budget.
    """
    headers = []
    for name, data in (("a", a), ("b", b)):
        try:
            header = read_header(data, max_bytes=max_bytes, max_pixels=max_pixels)
            check_structure(data, header.format, inflate=False)
        except ImagingError as exc:
            raise exc.with_image(name) from exc
        headers.append(header)
    pair = footprint(headers[0], headers[1])
    check_budget(pair, budget_bytes)
    return pair
