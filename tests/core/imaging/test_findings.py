"""Findings helpers (``core.imaging.findings``) that must keep their bits while saving memory."""

from __future__ import annotations

import numpy as np
import pytest

from core.imaging import findings


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_grey_is_the_float_channel_mean_bit_for_bit(dtype: type, channels: int) -> None:
    rng = np.random.default_rng(channels)
    top = 256 if dtype == np.uint8 else 65536
    img = rng.integers(0, top, (37, 53, channels)).astype(dtype)
    assert np.array_equal(findings._grey(img), findings._as_float(img).mean(axis=2))
