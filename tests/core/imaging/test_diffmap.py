"""difference_map against a plain NumPy reference, its 16-bit rounding and its invariants."""

from __future__ import annotations

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.imaging.diffmap import difference_map
from core.imaging.errors import ErrorCode, ImagingError


def _reference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Independent reference: widen to int64, take |a-b|, max over channels, rescale to 8 bits."""
    peak = np.abs(a.astype(np.int64) - b.astype(np.int64))
    if peak.ndim == 3:
        peak = peak.max(axis=-1)
    if a.dtype == np.uint16:
        peak = -(-peak // 257)  # ceil(peak / 257) in exact integer arithmetic
    return peak.astype(np.uint8)


@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_matches_numpy_reference(channels: int, dtype: type[np.integer]) -> None:
    rng = np.random.default_rng(1)
    top = np.iinfo(dtype).max
    a = rng.integers(0, top, (61, 97, channels), dtype=dtype, endpoint=True)
    b = a.copy()
    # Mix of small noise, large edits and identical pixels, in every channel.
    noise = rng.integers(-3, 4, a.shape)
    b = np.clip(b.astype(np.int64) + noise, 0, top).astype(dtype)
    b[10:30, 20:50] = rng.integers(0, top, (20, 30, channels), dtype=dtype, endpoint=True)
    out = difference_map(a, b)
    assert out.dtype == np.uint8
    assert out.shape == a.shape[:2]
    assert out.flags.c_contiguous
    np.testing.assert_array_equal(out, _reference(a, b))


def test_uint8_is_exactly_the_largest_channel_difference() -> None:
    a = np.zeros((1, 4, 3), dtype=np.uint8)
    b = np.array([[[0, 0, 0], [5, 1, 0], [0, 0, 255], [7, 200, 13]]], dtype=np.uint8)
    np.testing.assert_array_equal(difference_map(a, b), [[0, 5, 255, 200]])
    np.testing.assert_array_equal(difference_map(b, a), [[0, 5, 255, 200]])


def test_uint16_rounds_up_for_every_possible_difference() -> None:
    # All 65536 differences at once, in a different channel for each third of them.
    values = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    a = np.zeros((256, 256, 3), dtype=np.uint16)
    b = np.zeros_like(a)
    b[:, :100, 0] = values[:, :100]
    b[:, 100:200, 1] = values[:, 100:200]
    b[:, 200:, 2] = values[:, 200:]
    out = difference_map(a, b)
    expected = (values.astype(np.int64) + 256) // 257
    np.testing.assert_array_equal(out, expected)
    assert out[0, 1] == 1  # the smallest nonzero 16-bit difference stays visible
    assert out[-1, -1] == 255
    # 257 per 8-bit level: exactly k * 257 is level k, one more is level k + 1.
    assert out.ravel()[257 * 3] == 3 and out.ravel()[257 * 3 + 1] == 4


def test_strided_and_single_channel_inputs() -> None:
    rng = np.random.default_rng(2)
    big_a = rng.integers(0, 256, (40, 80, 3), dtype=np.uint8)
    big_b = rng.integers(0, 256, (40, 80, 3), dtype=np.uint8)
    a, b = big_a[::2, 1::2], big_b[::2, 1::2]  # not contiguous
    np.testing.assert_array_equal(difference_map(a, b), _reference(a, b))
    grey_a, grey_b = big_a[..., 0], big_b[..., 0]
    np.testing.assert_array_equal(difference_map(grey_a, grey_b), _reference(grey_a, grey_b))
    one_a, one_b = big_a[..., :1], big_b[..., :1]
    np.testing.assert_array_equal(difference_map(one_a, one_b), _reference(one_a, one_b))


def test_refuses_mismatched_inputs() -> None:
    a = np.zeros((4, 5, 3), dtype=np.uint8)
    with pytest.raises(ImagingError) as excinfo:
        difference_map(a, np.zeros((5, 4, 3), dtype=np.uint8))
    assert excinfo.value.code is ErrorCode.SIZE_MISMATCH
    with pytest.raises(ImagingError) as excinfo:
        difference_map(a, a.astype(np.uint16))
    assert excinfo.value.code is ErrorCode.UNSUPPORTED_FORMAT
    with pytest.raises(ImagingError) as excinfo:
        difference_map(a.astype(np.float32), a.astype(np.float32))
    assert excinfo.value.code is ErrorCode.UNSUPPORTED_FORMAT


_pairs = st.sampled_from([np.uint8, np.uint16]).flatmap(
    lambda dtype: hnp.array_shapes(min_dims=3, max_dims=3, min_side=1, max_side=12).flatmap(
        lambda shape: st.tuples(
            hnp.arrays(dtype, (shape[0], shape[1], 3 if shape[2] % 2 else 4)),
            hnp.arrays(dtype, (shape[0], shape[1], 3 if shape[2] % 2 else 4)),
        )
    )
)


@settings(max_examples=60, deadline=None)
@given(_pairs)
def test_symmetric_zero_iff_equal_and_matches_reference(
    pair: tuple[np.ndarray, np.ndarray],
) -> None:
    a, b = pair
    forward = difference_map(a, b)
    np.testing.assert_array_equal(forward, difference_map(b, a))
    np.testing.assert_array_equal(forward, _reference(a, b))
    np.testing.assert_array_equal(forward == 0, (a == b).all(axis=-1))
    assert not difference_map(a, a).any()
