"""The pure comparison pipeline: decode, align, measure, explain. Imports nothing else of ours.

>>> from core.imaging import compare, CompareOptions
>>> result = compare(png_a, png_b, CompareOptions(mode="auto"))   # doctest: +SKIP
>>> result.to_dict()["verdict"], len(result.heatmap_png)          # doctest: +SKIP
"""

from core.imaging.compare import compare
from core.imaging.errors import ErrorCode, ImagingError
from core.imaging.options import CompareOptions
from core.imaging.result import ENGINE_VERSION, VERDICTS, CompareResult

__all__ = [
    "ENGINE_VERSION",
    "VERDICTS",
    "CompareOptions",
    "CompareResult",
    "ErrorCode",
    "ImagingError",
    "compare",
]
