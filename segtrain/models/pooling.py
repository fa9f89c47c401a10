"""SegNet's pooling with indices and the unpooling that puts values back where they came from.

Pure ``keras.ops`` for ranks 1 to 3: unlike ``tf.nn.max_pool_with_argmax`` both work in
1-D and 3-D, XLA-compile and export to ONNX (``segtrain.export`` rewrites ``MaxUnpool``).
"""

from __future__ import annotations

import itertools
from typing import Sequence

import keras
import ml_dtypes
from keras import ops

from segtrain.io_utils import per_axis
from segtrain.models.padding import crop_to
from segtrain.models.shapes import matched_shape, spatial_shape


def _window_view(x, pool: Sequence[int]):
    """(B, n1, ..., nr, C) -> (B, n1/p1, p1, ..., nr/pr, pr, C): a reshape, no copy."""
    shape = list(ops.shape(x))
    split = [shape[0]]
    for n, p in zip(shape[1:-1], pool):
        split += [n // p, p]
    return ops.reshape(x, split + [shape[-1]])


def _window_offsets(pool: Sequence[int]) -> list[tuple[int, ...]]:
    """Every position inside a window, in row-major order (the order of the flat indices)."""
    return list(itertools.product(*(range(p) for p in pool)))


@keras.saving.register_keras_serializable(package="segtrain")
class MaxPoolWithIndices(keras.layers.Layer):
    """Max pooling that also returns where each maximum came from (SegNet's encoder pool).

    Returns ``(pooled, indices)``; ``indices`` (int32) is the flat position of the maximum
    inside its window in row-major window order, so ties go to the first maximum in that
    order (the top-left one in 2-D). Sizes not divisible by the pool are padded at the end
    with the dtype's lowest finite value (never chosen, and no ``inf * 0`` NaNs later), so
    the output size is ``ceil(n / pool)``. Each window position is a strided view of the
    input; the maximum and its first position come from elementwise ``maximum`` / ``where``
    over those views, with no transpose and no argmax (both slow on CPU, and a float argmax
    does not convert to ONNX).
    """

    def __init__(self, pool_size=2, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = pool_size

    def call(self, x):
        rank = len(x.shape) - 2
        pool = per_axis(self.pool_size, rank, "pool_size")
        spatial = spatial_shape(x, rank)
        pads = [[0, 0]] + [[0, (-n) % p] for n, p in zip(spatial, pool)] + [[0, 0]]
        # ml_dtypes.finfo also knows bfloat16 (mixed_bfloat16), which np.finfo does not.
        lowest = float(ml_dtypes.finfo(keras.backend.standardize_dtype(x.dtype)).min)
        view = _window_view(ops.pad(x, pads, constant_values=lowest), pool)
        every = slice(None)
        parts = [view[(every,) + tuple(i for o in off for i in (every, o)) + (every,)] for off in _window_offsets(pool)]
        pooled = parts[0]
        for part in parts[1:]:
            pooled = ops.maximum(pooled, part)
        indices = ops.full(ops.shape(pooled), len(parts) - 1, dtype="int32")
        for flat in range(len(parts) - 2, -1, -1):  # last to first, so the first maximum wins
            indices = ops.where(ops.equal(parts[flat], pooled), flat, indices)
        return pooled, indices

    def compute_output_shape(self, input_shape):
        pool = per_axis(self.pool_size, len(input_shape) - 2, "pool_size")
        spatial = tuple(None if n is None else -(-n // p) for n, p in zip(input_shape[1:-1], pool))
        out = (input_shape[0],) + spatial + (input_shape[-1],)
        return out, out

    def compute_output_spec(self, x):
        shape, _ = self.compute_output_shape(x.shape)
        return (keras.KerasTensor(shape, dtype=x.dtype), keras.KerasTensor(shape, dtype="int32"))

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size}


@keras.saving.register_keras_serializable(package="segtrain")
class MaxUnpool(keras.layers.Layer):
    """SegNet's unpooling: each value goes back where its encoder pool took it from.

    Called on ``[values, indices, reference]``: ``indices`` from ``MaxPoolWithIndices`` and
    ``reference`` the tensor that was pooled (only its spatial shape is used, to crop
    the padding of odd sizes). Every other position is zero. One ``where`` per window
    position, then the positions are interleaved back by stacking and a reshape.
    """

    def __init__(self, pool_size=2, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = pool_size

    def call(self, inputs):
        x, indices, reference = inputs
        rank = len(x.shape) - 2
        pool = per_axis(self.pool_size, rank, "pool_size")
        zero = ops.zeros_like(x)
        parts = {off: ops.where(ops.equal(indices, flat), x, zero) for flat, off in enumerate(_window_offsets(pool))}
        # Interleave the last axis first: stacking right after spatial axis a puts p_a beside
        # n_a/p_a, which ends at (B, n1/p1, p1, ..., nr/pr, pr, C).
        for axis in range(rank, 0, -1):
            parts = {
                prefix: ops.stack([parts[prefix + (o,)] for o in range(pool[axis - 1])], axis=axis + 1)
                for prefix in _window_offsets(pool[: axis - 1])
            }
        shape = list(ops.shape(x))
        y = ops.reshape(parts[()], [shape[0]] + [n * p for n, p in zip(shape[1:-1], pool)] + [shape[-1]])
        return crop_to(y, spatial_shape(reference, rank))

    def compute_output_shape(self, input_shapes):
        x_shape, _, ref_shape = input_shapes
        return matched_shape(x_shape, ref_shape)

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size}
