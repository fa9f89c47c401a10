"""NIfTI volumes (``data.format: nifti``): case folders -> channels-last float32 volume + uint8 labels.

A case is one folder holding one file per channel (``data.channels``, stacked in that order),
a label file (``data.label``) and optionally a region mask (``data.mask``, e.g. a brain mask).
File names may contain ``{name}`` for the case's folder name (``{name}_seg.nii.gz``). The cases of
a split are the sub-folders of ``<root>/<split>``, or the folders listed in ``<root>/<split>.txt``
(one path a line, relative to the root).

Voxels keep nibabel's array order (no reorientation): the volume is ``(X, Y, Z, C)`` and the
affine and header of the first channel file come along for writing predictions in the same
space. Every file of a case must have the same shape and (within 1e-3) the same affine: a label
drawn in another voxel grid trains garbage without any error. Labels are class indices: a
float-stored label with a non-integer value is an error, as is a value that is neither a class
nor void after ``data.ignore_index``/``data.label_map``. With ``data.normalize: zscore`` each
channel is shifted and scaled to mean 0, std 1 inside the mask (the whole volume without one)
and set to 0 outside it, as nnU-Net does for MRI.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from segtrain.data.formats.base import DatasetFormat, Decoded, check_patch_keys, read_lines
from segtrain.data.formats.ndarrays import labels_to_classes, zscore_channel
from segtrain.data.formats.palette import VOID
from segtrain.errors import SegtrainError
from segtrain.io_utils import TMP_SUFFIX

if TYPE_CHECKING:  # type hints only: the config checks import this package
    from segtrain.config.schema import Config, DataConfig
AFFINE_TOLERANCE = 1e-3  # mm; headers written by different tools round the affine differently


@dataclass(frozen=True)
class VolumeCase:
    """One NIfTI case: its channel files in config order, its label file and its optional region mask."""

    name: str
    channels: tuple[Path, ...]
    label: Path | None  # None: a case to predict (``predict --input``), its labels all void
    mask: Path | None = None

    @property
    def image(self) -> Path:
        """The first channel file: what identifies the case when splits are compared."""
        return self.channels[0]

    @property
    def files(self) -> tuple[Path, ...]:
        return self.channels + tuple(p for p in (self.label, self.mask) if p is not None)


@dataclass
class Volume:
    """A decoded case: ``image`` (X, Y, Z, C) float32, ``label`` (X, Y, Z) uint8 (255 = void),
    ``mask`` (X, Y, Z) bool or None, and the first channel file's ``affine`` and ``header``."""

    image: np.ndarray
    label: np.ndarray
    mask: np.ndarray | None
    affine: np.ndarray
    header: object


def _file_in(folder: Path, pattern: str) -> Path:
    return folder / pattern.replace("{name}", folder.name)


def _case_folders(root: Path, split: str) -> list[Path]:
    folder, list_file = root / split, root / f"{split}.txt"
    if folder.is_dir():
        cases = sorted(p for p in folder.iterdir() if p.is_dir())
        if not cases:
            raise SegtrainError(f"{folder}: no case folders in split '{split}'; put one folder per case there")
        return cases
    if list_file.is_file():
        return [root / line for line in read_lines(list_file)]
    raise SegtrainError(f"{root}: no split '{split}' found; expected a folder of cases {folder} or a list of case folders {list_file}")


def scan_cases(data_cfg: DataConfig, root: Path, split: str) -> tuple[list[VolumeCase], list[str]]:
    """The cases of a split that have every file, and one message per missing file or folder."""
    cases, problems = [], []
    for folder in _case_folders(root, split):
        if not folder.is_dir():
            problems.append(f"{folder}: case folder listed in {split}.txt is missing")
            continue
        case = VolumeCase(
            name=folder.name,
            channels=tuple(_file_in(folder, c) for c in data_cfg.channels),
            label=_file_in(folder, data_cfg.label),
            mask=None if data_cfg.mask is None else _file_in(folder, data_cfg.mask),
        )
        missing = [p for p in case.files if not p.is_file()]
        if missing:
            problems.append(f"{missing[0]}: file of case {folder.name} is missing (data.channels, data.label, data.mask name the files of a case)")
        else:
            cases.append(case)
    return cases, problems


