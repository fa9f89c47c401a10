"""Calibration images for int8 post-training quantization, shared by every format that quantizes.

Full-integer quantization fixes each tensor's int8 range from the values it takes on
representative inputs, so those must be real images as the model sees them (raw 0..255
RGB at the export size), never random noise: noise spans other ranges than street scenes.
``--calibration`` names a split of the experiment config (default: its val split) or a
folder; ``--calibration-images`` images are spread evenly over it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from segtrain.errors import SegtrainError
from segtrain.export.images import expand_image_paths, read_resized, split_images, spread
from segtrain.export.shapes import perms

CALIBRATION_IMAGES = 100  # default count: CamVid's val split has 101 images
QUANTIZE_CHOICES = ("none", "fp16", "int8")  # every --quantize value some format takes


def calibration_paths(source: str | os.PathLike | Sequence, config=None, count: int = CALIBRATION_IMAGES) -> tuple[list[Path], str]:
    """(up to ``count`` image files, their description) from a folder, image files, or a split name of ``config``."""
    if isinstance(source, (str, os.PathLike)) and not Path(source).exists():
        if config is None:
            raise SegtrainError(f"--calibration {source}: no such folder, and no experiment config whose split it could name "
                                "(pass --config, or export a checkpoint inside its run folder)")
        return split_images(config, str(source), limit=count)
    sources = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    paths = spread(expand_image_paths(sources, "--calibration"), count)
    return paths, f"{len(paths)} images of {', '.join(map(str, sources[:3]))}{', ...' if len(sources) > 3 else ''}"


def calibration_inputs(images: Sequence[str | os.PathLike], shape: Sequence, nchw: bool, count: int = CALIBRATION_IMAGES) -> Iterator[np.ndarray]:
    """Batches of one float32 image in the export's layout (channels-last ``shape``), for a converter to calibrate on.

    ``images`` are files or folders (``count`` spread evenly over them); an empty list is the
    user's mistake, as int8 without calibration would quantize blindly.
    """
    if not images:
        raise SegtrainError("--quantize int8 needs calibration images: pass --calibration (a split of the config or a folder)")
    paths = spread(expand_image_paths(images, "--calibration"), count)
    _, to_first = perms(len(shape) - 2)
    for path in paths:
        x = read_resized(path, shape[1:-1], "--calibration")[None].astype(np.float32)
        yield x.transpose(to_first) if nchw else x


def check_quantize(format: str, quantize: str, choices: Sequence[str]) -> None:
    """Refuse a ``--quantize`` value the format does not offer, naming those it does."""
    if quantize not in choices:
        raise SegtrainError(f"--quantize {quantize}: {format} exports take {' or '.join(choices)}")
