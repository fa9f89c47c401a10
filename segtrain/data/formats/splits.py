"""A split of a dataset, through the format table: ordered samples, or every problem with them.

Only paths are listed; nothing is decoded, so a split of any size costs a directory scan.
``scan_samples`` collects every problem (for ``check-dataset``); ``list_samples`` raises on
the first one. The built-in sample dataset (``data.sample: true``) is generated on first use.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from segtrain.data.formats.sample_dataset import ensure_sample_dataset
from segtrain.data.formats.table import get_format
from segtrain.errors import SegtrainError

if TYPE_CHECKING:  # type hints only: the config checks import this package
    from segtrain.config.schema import DataConfig


def split_name(data_cfg: DataConfig, split: str) -> str:
    """``"train"``/``"val"`` mean the configured ``data.train_split``/``data.val_split``; any other name is literal."""
    return {"train": data_cfg.train_split, "val": data_cfg.val_split}.get(split, split)


def dataset_root(data_cfg: DataConfig) -> Path:
    """The dataset folder; the built-in sample dataset is generated there on first use."""
    root = Path(data_cfg.root)
    if not root.is_dir():
        if data_cfg.sample:
            return ensure_sample_dataset(root)
        raise SegtrainError(f"data.root: dataset folder {root} does not exist; set data.root in the config or with --set")
    return root


def scan_samples(data_cfg: DataConfig, split: str) -> tuple[list, list[str]]:
    """All samples of a split that have every file, and one message per missing file.

    2-D formats give ``Sample`` (name, image, mask); others their own kind, which also has
    ``name`` and ``image`` (the file that identifies it when splits are compared)."""
    root = dataset_root(data_cfg)
    return get_format(data_cfg.format).scan(data_cfg, root, split_name(data_cfg, split))


def list_samples(data_cfg: DataConfig, split: str) -> list:
    """The ordered samples of a split; a missing file or an empty split is a ``SegtrainError``."""
    samples, problems = scan_samples(data_cfg, split)
    if problems:
        more = f" (and {len(problems) - 1} more; run `segtrain check-dataset` for all)" if len(problems) > 1 else ""
        raise SegtrainError(problems[0] + more)
    if not samples:
        raise SegtrainError(f"{data_cfg.root}: split '{split_name(data_cfg, split)}' has no samples")
    return samples


def iter_labels(data_cfg: DataConfig, split: str) -> Iterator[np.ndarray]:
    """Decoded labels (masks, label volumes, per-step labels) of a split, one at a time (class statistics without loading the dataset)."""
    fmt = get_format(data_cfg.format)
    for sample in list_samples(data_cfg, split):
        yield fmt.read_labels(sample, data_cfg)
