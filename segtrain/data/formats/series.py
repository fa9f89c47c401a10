"""1-D signals (``data.format: series``): one file per signal -> (T, C) float32 + (T,) uint8 labels.

A signal is a ``.npy`` array of shape (T,) or (T, C), or a ``.csv`` (commas) / ``.txt``
(whitespace or commas) table of T rows and C columns; ``data.channels`` says C (default 1).
Labels come from ``data.label``, either

- a per-signal file, a name containing ``{name}`` (``{name}.labels.npy``): T integer class
  indices, checked like image masks (``data.ignore_index``, ``data.label_map``, 255 = void); or
- a change-point table (TSSB's ``desc.txt``): lines ``name,window_size,cp1,cp2,...``; the
  change points split the series into segments and segment k (0-based) labels its steps.
  The table then also lists the signals of the split.

The signals of a split are in ``<root>/<split>`` (``.`` for the root itself) or, with a
list of names in ``<root>/<split>.txt``, in the root. With ``data.normalize: zscore`` each
channel is scaled to mean 0, std 1 over the signal.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from segtrain.data.formats.base import DatasetFormat, Decoded, check_patch_keys, read_lines
from segtrain.data.formats.ndarrays import labels_to_classes, zscore
from segtrain.data.formats.nifti import integer_prediction
from segtrain.data.formats.palette import VOID
from segtrain.errors import SegtrainError
from segtrain.io_utils import atomic_write

if TYPE_CHECKING:  # type hints only: the config checks import this package
    from segtrain.config.schema import Config, DataConfig

SIGNAL_EXTENSIONS = (".npy", ".csv", ".txt")


@dataclass(frozen=True)
class SeriesSample:
    """One signal file and its labels: a per-step label file, or change points from a table."""

    name: str
    image: Path  # the signal file
    label: Path | None  # the label file, or the change-point table; None: a signal to predict, labels void
    change_points: tuple[int, ...] | None = None  # set when ``label`` is a change-point table


def change_points_to_labels(change_points: list[int] | tuple[int, ...], length: int) -> np.ndarray:
    """Strictly increasing change points in 1..length-1 -> the 0-based segment index of each of ``length`` steps."""
    cps = np.asarray(change_points, dtype=np.int64)
    if cps.size and (cps[0] < 1 or cps[-1] > length - 1 or np.any(np.diff(cps) <= 0)):
        raise ValueError(f"change points {cps.tolist()} must increase strictly within 1..{length - 1}")
    return np.searchsorted(cps, np.arange(length), side="right").astype(np.int64)


def read_change_point_table(path: Path) -> dict[str, tuple[int, ...]]:
    """``name,window_size,cp1,cp2,...`` lines -> {name: change points}; a malformed line is an error naming it."""
    table: dict[str, tuple[int, ...]] = {}
    for number, line in enumerate(read_lines(path), start=1):
        parts = [p.strip() for p in line.split(",")]
        try:
            if len(parts) < 2 or not parts[0]:
                raise ValueError
            int(parts[1])
            cps = tuple(int(p) for p in parts[2:])
        except ValueError:
            raise SegtrainError(f"{path}: line {number}: expected 'name,window_size,cp1,cp2,...' with integers, got {line!r}") from None
        if parts[0] in table:
            raise SegtrainError(f"{path}: line {number}: series {parts[0]!r} listed twice; keep one line per series")
        table[parts[0]] = cps
    return table


def _find_signal(folder: Path, name: str) -> Path | None:
    for ext in SIGNAL_EXTENSIONS:
        if (folder / f"{name}{ext}").is_file():
            return folder / f"{name}{ext}"
    return None


def scan_series(data_cfg: DataConfig, root: Path, split: str) -> tuple[list[SeriesSample], list[str]]:
    """The signals of a split with their label source, and one message per missing file."""
    folder, list_file = root / split, root / f"{split}.txt"
    names = None
    if not folder.is_dir():
        if not list_file.is_file():
            raise SegtrainError(f"{root}: no split '{split}' found; expected a folder of signals {folder} or a list of names {list_file}")
        folder, names = root, read_lines(list_file)
    template = data_cfg.label
    table = None
    if "{name}" not in template:
        table_path = folder / template if (folder / template).is_file() else root / template
        if not table_path.is_file():
            raise SegtrainError(f"{folder / template}: change-point table (data.label) not found; give it, or a per-signal label file like '{{name}}.labels.npy'")
        table = read_change_point_table(table_path)
    if names is None:
        if table is not None:
            names = list(table)
        else:
            names = sorted({p.stem for p in _signal_files(folder, template)})
            if not names:
                raise SegtrainError(f"{folder}: no signals ({', '.join(SIGNAL_EXTENSIONS)}) in split '{split}'")
    samples, problems = [], []
    for name in names:
        signal = _find_signal(folder, name)
        if signal is None:
            problems.append(f"{folder / name}: signal file ({'/'.join(SIGNAL_EXTENSIONS)}) is missing")
        elif table is not None:
            if name not in table:
                problems.append(f"{table_path}: no change points for signal {name}; add a line '{name},window_size,cp1,...'")
            else:
                samples.append(SeriesSample(name, signal, table_path, table[name]))
        else:
            label = folder / template.replace("{name}", name)
            if not label.is_file():
                problems.append(f"{label}: label file for signal {signal.name} is missing (data.label={template})")
            else:
                samples.append(SeriesSample(name, signal, label))
    return samples, problems


def _signal_files(folder: Path, template: str | None) -> list[Path]:
    """The signal files of a folder, not counting per-signal label files (``data.label``)."""
    files = [p for p in folder.iterdir() if p.suffix in SIGNAL_EXTENSIONS and p.is_file()]
    label_files = {folder / template.replace("{name}", p.stem) for p in files} if template else set()
    return sorted((p for p in files if p not in label_files), key=lambda p: p.stem)


def input_cases(path: Path, data_cfg: DataConfig) -> list[SeriesSample]:
    """``predict --input``: a signal file or a folder of them (per-signal label files skipped), without labels."""
    files = [path] if path.is_file() and path.suffix in SIGNAL_EXTENSIONS else _signal_files(path, data_cfg.label) if path.is_dir() else []
    if not files:
        raise SegtrainError(f"{path}: --input is neither a signal file ({'/'.join(SIGNAL_EXTENSIONS)}) nor a folder holding some")
    return [SeriesSample(p.stem, p, None) for p in files]


def _load_table(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)
    text = path.read_text(encoding="utf-8-sig")
    delimiter = "," if path.suffix == ".csv" or "," in text.split("\n", 1)[0] else None
    return np.loadtxt(text.splitlines(), delimiter=delimiter, dtype=np.float64, ndmin=2)


def read_signal(path: Path, data_cfg: DataConfig) -> np.ndarray:
    """A signal file -> (T, C) float32 with C = ``data.channels``, finite values only."""
    try:
        data = _load_table(path)
    except (ValueError, OSError, UnicodeDecodeError) as err:
        raise SegtrainError(f"{path}: not a readable signal ({' '.join(str(err).split())}); store numbers, one row per time step") from None
    if data.ndim == 1:
        data = data[:, None]
    if data.ndim != 2 or data.dtype.kind not in "iufb":
        raise SegtrainError(f"{path}: expected a numeric (T,) or (T, C) signal, got {data.dtype} of shape {data.shape}")
    channels = data_cfg.channels or FORMAT.default_channels
    if data.shape[1] != channels:
        raise SegtrainError(f"{path}: signal has {data.shape[1]} channel(s) (columns) but data.channels is {channels}; set data.channels: {data.shape[1]}")
    if data.shape[0] < 2:
        raise SegtrainError(f"{path}: signal has {data.shape[0]} time step(s); a series needs at least 2")
    data = data.astype(np.float32)
    if not np.isfinite(data).all():
        raise SegtrainError(f"{path}: signal has NaN or infinite values; fill or drop them first")
    return data


def read_series(sample: SeriesSample, data_cfg: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    """Decode one signal and its labels: ((T, C) float32, (T,) uint8 with 255 = void), lengths checked."""
    signal = read_signal(sample.image, data_cfg)
    length = signal.shape[0]
    if sample.label is None:
        raw = np.full(length, VOID, np.uint8)
    elif sample.change_points is not None:
        try:
            raw = change_points_to_labels(sample.change_points, length)
        except ValueError as err:
            raise SegtrainError(f"{sample.label}: signal {sample.name} ({length} steps): {err}; fix its line") from None
    else:
        try:
            raw = np.load(sample.label, allow_pickle=False)
        except (ValueError, OSError) as err:
            raise SegtrainError(f"{sample.label}: not a readable .npy label array ({err})") from None
        raw = raw.reshape(-1) if raw.ndim == 2 and 1 in raw.shape else raw
        if raw.shape != (length,):
            raise SegtrainError(f"{sample.label}: {raw.shape} labels for a signal of {length} steps ({sample.image.name}); give one label per step")
    labels = raw if sample.label is None else labels_to_classes(raw, sample.label, data_cfg)
    if data_cfg.normalize == "zscore":
        signal = zscore(signal, None)
    return signal, labels


def read(sample: SeriesSample, data_cfg: DataConfig) -> Decoded:
    signal, labels = read_series(sample, data_cfg)
    return Decoded(signal, labels)


def read_labels(sample: SeriesSample, data_cfg: DataConfig) -> np.ndarray:
    return read_series(sample, data_cfg)[1]


def write_prediction(path: Path, labels: np.ndarray, decoded: Decoded | None = None, colors=None) -> Path:
    """A ``.npy`` array of per-step class indices."""
    def save(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, labels)

    atomic_write(path, save, fsync=False)
    return path


def read_prediction(path: Path, sample: SeriesSample, truth: np.ndarray, data_cfg: DataConfig) -> np.ndarray:
    """A predicted ``.npy`` array -> uint8 classes, one per step of the signal."""
    try:
        pred = np.load(path, allow_pickle=False)
    except Exception as err:  # noqa: BLE001 - numpy raises many types for a bad file
        raise SegtrainError(f"{path}: not a readable prediction ({type(err).__name__}: {err})") from None
    if pred.shape != truth.shape:
        raise SegtrainError(f"{path}: prediction has shape {pred.shape} but the ground truth {truth.shape}; predict the whole case")
    return integer_prediction(path, pred)


def check_config(config: Config) -> None:
    """``data.channels`` is a number of columns, ``data.label`` a label file or change-point table; patches are 1-D."""
    src, data = config.source, config.data
    if isinstance(data.channels, list):
        raise SegtrainError(f"{src}: key 'data.channels' must be a number of channels for format series, got {data.channels}")
    if data.channels is not None and data.channels < 1:
        raise SegtrainError(f"{src}: key 'data.channels' must be at least 1 for format series, got {data.channels}")
    if data.label is None:
        raise SegtrainError(f"{src}: key 'data.label' must be a per-signal label file such as '{{name}}.labels.npy' or a change-point table such as desc.txt for format series")
    check_patch_keys(config, 1)


FORMAT = DatasetFormat(
    name="series",
    spatial_rank=1,
    default_channels=1,
    scan=scan_series,
    read=read,
    read_labels=read_labels,
    prediction_extension=".npy",
    write_prediction=write_prediction,
    read_prediction=read_prediction,
    check_config=check_config,
    own_keys=("label", "patch"),
    patches=True,
    normalizes_itself=True,
    input_cases=input_cases,
)
