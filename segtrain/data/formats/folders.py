"""``data.format: folders``: an images folder and a masks folder matched by file stem, any common image extension.

The split is a sub-folder (``<root>/<split>/<image_dir>`` or ``<root>/<image_dir>/<split>``)
or a list of stems in ``<root>/<split>.txt``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from segtrain.data.formats.base import Sample, read_lines
from segtrain.data.formats.images import image_format
from segtrain.errors import SegtrainError
from segtrain.io_utils import IMAGE_EXTENSIONS

if TYPE_CHECKING:  # type hints only: the config checks import this package
    from segtrain.config.schema import DataConfig


def _images_in(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS}


def scan(data_cfg: DataConfig, root: Path, split: str) -> tuple[list[Sample], list[str]]:
    layouts = [
        (root / split / data_cfg.image_dir, root / split / data_cfg.mask_dir),
        (root / data_cfg.image_dir / split, root / data_cfg.mask_dir / split),
    ]
    stems = None
    for image_dir, mask_dir in layouts:
        if image_dir.is_dir():
            break
    else:
        image_dir, mask_dir = root / data_cfg.image_dir, root / data_cfg.mask_dir
        if not (root / f"{split}.txt").is_file():
            raise SegtrainError(
                f"{root}: no split '{split}' found; expected {layouts[0][0]}, {layouts[1][0]} "
                f"or a list of file stems in {root / (split + '.txt')}"
            )
        stems = read_lines(root / f"{split}.txt")
    if not image_dir.is_dir() or not mask_dir.is_dir():
        missing = image_dir if not image_dir.is_dir() else mask_dir
        raise SegtrainError(f"{missing}: folder not found; check data.root, data.image_dir and data.mask_dir")
    images, masks = _images_in(image_dir), _images_in(mask_dir)
    if stems is None:
        stems = sorted(images)
        if not stems:
            raise SegtrainError(f"{image_dir}: no images ({', '.join(IMAGE_EXTENSIONS)}) in the folder")
    samples, problems = [], []
    for stem in stems:
        if stem not in images:
            problems.append(f"{image_dir / stem}: no image with this stem")
        elif stem not in masks:
            problems.append(f"{mask_dir / stem}: no mask for {images[stem].name}")
        else:
            samples.append(Sample(stem, images[stem], masks[stem]))
    return samples, problems


FORMAT = image_format("folders", scan)
