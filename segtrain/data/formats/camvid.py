"""``data.format: camvid``: the SegNet list files, ``<split>.txt`` with ``image_path mask_path`` a line.

Their absolute paths (``/SegNet/CamVid/train/x.png``) belong to another machine, so each is
resolved inside ``data.root`` by its last two parts (``train/x.png``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from segtrain.data.formats.base import Sample, read_lines
from segtrain.data.formats.images import image_format

if TYPE_CHECKING:  # type hints only: the config checks import this package
    from segtrain.config.schema import DataConfig


def _inside_root(root: Path, listed: str) -> Path:
    """A list-file path, made relative to the root: as given if it exists, else by its last two parts."""
    path = Path(listed)
    if not path.is_absolute() and (root / path).exists():
        return root / path
    return root.joinpath(*path.parts[-2:])


def scan(data_cfg: DataConfig, root: Path, split: str) -> tuple[list[Sample], list[str]]:
    list_file = root / f"{split}.txt"
    samples, problems = [], []
    for number, line in enumerate(read_lines(list_file), start=1):
        parts = line.split()
        if len(parts) != 2:
            problems.append(f"{list_file}: line {number}: expected 'image_path mask_path', got {line!r}")
            continue
        image, mask = (_inside_root(root, p) for p in parts)
        if not image.is_file():
            problems.append(f"{image}: image listed in {list_file.name} line {number} is missing")
        elif not mask.is_file():
            problems.append(f"{mask}: mask listed in {list_file.name} line {number} is missing")
        else:
            samples.append(Sample(image.stem, image, mask))
    return samples, problems


FORMAT = image_format("camvid", scan)
