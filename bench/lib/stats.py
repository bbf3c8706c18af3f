"""Small statistics of the benchmarks' samples: percentiles (linear interpolation) and the
count / median / p99 / maximum summary their tables and JSON show."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100, linear interpolation) of ``values``; None when empty."""
    if not values:
        return None
    return float(np.percentile(np.asarray(values, dtype=float), q))


def summary(values: Sequence[float]) -> dict[str, float | int | None]:
    """Count, median, p99 and maximum of ``values`` (None for an empty sequence)."""

    def rnd(value: float | None) -> float | None:
        return None if value is None else round(value, 4)

    return {
        "n": len(values),
        "median": rnd(percentile(values, 50)),
        "p99": rnd(percentile(values, 99)),
        "max": rnd(max(values) if values else None),
    }
