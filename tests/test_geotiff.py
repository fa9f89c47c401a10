"""data.format: geotiff: bands, normalisation and nodata against NumPy, windowed training reads, streamed
prediction on the source grid equal to a whole-array prediction, and its peak memory."""

import numpy as np
import pytest

from conftest import need_module
from segtrain.cli import main
from segtrain.config import from_dict
from segtrain.data.formats.geotiff import GeoScene, open_scene
from segtrain.data.formats.splits import list_samples
from segtrain.errors import SegtrainError

rasterio = need_module("rasterio", "geotiff")
from rasterio.transform import from_origin  # noqa: E402

CRS = "EPSG:32633"
TRANSFORM = from_origin(500000.0, 5200000.0, 10.0, 10.0)  # UTM 33N, 10 m pixels
H, W = 300, 280  # more than one 256-pixel tile each way
NODATA = 0


def _write(path, array, nodata=None, transform=TRANSFORM, dtype=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    array = array if array.ndim == 3 else array[None]
    with rasterio.open(path, "w", driver="GTiff", height=array.shape[1], width=array.shape[2], count=array.shape[0],
                       dtype=dtype or array.dtype, crs=CRS, transform=transform, nodata=nodata, tiled=True, compress="deflate") as ds:
        ds.write(array)


def _scene(root, name="s1", seed=0):
    """A 4-band uint16 scene with nodata pixels, and a uint8 label raster with its own nodata (200)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(1, 4000, (4, H, W)).astype(np.uint16)
    image[2, :5, :7] = NODATA  # nodata in a chosen band
    image[1, 10:12, :] = NODATA  # nodata in a band not chosen: still data
    labels = rng.integers(0, 3, (H, W)).astype(np.uint8)
    labels[-3:, -4:] = 200
    _write(root / "train" / "images" / f"{name}.tif", image, nodata=NODATA)
    _write(root / "train" / "labels" / f"{name}.tif", labels, nodata=200)
    return image, labels


def _data(root, **extra):
    return {"format": "geotiff", "root": str(root), "num_classes": 3, "classes": ["water", "field", "town"],
            "bands": [3, 1], "band_norm": {"mean": [1000.0, 2000.0], "std": [500.0, 250.0]}, "patch": [64, 64],
            "train_split": "train", "val_split": "train", **extra}


def _config(tmp_path, **extra):
    return from_dict({"data": _data(tmp_path / "data", **extra), "train": {"mixed_precision": "none"},
                      "output_dir": str(tmp_path / "run")})


def _expected(image, labels, rows, cols):
    """NumPy reference: bands 3 and 1 z-scored by the config; image nodata pixels 0 and void, label nodata void."""
    chosen = image[[2, 0]][:, rows, cols].astype(np.float32)
    valid = (chosen != NODATA).all(axis=0)
    scaled = (chosen - np.array([1000.0, 2000.0], np.float32)[:, None, None]) / np.array([500.0, 250.0], np.float32)[:, None, None]
    return np.where(valid[..., None], np.moveaxis(scaled, 0, -1), 0), np.where(valid & (labels[rows, cols] != 200), labels[rows, cols], 255)


def test_window_read_matches_numpy_with_bands_norm_and_nodata(tmp_path):
    image, labels = _scene(tmp_path / "data")
    config = _config(tmp_path)
    scene = open_scene(list_samples(config.data, "train")[0], config.data)
    assert scene.shape == (H, W)
    for rows, cols in [(slice(0, 64), slice(0, 64)), (slice(H - 40, H), slice(W - 50, W))]:
        got = scene.read(rows, cols)
        want_image, want_labels = _expected(image, labels, rows, cols)
        np.testing.assert_allclose(got.image, want_image, rtol=1e-6)
        np.testing.assert_array_equal(got.label, want_labels)
    assert (scene.read(slice(0, 5), slice(0, 7)).label == 255).all()  # nodata in band 3
    assert (scene.read(slice(10, 12), slice(0, W)).label != 255).any()  # band 2 is not chosen
    # min/max scaling
    config = _config(tmp_path, band_norm={"min": [0, 0], "max": [4000, 2000]})
    got = open_scene(list_samples(config.data, "train")[0], config.data).read(slice(20, 30), slice(20, 30))
    np.testing.assert_allclose(got.image, np.moveaxis(image[[2, 0], 20:30, 20:30] / np.array([4000.0, 2000.0])[:, None, None], 0, -1), rtol=1e-6)


def test_config_and_grid_errors(tmp_path):
    _scene(tmp_path / "data")
    with pytest.raises(SegtrainError, match="data.band_norm.*2 value"):
        _config(tmp_path, band_norm={"mean": [1.0], "std": [1.0]})
    with pytest.raises(SegtrainError, match="data.bands"):
        _config(tmp_path, bands=[0, 1])
    config = _config(tmp_path, bands=[1, 5])
    with pytest.raises(SegtrainError, match="band 5 but the scene has 4"):
        open_scene(list_samples(config.data, "train")[0], config.data)
    shifted = from_origin(500010.0, 5200000.0, 10.0, 10.0)
    _write(tmp_path / "data" / "train" / "labels" / "s1.tif", np.zeros((H, W), np.uint8), transform=shifted)
    config = _config(tmp_path)
    with pytest.raises(SegtrainError, match="s1.tif: label raster grid .* differs .* warp it"):
        open_scene(list_samples(config.data, "train")[0], config.data)


def test_training_windows_are_read_from_disk_and_validation_covers_the_scene(tmp_path, monkeypatch):
    from segtrain.data.formats.geotiff import Scene
    from segtrain.data.loading.plans import split_plan

    image, labels = _scene(tmp_path / "data")
    config = _config(tmp_path, patches_per_case=3)
    reads = []
    read = Scene.read
    monkeypatch.setattr(Scene, "read", lambda self, rows, cols: reads.append((rows, cols)) or read(self, rows, cols))
    plan, _ = split_plan(config, "train", True, batch_size=1)
    assert plan.total == 3 and plan.shape == (64, 64)
    index, seeds = plan.arrays(0, 0, plan.total)
    for i, s in zip(index, seeds):
        got_image, got_label = plan.load(i, s)
        rows, cols = reads[-1]
        assert rows.stop - rows.start == 64 and cols.stop - cols.start == 64  # a window, never the scene
        want_image, want_labels = _expected(image, labels, rows, cols)
        np.testing.assert_allclose(got_image, want_image, rtol=1e-6)  # no patch_* augmentation configured
        np.testing.assert_array_equal(got_label, want_labels)
    np.testing.assert_array_equal(plan.arrays(0, 0, 3)[1], split_plan(config, "train", True, batch_size=1)[0].arrays(0, 0, 3)[1])
    val, _ = split_plan(config, "train", False)
    assert val.total == 5 * 5  # ceil(300 / 64) x ceil(280 / 64), the last windows flush with the edge
    covered = np.zeros((H, W), int)
    reads.clear()
    for i in range(val.total):
        val.load(np.int64(i), np.int64(0))
        covered[reads[-1]] += 1
    assert covered.min() == 1


def _tiny_model(bands):
    import keras

    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((None, None, bands)), keras.layers.Conv2D(3, 3, padding="same")])


def test_predict_scene_writes_source_grid_and_equals_whole_array_prediction(tmp_path):
    from segtrain.inference import forward_logits, predict_array
    from segtrain.prediction_options import PredictOptions

    image, labels = _scene(tmp_path / "data")
    config = _config(tmp_path)
    model = _tiny_model(2)
    model.save(tmp_path / "m.keras")
    import yaml

    config_path = tmp_path / "geo.yaml"
    config_path.write_text(yaml.safe_dump({"data": _data(tmp_path / "data"), "output_dir": str(tmp_path / "run")}))
    scene_file = tmp_path / "data" / "train" / "images" / "s1.tif"
    for args in (["--input", str(scene_file)], ["--input", str(scene_file.parent)], ["--split", "train"]):
        out = tmp_path / f"pred{len(args[1])}"
        assert main(["predict", "--config", str(config_path), "--checkpoint", str(tmp_path / "m.keras"),
                     "--output", str(out), "--window", "64", *args]) == 0
        with rasterio.open(out / "s1.tif") as ds:
            assert ds.crs.to_string() == CRS and ds.transform == TRANSFORM and ds.dtypes == ("uint8",)
            assert ds.block_shapes == [(256, 256)] and ds.compression.name == "deflate" and ds.nodata == 255
            written = ds.read(1)
    whole, _ = _expected(image, np.zeros_like(labels), slice(None), slice(None))
    valid = (image[[2, 0]] != NODATA).all(axis=0)
    windows = predict_array(model, whole, config.data, PredictOptions(window=64))
    np.testing.assert_array_equal(written, np.where(valid, windows, 255))  # the very windows and blend, streamed
    at_once = np.argmax(forward_logits(model, whole[None])[0], axis=-1)  # the whole array in one forward pass
    np.testing.assert_array_equal(written, np.where(valid, at_once, 255))
    assert len(np.unique(written)) == 4  # three classes and nodata: not a constant map


def _tall_scene(path, height, width):
    """A 3-band uint16 scene written tile row by tile row from one cheap pattern (fast to write and compress)."""
    pattern = np.broadcast_to((np.arange(width, dtype=np.uint16) % 251 + 1)[None, None, :], (3, 256, width))
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", height=height, width=width, count=3, dtype="uint16", crs=CRS, transform=TRANSFORM,
                       tiled=True, compress="deflate") as ds:
        for row in range(0, height, 256):
            ds.write(pattern, window=rasterio.windows.Window(0, row, width, 256))
    return GeoScene(path.stem, path)


@pytest.mark.slow
def test_predict_scene_peak_memory_is_a_band_not_the_scene(tmp_path):
    import tracemalloc

    from segtrain.inference import forward_logits, predict_scene
    from segtrain.prediction_options import PredictOptions

    config = _config(tmp_path, bands=[1, 2, 3], band_norm=None)
    model = _tiny_model(3)
    forward_logits(model, np.zeros((1, 256, 256, 3), np.float32))  # Keras's imports and tracing are not the scene's memory
    peaks = {}
    for height in (2048, 8192):
        scene = open_scene(_tall_scene(tmp_path / f"s{height}.tif", height, 1024), config.data)
        rows = []
        tracemalloc.start()
        predict_scene(model, scene, config.data, lambda start, labels: rows.append((start, labels.shape)), PredictOptions(window=256, stride=256))
        peaks[height] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert sum(shape[0] for _, shape in rows) == height and rows[0] == (0, (256, 1024))
    scene_bytes = 8192 * 1024 * 3 * 4  # the tall scene as the float32 array a whole-array prediction holds
    assert peaks[8192] < 1.25 * peaks[2048], f"peak grows with the scene: {peaks}"
    assert peaks[8192] < scene_bytes / 3, f"peak {peaks[8192] / 2**20:.0f} MiB for a {scene_bytes / 2**20:.0f} MiB scene"


def test_whole_prediction_round_trip_and_grid_check(tmp_path):
    from segtrain.data.formats.geotiff import read_prediction, write_prediction

    _scene(tmp_path / "data")
    config = _config(tmp_path)
    sample = list_samples(config.data, "train")[0]
    decoded = open_scene(sample, config.data).read(slice(0, H), slice(0, W))
    labels = np.random.default_rng(5).integers(0, 3, (H, W)).astype(np.uint8)
    path = write_prediction(tmp_path / "pred" / "s1.tif", labels, decoded)
    assert sorted(p.name for p in path.parent.iterdir()) == ["s1.tif"]  # no temporary left
    back = read_prediction(path, sample, decoded.label, config.data)
    np.testing.assert_array_equal(back, labels)
    _write(tmp_path / "other.tif", labels, transform=from_origin(0.0, 0.0, 10.0, 10.0))
    with pytest.raises(SegtrainError, match="other.tif: prediction grid differs"):
        read_prediction(tmp_path / "other.tif", sample, decoded.label, config.data)


@pytest.mark.slow
def test_one_epoch_of_training_on_scene_windows_and_check_dataset(tmp_path):
    import math

    from segtrain.data.check import check_dataset
    from segtrain.training import Trainer

    _scene(tmp_path / "data")
    config = from_dict({"data": _data(tmp_path / "data", patch=[32, 32], patches_per_case=4, patch_flip=[0, 1]),
                        "model": {"name": "segnet_basic", "width": 4, "norm": "group"},
                        "train": {"batch_size": 2, "epochs": 1, "mixed_precision": "none"}, "output_dir": str(tmp_path / "run")})
    result = Trainer(config, verbose=0).fit()
    assert math.isfinite(result["loss"]) and 0.0 <= result["miou"] <= 1.0
    image, labels = _expected(*[np.asarray(a) for a in _scene(tmp_path / "data")], slice(None), slice(None))
    report = check_dataset(config, "train")
    assert report.ok and report.num_ok == 1
    np.testing.assert_array_equal(report.class_pixels, np.bincount(labels[labels != 255].ravel(), minlength=3))
    assert report.void_pixels == int((labels == 255).sum())
