"""GeoTIFF scenes (``data.format: geotiff``): multi-band rasters with a label raster, read window by window.

A split is ``<root>/<split>/images/<name>.tif`` with ``<root>/<split>/labels/<name>.tif`` (or a
list of names in ``<root>/<split>.txt``, the files in ``<root>/images`` and ``<root>/labels``).
``data.bands`` picks the image bands (1-based, rasterio's numbering) in model-channel order;
``data.band_norm`` scales them: ``{mean: [...], std: [...]}`` or ``{min: [...], max: [...]}``
(one value per band; null: raw values). The label raster holds class indices on the image's
grid (same size, transform and CRS; checked). Pixels that are nodata in any chosen band (the
file's nodata value, mask band or NaN) are void (255) with inputs 0, and predicted as 255 (the
written prediction's nodata); nodata in the label raster is void.

Scenes are never decoded whole for training or ``predict``: ``open_scene`` gives windows
(rasterio windowed reads) and a streamed, tiled, compressed uint8 GeoTIFF writer that keeps
the source's CRS and transform.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from segtrain.data.formats.base import DatasetFormat, Decoded, check_patch_keys, read_lines
from segtrain.data.formats.ndarrays import labels_to_classes
from segtrain.data.formats.nifti import integer_prediction
from segtrain.data.formats.palette import VOID
from segtrain.errors import SegtrainError
from segtrain.io_utils import TMP_SUFFIX

if TYPE_CHECKING:  # type hints only: the config checks import this package
    from segtrain.config.schema import Config, DataConfig

EXTENSIONS = (".tif", ".tiff")
BLOCK = 256  # tile size of written predictions (GDAL's usual)
NORMS = ({"mean", "std"}, {"min", "max"})


@dataclass(frozen=True)
class GeoScene:
    """One scene: its multi-band image and its label raster (None for ``predict --input``)."""

    name: str
    image: Path
    label: Path | None = None


def _rasterio():
    import rasterio  # optional: only GeoTIFF datasets need it (extra "geotiff")

    return rasterio


def _open(path: Path):
    rasterio = _rasterio()
    try:
        return rasterio.open(path)
    except rasterio.errors.RasterioIOError as err:
        raise SegtrainError(f"{path}: not a readable GeoTIFF ({' '.join(str(err).split())}); check the file") from None


def _tifs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS)


def _same_stem(folder: Path, stem: str) -> Path:
    return next((folder / f"{stem}{ext}" for ext in EXTENSIONS if (folder / f"{stem}{ext}").is_file()), folder / f"{stem}.tif")


def scan_scenes(data_cfg: DataConfig, root: Path, split: str) -> tuple[list[GeoScene], list[str]]:
    """The scenes of a split that have a label raster, and one message per missing file."""
    folder, list_file = root / split, root / f"{split}.txt"
    if (folder / "images").is_dir():
        images = _tifs(folder / "images")
    elif list_file.is_file():
        folder = root
        images = [_same_stem(root / "images", name) for name in read_lines(list_file)]
    else:
        raise SegtrainError(f"{root}: no split '{split}' found; expected {folder / 'images'} (and labels/) or a list of scene names {list_file}")
    if not images:
        raise SegtrainError(f"{folder / 'images'}: no GeoTIFF scenes ({', '.join(EXTENSIONS)}) in split '{split}'")
    scenes, problems = [], []
    for image in images:
        label = _same_stem(folder / "labels", image.stem)
        if not image.is_file():
            problems.append(f"{image}: scene listed in {list_file.name} is missing")
        elif not label.is_file():
            problems.append(f"{label}: label raster of scene {image.name} is missing (labels/<name>.tif beside images/)")
        else:
            scenes.append(GeoScene(image.stem, image, label))
    return scenes, problems


def input_cases(path: Path, data_cfg: DataConfig) -> list[GeoScene]:
    """``predict --input``: a GeoTIFF or a folder of them, without labels."""
    files = [path] if path.is_file() else _tifs(path) if path.is_dir() else []
    if not files:
        raise SegtrainError(f"{path}: --input is neither a GeoTIFF ({', '.join(EXTENSIONS)}) nor a folder holding some")
    return [GeoScene(f.stem, f) for f in files]


def _band_scaling(data_cfg: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    """(offset, scale) per band: inputs become (value - offset) * scale."""
    norm, n = data_cfg.band_norm, len(data_cfg.bands)
    if norm is None:
        return np.zeros(n, np.float32), np.ones(n, np.float32)
    if "mean" in norm:
        return np.asarray(norm["mean"], np.float32), 1 / np.asarray(norm["std"], np.float32)
    low = np.asarray(norm["min"], np.float32)
    return low, 1 / (np.asarray(norm["max"], np.float32) - low)


@dataclass
class Scene:
    """An opened scene: its grid, and windows read from disk on demand (thread-safe: every read opens the files)."""

    sample: GeoScene
    data_cfg: Any
    shape: tuple[int, int]
    profile: dict

    def read(self, rows: slice, cols: slice) -> Decoded:
        """The window ``rows`` x ``cols``: normalised (h, w, C) float32 image, uint8 labels (void without a label raster), valid pixels as ``region``."""
        window = _rasterio().windows.Window.from_slices(rows, cols)
        with _open(self.sample.image) as ds:
            data = ds.read(list(self.data_cfg.bands), window=window, masked=True, out_dtype="float32")
        values = np.ma.getdata(data)  # (C, h, w), scaled in place: a band of a scene may be large
        valid = ~np.ma.getmaskarray(data).any(axis=0) & np.isfinite(values).all(axis=0)
        offset, scale = _band_scaling(self.data_cfg)
        values -= offset[:, None, None]
        values *= scale[:, None, None]
        values[:, ~valid] = 0
        image = np.moveaxis(values, 0, -1)
        if self.sample.label is None:
            return Decoded(image, np.full(valid.shape, VOID, np.uint8), region=valid, meta=self.profile)
        with _open(self.sample.label) as ds:
            raw = ds.read(1, window=window, masked=True)
        labels = labels_to_classes(np.ma.filled(raw, self.data_cfg.ignore_index), self.sample.label, self.data_cfg)
        labels[~valid | np.ma.getmaskarray(raw)] = VOID
        return Decoded(image, labels, region=valid, meta=self.profile)

    def prediction_writer(self, path: Path) -> contextlib.AbstractContextManager:
        return label_writer(path, self.profile)


@contextlib.contextmanager
def label_writer(path: Path, profile: dict) -> Iterator[Any]:
    """``write(first_row, rows)`` in order -> a tiled, deflate-compressed uint8 GeoTIFF at ``path`` with
    the CRS and transform of ``profile`` (255 = nodata), written in whole tile rows through a
    temporary sibling renamed at the end (a killed run leaves no half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{TMP_SUFFIX}.tif")
    height, width = profile["height"], profile["width"]
    pending, written = np.zeros((0, width), np.uint8), 0
    try:
        with _rasterio().open(tmp, "w", **profile) as out:
            def flush(rows: int) -> None:
                nonlocal pending, written
                out.write(pending[:rows], 1, window=_rasterio().windows.Window(0, written, width, rows))
                pending, written = pending[rows:], written + rows

            def write(start: int, rows: np.ndarray) -> None:
                nonlocal pending
                if start != written + len(pending):
                    raise ValueError(f"rows must arrive in order: got row {start}, expected {written + len(pending)}")
                pending = np.concatenate([pending, np.asarray(rows, np.uint8)])
                if len(pending) >= BLOCK:
                    flush(len(pending) // BLOCK * BLOCK)

            yield write
            if len(pending):
                flush(len(pending))
        if written != height:
            raise ValueError(f"wrote {written} of {height} rows of {path}")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)  # an error leaves no temporary (after the rename there is none)


def _grid(ds) -> tuple:
    return ds.height, ds.width, ds.crs, ds.transform


def open_scene(sample: GeoScene, data_cfg: DataConfig) -> Scene:
    """Check a scene's files once (bands present, label raster on the image's grid) and give its windows."""
    with _open(sample.image) as ds:
        if max(data_cfg.bands) > ds.count:
            raise SegtrainError(f"{sample.image}: data.bands asks for band {max(data_cfg.bands)} but the scene has {ds.count} band(s)")
        grid = _grid(ds)
        tile = {"tiled": True, "blockxsize": BLOCK, "blockysize": BLOCK} if min(ds.height, ds.width) >= BLOCK else {}
        profile = {"driver": "GTiff", "height": ds.height, "width": ds.width, "count": 1, "dtype": "uint8", "crs": ds.crs,
                   "transform": ds.transform, "nodata": VOID, "compress": "deflate", **tile}
    if sample.label is not None:
        with _open(sample.label) as ds:
            if _grid(ds) != grid:
                raise SegtrainError(
                    f"{sample.label}: label raster grid {ds.width}x{ds.height} {ds.crs} {tuple(ds.transform)[:6]} differs from "
                    f"{sample.image.name} {grid[1]}x{grid[0]} {grid[2]} {tuple(grid[3])[:6]}; warp it onto the image's grid"
                )
    return Scene(sample, data_cfg, (grid[0], grid[1]), profile)


def read(sample: GeoScene, data_cfg: DataConfig) -> Decoded:
    """The whole scene (small scenes, ``evaluate``); training and ``predict`` read windows instead."""
    scene = open_scene(sample, data_cfg)
    return scene.read(slice(0, scene.shape[0]), slice(0, scene.shape[1]))


def read_labels(sample: GeoScene, data_cfg: DataConfig) -> np.ndarray:
    return read(sample, data_cfg).label


def write_prediction(path: Path, labels: np.ndarray, decoded: Decoded, colors=None) -> Path:
    """A whole (H, W) prediction as a uint8 GeoTIFF with the scene's CRS and transform (``colors`` do not apply);
    ``predict`` streams scenes through ``label_writer`` instead, with nodata pixels 255."""
    with label_writer(path, {**decoded.meta, "height": labels.shape[0], "width": labels.shape[1]}) as write:
        write(0, labels)
    return Path(path)


def read_prediction(path: Path, sample: GeoScene, truth: np.ndarray, data_cfg: DataConfig) -> np.ndarray:
    """A predicted GeoTIFF -> uint8 classes, checked to be on the scene's grid."""
    with _open(path) as ds:
        pred = ds.read(1)
        grid = _grid(ds)
    if pred.shape != truth.shape:
        raise SegtrainError(f"{path}: prediction has shape {pred.shape} but the ground truth {truth.shape}; predict the whole scene")
    with _open(sample.image) as ds:
        if grid != _grid(ds):
            raise SegtrainError(f"{path}: prediction grid differs from scene {sample.image.name} (CRS or transform); write it on the scene's grid")
    return integer_prediction(path, pred)


def check_config(config: Config) -> None:
    """``data.bands`` lists 1-based bands once each; ``data.band_norm`` has one value per band; patches are 2-D."""
    src, data = config.source, config.data
    bands = data.bands
    if not bands or min(bands) < 1 or len(set(bands)) != len(bands):
        raise SegtrainError(f"{src}: key 'data.bands' must list distinct 1-based band numbers for format geotiff, e.g. [1, 2, 3], got {bands}")
    if data.channels is not None:
        raise SegtrainError(f"{src}: key 'data.channels' does not apply to format geotiff; data.bands says the channels")
    norm = data.band_norm
    if norm is not None:
        if set(norm) not in NORMS or any(len(v) != len(bands) for v in norm.values()):
            raise SegtrainError(f"{src}: key 'data.band_norm' must be {{mean: [...], std: [...]}} or {{min: [...], max: [...]}} with {len(bands)} value(s) each (one per band), got {norm}")
        positive = norm["std"] if "std" in norm else [hi - lo for lo, hi in zip(norm["min"], norm["max"])]
        if min(positive) <= 0:
            raise SegtrainError(f"{src}: key 'data.band_norm': every std (or max - min) must be positive, got {norm}")
    check_patch_keys(config, 2)


FORMAT = DatasetFormat(
    name="geotiff",
    spatial_rank=2,
    default_channels=3,  # never used: data.bands says the channels
    scan=scan_scenes,
    read=read,
    read_labels=read_labels,
    prediction_extension=".tif",
    write_prediction=write_prediction,
    read_prediction=read_prediction,
    check_config=check_config,
    own_keys=("bands", "band_norm", "patch"),
    patches=True,
    normalizes_itself=True,
    input_cases=input_cases,
    open_scene=open_scene,
)
