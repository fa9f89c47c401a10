"""What a dataset format is: the few functions the rest of segtrain asks of one, and what formats share.

A format (``data.format``) is one ``DatasetFormat`` in the table (``formats/table.py``): how to
list a split, decode a sample, decode its labels alone, how many spatial axes its samples
have, and how a prediction is written and read back. Config checks, sample plans, patches,
``check-dataset``, ``predict`` and ``evaluate`` ask the table; none of them names a format.

Modules of this package never import ``segtrain.config`` at run time (the config checks ask
the table, so the table sits below the config); ``DataConfig`` appears in type hints only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from segtrain.errors import SegtrainError

if TYPE_CHECKING:  # type hints only: the config checks import this package
    from segtrain.config.schema import Config, DataConfig


@dataclass(frozen=True)
class Sample:
    """One 2-D example: where its image and its mask are."""

    name: str
    image: Path
    mask: Path


@dataclass
class Decoded:
    """A decoded sample: ``image`` (*spatial, C), ``label`` (*spatial) uint8 with 255 = void,
    ``region`` (*spatial) bool where patches may be drawn (None: everywhere) and ``meta``, what
    the format needs to write a prediction in the sample's space (a NIfTI affine and header)."""

    image: np.ndarray
    label: np.ndarray
    region: np.ndarray | None = None
    meta: Any = None


Scan = Callable[["DataConfig", Path, str], tuple[list, list[str]]]


def _no_checks(config: Config) -> None:
    """A format with no keys of its own."""


@dataclass(frozen=True)
class DatasetFormat:
    """One entry of the format table.

    ``scan(data_cfg, root, split)`` lists a split: the samples that have every file and one
    message per missing file (``check-dataset`` shows them all; training stops at the first).
    ``read(sample, data_cfg)`` decodes a sample with every check; ``read_labels`` decodes its
    labels alone (class statistics, ``check-dataset``, ``evaluate --pred-dir``).
    ``write_prediction(path, labels, decoded, colors)`` writes predicted class indices to
    ``path`` (which ends in ``prediction_extension``); ``read_prediction(path, sample, truth,
    data_cfg)`` reads one back, checked against the ground truth. ``check_config(config)``
    checks the format's own keys when a config is loaded; ``own_keys`` are the optional
    ``data.*`` keys (null by default) that only some formats read: setting one that this
    format does not read is an error.

    ``patches``: trained on random patches of ``data.patch`` and predicted whole by N-D sliding
    windows (volumes, series); otherwise whole (or cropped) 2-D images with albumentations.
    ``normalizes_itself``: the data layer scales the inputs (``data.normalize``), so the
    model's ImageNet mean/std default does not apply.

    ``input_cases(path, data_cfg)``: the cases that a ``segtrain predict --input`` path holds (a
    case's file or folder, or a folder of them), without labels; ``read`` decodes them with
    every label void. None: the format's inputs are 2-D image files.
    ``open_scene(sample, data_cfg)``: for samples too large for memory (GeoTIFF scenes), an
    object with ``shape`` (rows, columns), ``read(rows, cols) -> Decoded`` for one window and
    ``prediction_writer(path)``, a context manager taking ``(first row, uint8 rows)`` in order.
    Training then reads random windows (``data/loading/window_plans.py``) and ``predict``
    streams the scene; None: samples are decoded whole by ``read``.
    """

    name: str
    spatial_rank: int
    default_channels: int
    scan: Scan
    read: Callable[[Any, DataConfig], Decoded]
    read_labels: Callable[[Any, DataConfig], np.ndarray]
    prediction_extension: str
    write_prediction: Callable[..., Path]
    read_prediction: Callable[[Path, Any, np.ndarray, DataConfig], np.ndarray]
    check_config: Callable[[Config], None] = _no_checks
    own_keys: tuple[str, ...] = ()
    patches: bool = False
    normalizes_itself: bool = False
    input_cases: Callable[[Path, DataConfig], list] | None = None
    open_scene: Callable[[Any, DataConfig], Any] | None = None


def read_lines(path: Path) -> list[str]:
    """The non-empty, non-comment lines of a split list (UTF-8, a byte-order mark allowed)."""
    if not path.is_file():
        raise SegtrainError(f"{path}: split file not found; check data.root and the split name")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")  # a byte-order mark (Windows editors) is not part of the first id
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise SegtrainError(f"{path}: line {line}: not UTF-8 text (byte 0x{data[err.start]:02x}); save the list as UTF-8") from None
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    if not lines:
        raise SegtrainError(f"{path}: split file is empty; list one sample per line")
    return lines


def check_patch_keys(config: Config, rank: int) -> None:
    """``data.patch`` and the patch augmentation axes against a patch format's ``rank`` spatial axes."""
    src, data = config.source, config.data
    if data.patch is not None and (len(data.patch) != rank or min(data.patch) < 1):
        raise SegtrainError(f"{src}: key 'data.patch' must be {rank} positive size(s) for format {data.format}, got {data.patch}")
    if any(not 0 <= a < rank for a in data.patch_flip) or len(set(data.patch_flip)) != len(data.patch_flip):
        raise SegtrainError(f"{src}: key 'data.patch_flip' must list distinct spatial axes in 0..{rank - 1}, got {data.patch_flip}")
    plane = data.patch_rot90
    if plane is not None and (len(plane) != 2 or plane[0] == plane[1] or any(not 0 <= a < rank for a in plane)):
        raise SegtrainError(f"{src}: key 'data.patch_rot90' must be two different spatial axes in 0..{rank - 1} (e.g. [0, 1]) or null, got {plane}")

