"""Dataset layouts -> ordered lists of (image path, mask path) pairs.

Five layouts, chosen by ``data.format``:

- ``voc``: ``JPEGImages/``, a mask folder (``data.mask_dir``, default
  ``SegmentationClass``) and ``ImageSets/Segmentation/<split>.txt`` with one id a line.
- ``camvid``: the SegNet list files ``<split>.txt`` with ``image_path mask_path`` a line.
  Their absolute paths (``/SegNet/CamVid/train/x.png``) belong to another machine, so each
  is resolved inside ``data.root`` by its last two parts (``train/x.png``).
- ``folders``: an images folder and a masks folder matched by file stem, any common image
  extension. The split is a sub-folder (``<root>/<split>/<image_dir>`` or
  ``<root>/<image_dir>/<split>``) or a list of stems in ``<root>/<split>.txt``.
- ``nifti``: one folder per 3-D case (``data/nifti.py``); ``series``: one file per 1-D
  signal (``data/series.py``). Their samples are ``VolumeCase`` and ``SeriesSample``.

Only paths are listed here; nothing is decoded, so a split of any size costs a directory
scan. ``scan_samples`` collects every problem (for ``check-dataset``); ``list_samples``
raises on the first one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from segtrain.config import DataConfig
from segtrain.errors import SegtrainError

from segtrain.io_utils import IMAGE_EXTENSIONS


@dataclass(frozen=True)
class Sample:
    """One training example: where its image and its mask are."""

    name: str
    image: Path
    mask: Path


def split_name(data_cfg: DataConfig, split: str) -> str:
    """``"train"``/``"val"`` mean the configured ``data.train_split``/``data.val_split``; any other name is literal."""
    return {"train": data_cfg.train_split, "val": data_cfg.val_split}.get(split, split)


def dataset_root(data_cfg: DataConfig) -> Path:
    """The dataset folder; the built-in sample dataset is generated there on first use."""
    root = Path(data_cfg.root)
    if not root.is_dir():
        if data_cfg.sample:
            from segtrain.data.synthetic import ensure_sample_dataset

            return ensure_sample_dataset(root)
        raise SegtrainError(f"data.root: dataset folder {root} does not exist; set data.root in the config or with --set")
    return root


def read_lines(path: Path) -> list[str]:
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


def _find_by_stem(folder: Path, stem: str) -> Path | None:
    for ext in IMAGE_EXTENSIONS + tuple(e.upper() for e in IMAGE_EXTENSIONS):
        candidate = folder / f"{stem}{ext}"
        if candidate.is_file():
            return candidate
    return None


def _voc(data_cfg: DataConfig, root: Path, split: str) -> tuple[list[Sample], list[str]]:
    ids = read_lines(root / "ImageSets" / "Segmentation" / f"{split}.txt")
    image_dir, mask_dir = root / data_cfg.image_dir, root / data_cfg.mask_dir
    for folder, key in ((image_dir, "data.image_dir"), (mask_dir, "data.mask_dir")):
        if not folder.is_dir():
            raise SegtrainError(f"{folder}: folder not found; check data.root and {key}")
    samples, problems = [], []
    for name in ids:
        image = image_dir / f"{name}.jpg"
        if not image.is_file():
            image = _find_by_stem(image_dir, name) or image
        mask = mask_dir / f"{name}.png"
        if not image.is_file():
            problems.append(f"{image}: image listed in {split}.txt is missing")
        elif not mask.is_file():
            problems.append(f"{mask}: mask for {image.name} is missing (mask folder data.mask_dir={data_cfg.mask_dir})")
        else:
            samples.append(Sample(name, image, mask))
    return samples, problems


def _inside_root(root: Path, listed: str) -> Path:
    """A list-file path, made relative to the root: as given if it exists, else by its last two parts."""
    path = Path(listed)
    if not path.is_absolute() and (root / path).exists():
        return root / path
    return root.joinpath(*path.parts[-2:])


def _camvid(data_cfg: DataConfig, root: Path, split: str) -> tuple[list[Sample], list[str]]:
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


def _images_in(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS}


def _folders(data_cfg: DataConfig, root: Path, split: str) -> tuple[list[Sample], list[str]]:
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


def _nifti(data_cfg: DataConfig, root: Path, split: str):
    from segtrain.data.nifti import scan_cases  # nibabel only for volume datasets

    return scan_cases(data_cfg, root, split)


def _series(data_cfg: DataConfig, root: Path, split: str):
    from segtrain.data.series import scan_series

    return scan_series(data_cfg, root, split)


_LAYOUTS = {"voc": _voc, "camvid": _camvid, "folders": _folders, "nifti": _nifti, "series": _series}


def scan_samples(data_cfg: DataConfig, split: str) -> tuple[list[Sample], list[str]]:
    """All samples of a split that have every file, and one message per missing file.

    For ``nifti`` and ``series`` the samples are ``VolumeCase`` / ``SeriesSample`` (they also
    have ``name`` and ``image``)."""
    root = dataset_root(data_cfg)
    return _LAYOUTS[data_cfg.format](data_cfg, root, split_name(data_cfg, split))


def list_samples(data_cfg: DataConfig, split: str) -> list[Sample]:
    """The ordered samples of a split; a missing file or an empty split is a ``SegtrainError``."""
    samples, problems = scan_samples(data_cfg, split)
    if problems:
        more = f" (and {len(problems) - 1} more; run `segtrain check-dataset` for all)" if len(problems) > 1 else ""
        raise SegtrainError(problems[0] + more)
    if not samples:
        raise SegtrainError(f"{data_cfg.root}: split '{split_name(data_cfg, split)}' has no samples")
    return samples
