"""The input shape of an export: the model's own, sizes it leaves open fixed, and the NCHW layout.

Exports have a fixed spatial size (OpenCV DNN wants static shapes): a model built for any
size takes ``--size``, else the training size of the run its checkpoint belongs to.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from segtrain.errors import SegtrainError
from segtrain.config import load_config
from segtrain.inference import run_config_path
from segtrain.io_utils import format_size


def export_shape(model, size: Sequence[int] | None, batch: int | None, size_hint: str = "") -> tuple:
    """Channels-last input shape of the export: the model's own, ``size`` where it has ``None``.

    A single-number ``size`` applies to every spatial axis. ``size_hint`` ends the error
    for a dynamic model without a size (say where a size could have come from).
    """
    spatial = list(model.input_shape[1:-1])
    channels = model.input_shape[-1]
    if size is not None:
        size = [int(s) for s in size]
        size = size * len(spatial) if len(size) == 1 else size
        if len(size) != len(spatial) or min(size) <= 0:
            raise SegtrainError(f"--size {format_size(size)}: the model has {len(spatial)} spatial axes; give that many positive sizes, e.g. {format_size([64] * len(spatial))}")
        fixed = [(s, t) for s, t in zip(spatial, size) if s is not None and s != t]
        if fixed:
            raise SegtrainError(f"--size {format_size(size)}: the model was built for a fixed input size {format_size(spatial)}; omit --size or use that size")
        spatial = size
    if any(s is None for s in spatial):
        raise SegtrainError(
            f"the model's input size is dynamic {tuple(model.input_shape[1:])}; pass --size "
            f"(height x width, e.g. --size 360x480) to fix it for export{size_hint}"
        )
    return (batch, *spatial, channels)


def training_size(config) -> tuple[tuple[int, ...] | None, str]:
    """(size the run trained at: data.resize, else data.crop, else None; which key said so)."""
    for key in ("resize", "crop"):
        value = getattr(config.data, key)
        if value:
            return tuple(int(v) for v in value), f"data.{key}"
    return None, ""


def default_size(checkpoint: str | os.PathLike) -> tuple[tuple[int, ...] | None, str]:
    """(export size from the checkpoint's run config, or None; what to tell the user if None)."""
    path = run_config_path(checkpoint)
    if path is None:
        return None, f"; no run config at {Path(checkpoint).resolve().parent.parent / 'config.yaml'} to take the training size from"
    size, _ = training_size(load_config(path))
    if size is None:
        return None, f"; {path} sets neither data.resize nor data.crop, so pass the size the model was trained at"
    return size, ""


def perms(rank: int) -> tuple[list[int], list[int]]:
    """(channels-first -> channels-last, channels-last -> channels-first) for ``rank`` spatial axes."""
    to_last = [0, *range(2, rank + 2), 1]
    to_first = [0, rank + 1, *range(1, rank + 1)]
    return to_last, to_first


def exported_layout(shape_nhwc: Sequence, nchw: bool) -> list:
    """A channels-last shape as the export lays it out (channels first when ``nchw``)."""
    return [shape_nhwc[i] for i in perms(len(shape_nhwc) - 2)[1]] if nchw else list(shape_nhwc)


def exported_input_shape(shape: Sequence, nchw: bool) -> tuple[tuple, int | None]:
    """(channels-last shape, fixed batch or None) of an exported input shape."""
    shape = list(shape)
    batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
    if nchw:
        to_last, _ = perms(len(shape) - 2)
        shape = [shape[i] for i in to_last]
    return tuple(shape), batch
