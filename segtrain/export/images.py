"""The real images an export is checked and calibrated on: files, folders or a config's split, resized to the export size.

The parity check and int8 calibration read images the same way: files and folders given
by the user, else images spread evenly over a split of an experiment config, each resized
bilinearly to the export's (height, width) as ``data.resize`` resizes them in training.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

from segtrain.config import Config, load_config
from segtrain.data.formats.decode import read_image
from segtrain.data.formats.splits import list_samples, split_name
from segtrain.errors import SegtrainError
from segtrain.io_utils import IMAGE_EXTENSIONS, is_image_file, list_images


def read_resized(path: Path, spatial: Sequence[int], flag: str) -> np.ndarray:
    """An image file as RGB at the export's (height, width), resized bilinearly as ``data.resize`` does."""
    try:
        rgb = read_image(path)
    except SegtrainError as err:
        raise SegtrainError(f"{flag}: {err}") from None
    return np.asarray(Image.fromarray(rgb).resize((spatial[1], spatial[0]), Image.BILINEAR))


def expand_image_paths(paths: Iterable[str | os.PathLike], flag: str = "--images") -> list[Path]:
    """Image files and the images in folders; anything else is the user's ``flag`` mistake."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            found = list_images(p)
            if not found:
                raise SegtrainError(f"{flag} {p}: no images ({', '.join(IMAGE_EXTENSIONS)}) in the folder")
            out += found
        elif p.is_file() and is_image_file(p):
            out.append(p)
        else:
            raise SegtrainError(f"{flag} {p}: no such image file or folder")
    return out


def spread(items: Sequence, limit: int) -> list:
    """Up to ``limit`` of ``items`` spread evenly from the first to the last (not the first ``limit``)."""
    if not items:
        return []
    picks = sorted(set(np.linspace(0, len(items) - 1, min(limit, len(items))).round().astype(int).tolist()))
    return [items[i] for i in picks]


def split_images(config, split: str = "val", limit: int = 4) -> tuple[list[Path], str]:
    """Up to ``limit`` images spread evenly over a config's split, and their description."""
    if not isinstance(config, Config):
        config = load_config(config)
    samples, name = list_samples(config.data, split), split_name(config.data, split)
    picked = spread(samples, limit)
    return [s.image for s in picked], f"{len(picked)} images of the {name} split of {config.source}"
