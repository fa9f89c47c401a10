"""What the array formats (NIfTI volumes, 1-D series) share: integer label arrays -> class
indices, and the per-channel z-score of ``data.normalize``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from segtrain.data.formats.decode import lookup_table
from segtrain.data.formats.palette import VOID
from segtrain.errors import SegtrainError

if TYPE_CHECKING:  # type hints only: the config checks import this package
    from segtrain.config.schema import DataConfig

_IDENTITY = np.arange(256, dtype=np.uint8)


def labels_to_classes(raw: np.ndarray, path: Path, data_cfg: DataConfig) -> np.ndarray:
    """Integer-valued label array -> uint8 class indices (255 = void), or a ``SegtrainError`` naming ``path``."""
    if raw.dtype.kind not in "iubf":
        raise SegtrainError(f"{path}: label values of type {raw.dtype} are not class indices; store labels as integers")
    with np.errstate(invalid="ignore"):  # NaN and out-of-range floats cast to anything: the comparison catches them
        values = raw.astype(np.uint8)
    bad = values != raw
    if bad.any():
        wrong = raw[bad]
        fractional = ~np.isfinite(wrong) | (wrong != np.round(wrong)) if raw.dtype.kind == "f" else np.zeros(wrong.shape, bool)
        if fractional.any():
            raise SegtrainError(
                f"{path}: label file has {int(fractional.sum())} non-integer value(s) (e.g. {float(wrong[fractional][0])}); labels must be "
                "class indices, check that this is the label file and that it was not resampled with interpolation"
            )
        raise SegtrainError(f"{path}: label values range {raw.min():g}..{raw.max():g}, outside 0..255; labels must be class indices")
    table = lookup_table(data_cfg)
    classes = values if np.array_equal(table, _IDENTITY) else table[values]
    counts = np.bincount(classes.ravel(), minlength=256)
    bad_values = np.flatnonzero(counts[data_cfg.num_classes : VOID]) + data_cfg.num_classes
    if bad_values.size:
        raise SegtrainError(
            f"{path}: label values {', '.join(map(str, bad_values.tolist()))} are neither a class (0..{data_cfg.num_classes - 1}) "
            "nor void 255; check data.num_classes, data.ignore_index and data.label_map"
        )
    return classes


def zscore_channel(channel: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """One channel (any shape) -> float32 with mean 0, std 1 inside ``mask`` (everywhere without one), 0 outside."""
    values = channel if mask is None else channel[mask]
    mean = float(values.mean(dtype=np.float64)) if values.size else 0.0
    std = float(values.std(dtype=np.float64)) if values.size else 1.0
    out = (channel.astype(np.float32) - np.float32(mean)) * np.float32(1.0 / max(std, 1e-8))
    if mask is not None:
        out[~mask] = 0.0
    return out


def zscore(image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Per-channel (last axis) mean 0, std 1 inside ``mask`` (everywhere without one); 0 outside the mask."""
    return np.stack([zscore_channel(image[..., c], mask) for c in range(image.shape[-1])], axis=-1)
