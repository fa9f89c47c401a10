"""``data.format: cityscapes``: the official layout, label ids mapped to the 19 train ids.

``leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png`` with its mask beside it in
``gtFine/<split>/<city>/``: ``..._gtFine_labelIds.png`` as shipped (ids 0..33, mapped to the
19 evaluated classes, every other id void), or, when an image has none,
``..._gtFine_labelTrainIds.png`` from cityscapesScripts' ``createTrainIdLabelImgs`` (already
classes, 255 void). Chosen per image, so no key is needed.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from segtrain.data.formats import images
from segtrain.data.formats.base import Decoded, Sample
from segtrain.data.formats.decode import class_lookup

if TYPE_CHECKING:  # type hints only: the config checks import this package
    from segtrain.config.schema import DataConfig

# The label id of each train id 0..18 (cityscapesScripts helpers/labels.py): road 7, sidewalk 8, ...
LABEL_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
NUM_LABEL_IDS = 34  # ids 0..33; the one id -1 (license plate) never appears in the PNGs

# mask suffix -> raw value -> class table, in the order they are looked for
MASKS: dict[str, np.ndarray | None] = {
    "_gtFine_labelIds.png": class_lookup(LABEL_IDS, NUM_LABEL_IDS),
    "_gtFine_labelTrainIds.png": None,  # train ids are the classes already
}


def scan(data_cfg: DataConfig, root: Path, split: str) -> tuple[list[Sample], list[str]]:
    return images.scan_folders(root / "leftImg8bit" / split, root / "gtFine" / split, "_leftImg8bit.png", tuple(MASKS), depth=1)


def _lookup(sample: Sample) -> np.ndarray | None:
    return next(table for suffix, table in MASKS.items() if sample.mask.name.endswith(suffix))


def read(sample: Sample, data_cfg: DataConfig) -> Decoded:
    return images.read(sample, data_cfg, _lookup(sample))


def read_labels(sample: Sample, data_cfg: DataConfig) -> np.ndarray:
    return images.read_labels(sample, data_cfg, _lookup(sample))


FORMAT = dataclasses.replace(images.image_format("cityscapes", scan), read=read, read_labels=read_labels)
