"""Shape arithmetic shared by the zoo's layers, for channels-last tensors of any rank.

Layers take their rank (1, 2 or 3 spatial axes) from the input shape, so the same shape
rules would otherwise be rewritten in every ``build`` and ``compute_output_shape``.
Static shapes are tuples with ``None`` for unknown sizes; ``spatial_shape`` reads a
tensor's sizes at call time, where unknown sizes are scalar tensors.
"""

from __future__ import annotations

from typing import Sequence

import keras
from keras import ops

from segtrain.io_utils import per_axis

Shape = Sequence[int | None]


def rank_of(input_shape: Shape, layer: keras.layers.Layer) -> int:
    """Number of spatial axes of a ``(batch, *spatial, channels)`` input; 1 to 3 or a ValueError."""
    rank = len(input_shape) - 2
    if rank not in (1, 2, 3):
        raise ValueError(
            f"{layer.name}: expected a (batch, *spatial, channels) input with 1 to 3 spatial "
            f"axes, got shape {tuple(input_shape)}"
        )
    return rank


def spatial_shape(x, rank: int) -> list:
    """Spatial sizes of tensor ``x``: static ints where known, scalar tensors where ``None``."""
    return list(ops.shape(x))[1 : 1 + rank]


def scaled_shape(input_shape: Shape, factor, channels: int | None) -> tuple:
    """Output shape of an upsampler: every spatial size times its ``factor``, ``channels`` channels.

    ``channels=None`` keeps the input's channel count (fixed upsampling).
    """
    factors = per_axis(factor, len(input_shape) - 2, "factor")
    spatial = tuple(None if n is None else n * f for n, f in zip(input_shape[1:-1], factors))
    return (input_shape[0],) + spatial + (input_shape[-1] if channels is None else channels,)


def matched_shape(x_shape: Shape, reference_shape: Shape) -> tuple:
    """Shape of ``x`` brought to the spatial size of ``reference`` (crop, unpool, broadcast)."""
    return tuple(x_shape[:1]) + tuple(reference_shape[1:-1]) + (x_shape[-1],)
