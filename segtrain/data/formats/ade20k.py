"""``data.format: ade20k``: the SceneParsing release ADEChallengeData2016.

``images/<split>/ADE_*.jpg`` and ``annotations/<split>/ADE_*.png`` (splits ``training`` and
``validation``), 'L' masks with 0 = "other" (void) and 1..150 the classes, which become
0..149 (mmsegmentation's ``reduce_zero_label``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from segtrain.data.formats.base import Sample
from segtrain.data.formats.decode import class_lookup
from segtrain.data.formats.images import image_format, scan_folders

if TYPE_CHECKING:  # type hints only: the config checks import this package
    from segtrain.config.schema import DataConfig

NUM_CLASSES = 150


def scan(data_cfg: DataConfig, root: Path, split: str) -> tuple[list[Sample], list[str]]:
    return scan_folders(root / "images" / split, root / "annotations" / split, ".jpg", (".png",))


FORMAT = image_format("ade20k", scan, class_lookup(range(1, NUM_CLASSES + 1), NUM_CLASSES + 1))
