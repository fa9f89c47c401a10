"""``data.format: coco_stuff``: COCO-Stuff 164k with the stuffthingmaps of the official release.

``images/<split>/<id>.jpg`` (the COCO 2017 images) and
``stuffthingmaps_trainval2017/<split>/<id>.png`` (splits ``train2017`` and ``val2017``): 'L'
masks whose value is the COCO category id - 1 (0..181), 255 unlabeled. The 171 ids in use
become classes 0..170 in order (mmsegmentation's ``coco_stuff164k.py`` conversion, done at
decode time); the 11 thing ids COCO never used are void.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from segtrain.data.formats.base import Sample
from segtrain.data.formats.decode import class_lookup
from segtrain.data.formats.images import image_format, scan_folders

if TYPE_CHECKING:  # type hints only: the config checks import this package
    from segtrain.config.schema import DataConfig

NUM_IDS = 182  # stuffthingmaps values 0..181
UNUSED_IDS = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)  # COCO thing ids 12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91, minus 1
USED_IDS = tuple(i for i in range(NUM_IDS) if i not in UNUSED_IDS)
MASK_DIR = "stuffthingmaps_trainval2017"


def scan(data_cfg: DataConfig, root: Path, split: str) -> tuple[list[Sample], list[str]]:
    return scan_folders(root / "images" / split, root / MASK_DIR / split, ".jpg", (".png",))


FORMAT = image_format("coco_stuff", scan, class_lookup(USED_IDS, NUM_IDS))
