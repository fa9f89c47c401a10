"""segtrain.sliding_window: coverage, the Gaussian importance map, blending vs whole-array inference in 1-D/2-D/3-D."""

import itertools

import numpy as np
import pytest

from segtrain.errors import SegtrainError
from segtrain.inference import predict_logits
from segtrain.sliding_window import gaussian_importance, sliding_window, window_starts


@pytest.mark.parametrize("size,window,stride", [(10, 4, 3), (17, 8, 8), (5, 8, 4), (31, 7, 1), (64, 16, 5)])
def test_windows_cover_every_voxel(size, window, stride):
    starts = window_starts(size, window, stride)
    covered = np.zeros(size, dtype=int)
    for start in starts:
        covered[start : start + window] += 1
    assert covered.min() >= 1 and len(covered) == size
    assert starts[0] == 0 and starts[-1] + min(window, size) == size  # last window flush with the end
    assert all(b - a <= stride for a, b in itertools.pairwise(starts))


def test_gaussian_importance_matches_numpy_formula():
    window = (8, 5, 12)
    grids = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in window), indexing="ij")
    exponent = sum(((g - (n - 1) / 2) / (n / 8)) ** 2 for g, n in zip(grids, window))
    expected = np.exp(-0.5 * exponent)
    expected = np.maximum(expected / expected.max(), 1e-6)
    got = gaussian_importance(window)
    assert got.dtype == np.float32 and got.shape == window
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert got.min() == pytest.approx(1e-6)  # the corner (e^-24 before the floor) is clipped away from zero
    odd = gaussian_importance((7,))
    assert odd[3] == 1.0 and np.allclose(odd, odd[::-1])  # centred, symmetric


def test_gaussian_blend_is_the_weighted_average_of_window_outputs():
    # forward outputs the window's index everywhere: the blend is sum_i g_i * i / sum_i g_i
    calls = []

    def forward(batch):
        out = np.arange(len(calls), len(calls) + len(batch), dtype=np.float32)[:, None, None] * np.ones_like(batch)
        calls.extend(range(len(batch)))
        return out

    size, window, stride = 14, 8, 3  # starts 0, 3, 6
    blended = sliding_window(forward, np.zeros((size, 1), np.float32), (window,), (stride,), batch_size=2)[:, 0]
    g = gaussian_importance((window,))
    num, den = np.zeros(size), np.zeros(size)
    for index, start in enumerate([0, 3, 6]):
        num[start : start + window] += index * g
        den[start : start + window] += g
    np.testing.assert_allclose(blended, num / den, rtol=1e-5)


def _keras_model(rank: int, kernel: int, channels: int = 2, classes: int = 3):
    import keras

    conv = {1: keras.layers.Conv1D, 2: keras.layers.Conv2D, 3: keras.layers.Conv3D}[rank]
    keras.utils.set_random_seed(rank)
    return keras.Sequential([
        keras.Input((None,) * rank + (channels,)),
        conv(4, kernel, padding="same", activation="relu"),
        conv(classes, kernel, padding="same"),
    ])


SHAPES = {1: (37,), 2: (19, 23), 3: (11, 13, 9)}


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_gaussian_blend_equals_whole_array_for_pointwise_model(rank):
    model = _keras_model(rank, kernel=1)  # receptive field 1: every window is exact everywhere
    array = np.random.default_rng(rank).normal(size=SHAPES[rank] + (2,)).astype(np.float32)
    whole = predict_logits(model, array)
    window = tuple(max(n // 2, 2) for n in SHAPES[rank])
    slid = predict_logits(model, array, window=window, blend="gaussian", batch_size=3)
    np.testing.assert_allclose(slid, whole, atol=1e-5)


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_margin_blend_equals_whole_array_where_receptive_field_fits(rank):
    model = _keras_model(rank, kernel=3)  # receptive radius 2
    array = np.random.default_rng(rank).normal(size=SHAPES[rank] + (2,)).astype(np.float32)
    whole = predict_logits(model, array)
    window = tuple(min(8, n) for n in SHAPES[rank])
    stride = tuple(max(w - 4, 1) for w in window)  # margin (window - stride) // 2 = 2
    slid = predict_logits(model, array, window=window, stride=stride, blend="margin")
    np.testing.assert_allclose(slid, whole, atol=1e-5)


def test_window_rank_must_match_the_model():
    model = _keras_model(3, kernel=1)
    with pytest.raises(SegtrainError, match="--window"):
        predict_logits(model, np.zeros((8, 8, 8, 2), np.float32), window=(4, 4))
    with pytest.raises(SegtrainError, match="spatial axes"):
        predict_logits(model, np.zeros((8, 8, 2), np.float32))
