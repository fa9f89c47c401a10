"""``data.format: voc``: PASCAL VOC's layout.

``JPEGImages/`` (``data.image_dir``), a mask folder (``data.mask_dir``, default
``SegmentationClass``) and ``ImageSets/Segmentation/<split>.txt`` with one id a line.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from segtrain.data.formats.base import Sample, read_lines
from segtrain.data.formats.images import image_format
from segtrain.errors import SegtrainError
from segtrain.io_utils import find_by_stem

if TYPE_CHECKING:  # type hints only: the config checks import this package
    from segtrain.config.schema import DataConfig


def scan(data_cfg: DataConfig, root: Path, split: str) -> tuple[list[Sample], list[str]]:
    ids = read_lines(root / "ImageSets" / "Segmentation" / f"{split}.txt")
    image_dir, mask_dir = root / data_cfg.image_dir, root / data_cfg.mask_dir
    for folder, key in ((image_dir, "data.image_dir"), (mask_dir, "data.mask_dir")):
        if not folder.is_dir():
            raise SegtrainError(f"{folder}: folder not found; check data.root and {key}")
    samples, problems = [], []
    for name in ids:
        image = image_dir / f"{name}.jpg"
        if not image.is_file():
            image = find_by_stem(image_dir, name) or image
        mask = mask_dir / f"{name}.png"
        if not image.is_file():
            problems.append(f"{image}: image listed in {split}.txt is missing")
        elif not mask.is_file():
            problems.append(f"{mask}: mask for {image.name} is missing (mask folder data.mask_dir={data_cfg.mask_dir})")
        else:
            samples.append(Sample(name, image, mask))
    return samples, problems


FORMAT = image_format("voc", scan)