def _load(path: Path):
    import nibabel as nib  # only volume datasets need it

    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)  # applies scl_slope/scl_inter like get_fdata, keeps integer types
    except Exception as err:  # nibabel raises many types (ImageFileError, EOFError, zlib.error, ...)
        raise SegtrainError(f"{path}: not a readable NIfTI file ({type(err).__name__}: {err}); re-export it as .nii or .nii.gz") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise SegtrainError(f"{path}: expected a 3-D volume, got shape {data.shape}; store one channel per file (data.channels)")
    return img, data


def _same_grid(path: Path, img, shape: tuple, ref_path: Path, ref_img, ref_shape: tuple) -> None:
    if shape != ref_shape:
        raise SegtrainError(f"{path}: shape {shape} differs from {ref_path.name} {ref_shape} of the same case; resample the files of a case to one grid")
    if not np.allclose(img.affine, ref_img.affine, atol=AFFINE_TOLERANCE):
        diff = float(np.abs(img.affine - ref_img.affine).max())
        raise SegtrainError(
            f"{path}: affine differs from {ref_path.name} of the same case (by up to {diff:.4g}); the files are not in one voxel space, resample them"
        )


def read_case(case: VolumeCase, data_cfg: DataConfig) -> Volume:
    """Decode and check one case: same grid for every file, integer labels in range, finite channels."""
    ref_img, ref = _load(case.channels[0])
    grid = (case.channels[0], ref_img, ref.shape)
    channels = [np.asarray(ref, dtype=np.float32)]
    for path in case.channels[1:]:
        img, data = _load(path)
        _same_grid(path, img, data.shape, *grid)
        channels.append(np.asarray(data, dtype=np.float32))
    for path, channel in zip(case.channels, channels):
        if not np.isfinite(channel).all():
            raise SegtrainError(f"{path}: channel has NaN or infinite values; fix or re-export the volume")
    if case.label is None:
        label = np.full(ref.shape, VOID, np.uint8)
    else:
        label_img, raw = _load(case.label)
        _same_grid(case.label, label_img, raw.shape, *grid)
        label = labels_to_classes(raw, case.label, data_cfg)
    mask = None
    if case.mask is not None:
        mask_img, mask_raw = _load(case.mask)
        _same_grid(case.mask, mask_img, mask_raw.shape, *grid)
        mask = np.asarray(mask_raw) != 0
        if not mask.any():
            raise SegtrainError(f"{case.mask}: region mask is empty; check data.mask")
    if data_cfg.normalize == "zscore":  # per channel while each is contiguous, before interleaving
        channels = [zscore_channel(c, mask) for c in channels]
    image = np.stack(channels, axis=-1)
    return Volume(image=image, label=label, mask=mask, affine=np.asarray(ref_img.affine), header=ref_img.header)


def _is_nifti(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith((".nii", ".nii.gz"))


def _stem(path: Path) -> str:
    return path.name[: -len(".nii.gz")] if path.name.lower().endswith(".nii.gz") else path.stem


def input_cases(path: Path, data_cfg: DataConfig) -> list[VolumeCase]:
    """``predict --input``: a case folder holding the ``data.channels`` files, a folder of case
    folders, or (with one channel) a NIfTI file or a folder of them; no labels, no region mask."""
    def case(folder: Path) -> VolumeCase:
        return VolumeCase(folder.name, tuple(_file_in(folder, c) for c in data_cfg.channels), None)

    single = len(data_cfg.channels) == 1
    if _is_nifti(path) and single:
        return [VolumeCase(_stem(path), (path,), None)]
    if path.is_dir():
        if _file_in(path, data_cfg.channels[0]).is_file():
            cases = [case(path)]
        else:
            cases = [case(p) for p in sorted(path.iterdir()) if p.is_dir()]
            if not cases and single:
                cases = [VolumeCase(_stem(p), (p,), None) for p in sorted(path.iterdir()) if _is_nifti(p)]
        if cases:
            missing = next((f for c in cases for f in c.channels if not f.is_file()), None)
            if missing is not None:
                raise SegtrainError(f"{missing}: channel file of a case is missing (data.channels names the files of a case)")
            return cases
    what = "a NIfTI file, " if single else ""
    raise SegtrainError(f"{path}: --input must be {what}a case folder holding {', '.join(data_cfg.channels)} (data.channels), or a folder of them")


def write_label_volume(path: str | Path, label: np.ndarray, affine: np.ndarray, header) -> Path:
    """Save a (X, Y, Z) class-index volume as uint8 NIfTI in the source's space (its affine and header).

    The header's data type and scaling are reset (a float32 source header would store the
    labels as floats, and a scaled one would rescale them); written through a temporary
    sibling and renamed, so a killed run leaves no half-written file.
    """
    import nibabel as nib  # only volume datasets need it

    path = Path(path)
    label = np.asarray(label)
    if label.ndim != 3 or label.dtype.kind not in "iub" or label.min(initial=0) < 0 or label.max(initial=0) > 255:
        raise ValueError(f"expected an integer (X, Y, Z) label volume in 0..255, got {label.dtype} {label.shape}")
    out_header = header.copy()
    out_header.set_data_dtype(np.uint8)
    img = nib.Nifti1Image(label.astype(np.uint8), affine, out_header)
    img.header.set_slope_inter(1.0, 0.0)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    tmp = path.with_name(f".{path.name}{TMP_SUFFIX}{suffix}")  # nibabel picks gzip by the extension
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(tmp))
    tmp.replace(path)
    return path


