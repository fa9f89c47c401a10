"""What the 2-D image formats (voc, camvid, folders) share: a ``Sample`` is an image file and a
mask file; predictions are palette PNGs of class indices, read back as palette or grey PNGs.

A format of this kind is its split listing and nothing else: ``image_format(name, scan)``.
"""

from __future__ import annotations

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


def read(sample: Sample, data_cfg: DataConfig) -> Decoded:
    """The image (uint8, ``data.channels``) and its class-index mask, checked to have one size."""
    image, mask = read_pair(sample.image, sample.mask, data_cfg)
    return Decoded(image, mask)


def read_labels(sample: Sample, data_cfg: DataConfig) -> np.ndarray:
    return read_mask(sample.mask, data_cfg)


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


def image_format(name: str, scan: Scan) -> DatasetFormat:
    """A 2-D format of image and mask files listed by ``scan``."""
    return DatasetFormat(
        name=name,
        spatial_rank=2,
        default_channels=3,
        scan=scan,
        read=read,
        read_labels=read_labels,
        prediction_extension=".png",
        write_prediction=write_prediction,
        read_prediction=read_prediction,
        check_config=check_config,
    )
