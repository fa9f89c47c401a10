"""N-D sliding-window inference (1-D signals, 2-D images, 3-D volumes): one window loop, two blends.

Windows of ``window`` steps start every ``stride`` along each axis, the last one flush with
the end, so every voxel is covered. Each window's logits are weighted and accumulated, and the
sum is divided by the summed weights:

- ``gaussian`` (nnU-Net / MONAI): every window is weighted by the same importance map, a
  Gaussian centred on the window with sigma = 1/8 of the window per axis, scaled to a
  maximum of 1 and floored at ``GAUSSIAN_FLOOR`` (a 3-D window's corner is e^-24 of its
  centre). Centres, where a patch-trained network has the most context, dominate the seams.
- ``margin``: a window's output is trusted (weight 1) except within ``(window - stride) // 2``
  steps of an inner edge (one that is not the array's border), where it is 0. For a fully
  convolutional model whose receptive radius is at most that margin, the result equals
  whole-array inference exactly.

Windows go through ``forward`` ``batch_size`` at a time and are accumulated in a band one window
high that moves down the first axis (``sliding_window_rows``), so apart from the result memory is
bounded by the batch and the band; an input read row by row (a GeoTIFF scene) is never whole.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np

BLENDS = ("gaussian", "margin")
GAUSSIAN_SIGMA = 1 / 8  # of the window, per axis (nnU-Net, MONAI sigma_scale=0.125)
GAUSSIAN_FLOOR = 1e-6  # relative to the centre: no voxel weight is ever 0 or denormal


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Window starts along one axis: every ``stride``, the last window flush with the end."""
    if size <= window:
        return [0]
    return list(range(0, size - window, stride)) + [size - window]


def gaussian_importance(window: Sequence[int]) -> np.ndarray:
    """The importance map of a window: a separable Gaussian, max 1, floored at ``GAUSSIAN_FLOOR``."""
    weight = np.ones((), dtype=np.float64)
    for size in window:
        offset = np.arange(size, dtype=np.float64) - (size - 1) / 2
        axis = np.exp(-0.5 * (offset / (size * GAUSSIAN_SIGMA)) ** 2)
        weight = np.multiply.outer(weight, axis)
    return np.maximum(weight / weight.max(), GAUSSIAN_FLOOR).astype(np.float32)


def _trust(start: int, window: int, size: int, margin: int) -> np.ndarray:
    """1 where a window's output is trusted: not within ``margin`` of an inner (non-border) edge."""
    weight = np.ones(window, dtype=np.float32)
    if start > 0:
        weight[:margin] = 0
    if start + window < size:
        weight[window - margin :] = 0
    return weight


def _margin_weight(corner: tuple[int, ...], window: Sequence[int], shape: Sequence[int], margins: Sequence[int]) -> np.ndarray:
    weight = np.ones((), dtype=np.float32)
    for start, win, size, margin in zip(corner, window, shape, margins):
        weight = np.multiply.outer(weight, _trust(start, win, size, margin))
    return weight


def sliding_window(
    forward: Callable[[np.ndarray], np.ndarray],
    array: np.ndarray,
    window: Sequence[int],
    stride: Sequence[int],
    *,
    batch_size: int = 4,
    blend: str = "gaussian",
) -> np.ndarray:
    """Blended ``(*spatial, K)`` outputs of ``forward`` over windows of a ``(*spatial, C)`` array.

    ``forward`` maps a ``(B, *window, C)`` batch to ``(B, *window, K)`` float logits. An array
    smaller than the window on some axis is padded at the end (edge values) and cropped back.
    """
    if blend not in BLENDS:
        raise ValueError(f"blend must be one of {BLENDS}, got {blend!r}")
    window, stride = tuple(int(w) for w in window), tuple(int(s) for s in stride)
    spatial = array.shape[:-1]
    if not (len(window) == len(stride) == len(spatial)):
        raise ValueError(f"window {window} and stride {stride} need one size per spatial axis of {array.shape}")
    pads = [max(w - n, 0) for w, n in zip(window, spatial)]
    if any(pads):  # a fixed-size model with a small array: pad, crop back
        padded = np.pad(array, [(0, p) for p in pads] + [(0, 0)], mode="edge")
        out = sliding_window(forward, padded, window, stride, batch_size=batch_size, blend=blend)
        return out[tuple(slice(0, n) for n in spatial)]
    result: list[np.ndarray] = []

    def keep(start: int, rows: np.ndarray) -> None:
        if not result:
            result.append(np.empty((*spatial, rows.shape[-1]), dtype=np.float32))
        result[0][start : start + len(rows)] = rows

    sliding_window_rows(forward, lambda a, b: array[a:b], spatial, window, stride, keep, batch_size=batch_size, blend=blend)
    return result[0]


def sliding_window_rows(
    forward: Callable[[np.ndarray], np.ndarray],
    read_rows: Callable[[int, int], np.ndarray],
    shape: Sequence[int],
    window: Sequence[int],
    stride: Sequence[int],
    emit: Callable[[int, np.ndarray], None],
    *,
    batch_size: int = 4,
    blend: str = "gaussian",
) -> None:
    """``sliding_window`` over an array that is never whole in memory: a GeoTIFF scene.

    ``read_rows(a, b)`` returns rows ``a..b-1`` (first axis) of a ``(*shape, C)`` array, every
    other axis whole; ``emit(a, logits)`` receives the blended ``(rows, *shape[1:], K)`` logits
    of rows ``a..`` as soon as no later window touches them, in order. Windows, weights and
    summation order are those of ``sliding_window``, so the logits are identical; memory is one
    window-high band of accumulators and input rows. Every axis must be at least the window.
    """
    window, stride, shape = tuple(window), tuple(stride), tuple(shape)
    corners = list(itertools.product(*(window_starts(n, w, s) for n, w, s in zip(shape, window, stride))))
    importance = gaussian_importance(window)[..., None] if blend == "gaussian" else None
    margins = [(w - s) // 2 for w, s in zip(window, stride)]
    band = window[0]
    total = None
    count = np.zeros((band, *shape[1:], 1), dtype=np.float32)
    base = 0  # the first row the accumulators hold; rows above it are emitted
    slabs: dict[int, np.ndarray] = {}

    def advance(to: int) -> None:  # rows base..to-1 are final: emit them, shift the band
        nonlocal base
        done = min(to, shape[0]) - base
        if done <= 0:
            return
        emit(base, total[:done] / count[:done])
        for acc in (total, count):
            acc[: band - done] = acc[done:].copy()
            acc[band - done :] = 0
        base += done

    for first in range(0, len(corners), batch_size):
        chunk = corners[first : first + batch_size]
        for start in {c[0] for c in chunk} - slabs.keys():
            slabs[start] = read_rows(start, start + band)
        rest = [tuple(slice(c, c + w) for c, w in zip(corner[1:], window[1:])) for corner in chunk]
        logits = forward(np.stack([slabs[corner[0]][(slice(None), *box)] for corner, box in zip(chunk, rest)]))
        if total is None:
            total = np.zeros((band, *shape[1:], logits.shape[-1]), dtype=np.float32)
        for corner, box, out in zip(chunk, rest, logits):
            advance(corner[0])
            weight = importance if importance is not None else _margin_weight(corner, window, shape, margins)[..., None]
            total[(slice(None), *box)] += out * weight  # the band starts at this window's first row
            count[(slice(None), *box)] += weight
        slabs = {start: slab for start, slab in slabs.items() if start >= chunk[-1][0]}
    advance(shape[0])