def read(case: VolumeCase, data_cfg: DataConfig) -> Decoded:
    """The case as a ``Decoded``: its region mask bounds the patches, its affine and header come along for writing."""
    volume = read_case(case, data_cfg)
    return Decoded(volume.image, volume.label, region=volume.mask, meta=volume)


def read_labels(case: VolumeCase, data_cfg: DataConfig) -> np.ndarray:
    """The case's labels, after every check of the case (its files on one grid)."""
    return read_case(case, data_cfg).label


def write_prediction(path: Path, labels: np.ndarray, decoded: Decoded, colors=None) -> Path:
    """A uint8 label volume in the case's space (``colors`` do not apply to NIfTI)."""
    return write_label_volume(path, labels, decoded.meta.affine, decoded.meta.header)


def read_prediction(path: Path, case: VolumeCase, truth: np.ndarray, data_cfg: DataConfig) -> np.ndarray:
    """A predicted label volume -> uint8 classes, on the case's grid (shape and affine of its first channel)."""
    import nibabel as nib  # only volume datasets need it

    try:
        img = nib.load(str(path))
        pred = np.asanyarray(img.dataobj)
        reference = nib.load(str(case.image)).affine
    except Exception as err:  # noqa: BLE001 - nibabel raises many types for a bad file
        raise SegtrainError(f"{path}: not a readable prediction ({type(err).__name__}: {err})") from None
    if pred.shape != truth.shape:
        raise SegtrainError(f"{path}: prediction has shape {pred.shape} but the ground truth {truth.shape}; predict the whole case")
    if not np.allclose(img.affine, reference, atol=AFFINE_TOLERANCE):
        raise SegtrainError(f"{path}: affine differs from the case's; the prediction is in another voxel space (write it with the source affine)")
    return integer_prediction(path, pred)


def integer_prediction(path: Path, pred: np.ndarray) -> np.ndarray:
    """Predicted class indices stored in any numeric type -> uint8; fractions or values outside 0..255 are errors."""
    if pred.dtype.kind == "f" and not np.array_equal(pred, np.round(pred)):
        raise SegtrainError(f"{path}: prediction holds non-integer values; save class indices")
    if pred.size and (pred.min() < 0 or pred.max() > 255):
        raise SegtrainError(f"{path}: prediction values {pred.min()}..{pred.max()} are not class indices 0..255")
    return pred.astype(np.uint8)


def check_config(config: Config) -> None:
    """``data.channels`` lists a case's channel files, ``data.label`` names its label file; patches are 3-D."""
    src, data = config.source, config.data
    if not isinstance(data.channels, list) or not data.channels:
        raise SegtrainError(f"{src}: key 'data.channels' must list the channel files of a case for format nifti, e.g. [t1.nii.gz, flair.nii.gz]")
    if len(set(data.channels)) != len(data.channels):
        raise SegtrainError(f"{src}: key 'data.channels' names a file twice: {data.channels}; list each channel once")
    if data.label is None:
        raise SegtrainError(f"{src}: key 'data.label' must name the label file of a case for format nifti, e.g. seg.nii.gz")
    check_patch_keys(config, 3)


FORMAT = DatasetFormat(
    name="nifti",
    spatial_rank=3,
    default_channels=1,  # never used: data.channels must list the files
    scan=scan_cases,
    read=read,
    read_labels=read_labels,
    prediction_extension=".nii.gz",
    write_prediction=write_prediction,
    read_prediction=read_prediction,
    check_config=check_config,
    own_keys=("label", "mask", "patch"),
    patches=True,
    normalizes_itself=True,
    input_cases=input_cases,
)
