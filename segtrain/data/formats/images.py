"""What the 2-D image formats (voc, camvid, folders, cityscapes, ade20k, coco_stuff) share: a
``Sample`` is an image file and a mask file; predictions are palette PNGs of class indices, read
back as palette or grey PNGs.

A format of this kind is its split listing and, for a dataset whose mask values are not its
classes, a raw value -> class table: ``image_format(name, scan, label_lookup)``.
``scan_folders`` lists the common layout of an images folder beside a masks folder.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from segtrain.data.formats.base import DatasetFormat, Decoded, Sample, Scan
from segtrain.data.formats.decode import read_mask, read_pair
from segtrain.data.formats.palette import ColorTable
from segtrain.errors import SegtrainError
from segtrain.io_utils import open_image, write_png

if TYPE_CHECKING:  # type hints only: the config checks import this package
    from segtrain.config.schema import Config, DataConfig

CHANNELS = {1: "grey", 2: "grey + alpha", 3: "RGB", 4: "RGBA"}  # what data.channels may be for an image


def read(sample: Sample, data_cfg: DataConfig, label_lookup: np.ndarray | None = None) -> Decoded:
    """The image (uint8, ``data.channels``) and its class-index mask, checked to have one size."""
    image, mask = read_pair(sample.image, sample.mask, data_cfg, label_lookup)
    return Decoded(image, mask)


def read_labels(sample: Sample, data_cfg: DataConfig, label_lookup: np.ndarray | None = None) -> np.ndarray:
    return read_mask(sample.mask, data_cfg, label_lookup)


def scan_folders(
    image_dir: Path, mask_dir: Path, image_suffix: str, mask_suffixes: tuple[str, ...], depth: int = 0
) -> tuple[list[Sample], list[str]]:
    """Every ``<name><image_suffix>`` in ``image_dir`` (``depth`` sub-folders down, e.g. Cityscapes'
    cities), paired with ``<name><mask suffix>`` at the same place in ``mask_dir``: the first of
    ``mask_suffixes`` that exists. A split is its folders, so a missing one is an error."""
    for folder in (image_dir, mask_dir):
        if not folder.is_dir():
            raise SegtrainError(f"{folder}: folder not found; check data.root and the split name (data.train_split / data.val_split)")
    samples, problems = [], []
    for image in sorted(image_dir.glob("*/" * depth + "*" + image_suffix)):
        name = image.name.removesuffix(image_suffix)
        folder = mask_dir / image.parent.relative_to(image_dir)
        candidates = [folder / f"{name}{suffix}" for suffix in mask_suffixes]
        mask = next((m for m in candidates if m.is_file()), None)
        if mask is None:
            problems.append(f"{candidates[0]}: mask for {image.name} is missing")
        else:
            samples.append(Sample(name, image, mask))
    return samples, problems


def write_prediction(path: Path, labels: np.ndarray, decoded: Decoded | None = None, colors: ColorTable | None = None) -> Path:
    """A palette PNG whose pixel values are the classes (drawn in ``colors``, VOC's map without)."""
    table = colors if colors is not None else ColorTable.generic(int(labels.max(initial=0)) + 1)
    write_png(path, labels, palette=table.pil_palette())
    return path


def read_prediction(path: Path, sample: Sample, truth: np.ndarray, data_cfg: DataConfig) -> np.ndarray:
    """A predicted PNG -> uint8 class indices: palette indices ('P') or grey values ('L'), at the mask's size."""
    with open_image(path) as image:
        mode = image.mode
        pred = np.asarray(image).astype(np.uint8)
    if mode not in ("P", "L"):
        raise SegtrainError(
            f"{path}: prediction PNG is mode {mode!r}; save predictions as palette (P) or grey (L) PNGs of "
            "class indices (`segtrain convert-labels` turns colour PNGs into indices)"
        )
    if truth.shape != pred.shape:
        raise SegtrainError(
            f"{path}: prediction is {pred.shape[1]}x{pred.shape[0]} but ground truth {sample.mask} is "
            f"{truth.shape[1]}x{truth.shape[0]} (width x height); predict at the image's size"
        )
    return pred


def check_config(config: Config) -> None:
    """``data.channels``: a number of image channels (1, 2, 3 or 4)."""
    channels = config.data.channels
    if isinstance(channels, list):
        raise SegtrainError(f"{config.source}: key 'data.channels' must be a number of channels for format {config.data.format}, got {channels}")
    if channels is not None and channels not in CHANNELS:
        raise SegtrainError(
            f"{config.source}: key 'data.channels' must be 1 (grey), 2, 3 (RGB) or 4 (RGBA) for format {config.data.format}, got {channels}"
        )


def image_format(name: str, scan: Scan, label_lookup: np.ndarray | None = None) -> DatasetFormat:
    """A 2-D format of image and mask files listed by ``scan``; ``label_lookup`` (256 entries, see
    ``decode.class_lookup``) maps the dataset's raw mask values to classes before
    ``data.ignore_index`` and ``data.label_map``."""
    return DatasetFormat(
        name=name,
        spatial_rank=2,
        default_channels=3,
        scan=scan,
        read=functools.partial(read, label_lookup=label_lookup),
        read_labels=functools.partial(read_labels, label_lookup=label_lookup),
        prediction_extension=".png",
        write_prediction=write_prediction,
        read_prediction=read_prediction,
        check_config=check_config,
    )
