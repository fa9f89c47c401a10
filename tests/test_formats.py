"""The dataset-format table: every registered format passes one shared test, and a format
registered from outside segtrain (here, from this file) trains, evaluates, predicts and is
checked with no other edit."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from conftest import need_module
from segtrain.config import from_dict
from segtrain.data.check import check_dataset
from segtrain.data.formats import FORMATS, DatasetFormat, Decoded, cityscapes, get_format, register_format, unregister_format
from segtrain.data.formats.palette import ColorTable
from segtrain.data.formats.splits import list_samples, scan_samples
from segtrain.errors import SegtrainError
from segtrain.io_utils import write_png

SIZE = (12, 16)
CLASSES = ["a", "b", "c"]


def _labels(rng, shape) -> np.ndarray:
    labels = rng.integers(0, len(CLASSES), shape).astype(np.uint8)
    labels.flat[0] = 255  # void stays void through every format
    return labels


# ------------------------------------------------------------------ one small dataset per built-in format
def _voc(root: Path, rng) -> dict:
    for split, names in (("train", ["a1", "a2"]), ("val", ["b1"])):
        (root / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(names) + "\n")
        for name in names:
            (root / "JPEGImages").mkdir(exist_ok=True)
            (root / "SegmentationClass").mkdir(exist_ok=True)
            Image.fromarray(rng.integers(0, 255, SIZE + (3,), dtype=np.uint8)).save(root / "JPEGImages" / f"{name}.png")
            write_png(root / "SegmentationClass" / f"{name}.png", _labels(rng, SIZE), palette=ColorTable.builtin("voc").pil_palette())
    return {}


def _camvid(root: Path, rng) -> dict:
    for split, names in (("train", ["a1", "a2"]), ("val", ["b1"])):
        (root / split).mkdir(parents=True, exist_ok=True)
        (root / f"{split}annot").mkdir(parents=True, exist_ok=True)
        lines = []
        for name in names:
            Image.fromarray(rng.integers(0, 255, SIZE + (3,), dtype=np.uint8)).save(root / split / f"{name}.png")
            labels = _labels(rng, SIZE)
            labels[labels == 255] = 11  # CamVid's own void value, mapped to 255 by data.ignore_index
            Image.fromarray(labels).save(root / f"{split}annot" / f"{name}.png")
            lines.append(f"/SegNet/CamVid/{split}/{name}.png /SegNet/CamVid/{split}annot/{name}.png")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return {"ignore_index": 11}


def _folders(root: Path, rng) -> dict:
    for split, names in (("train", ["a1", "a2"]), ("val", ["b1"])):
        for folder in ("images", "masks"):
            (root / split / folder).mkdir(parents=True, exist_ok=True)
        for name in names:
            Image.fromarray(rng.integers(0, 255, SIZE + (1,), dtype=np.uint8)[..., 0]).save(root / split / "images" / f"{name}.png")
            Image.fromarray(_labels(rng, SIZE)).save(root / split / "masks" / f"{name}.png")
    return {"image_dir": "images", "mask_dir": "masks", "channels": 1, "mean": None, "std": None}


def _nifti(root: Path, rng) -> dict:
    affine = np.diag([1.2, 1.0, 2.0, 1.0])
    for split, names in (("train", ["c1", "c2"]), ("val", ["c3"])):
        for name in names:
            folder = root / split / name
            folder.mkdir(parents=True)
            nib.save(nib.Nifti1Image(rng.normal(50, 10, (8, 10, 6)).astype(np.float32), affine), str(folder / "t1.nii.gz"))
            nib.save(nib.Nifti1Image(_labels(rng, (8, 10, 6)).astype(np.float32), affine), str(folder / "seg.nii.gz"))
    return {"channels": ["t1.nii.gz"], "label": "seg.nii.gz", "patch": [8, 8, 4]}


def _series(root: Path, rng) -> dict:
    for split, names in (("train", ["s1", "s2"]), ("val", ["s3"])):
        (root / split).mkdir(parents=True)
        for name in names:
            np.save(root / split / f"{name}.npy", rng.normal(size=(40, 2)).astype(np.float32))
            np.save(root / split / f"{name}.labels.npy", _labels(rng, (40,)).astype(np.int64))
    return {"channels": 2, "label": "{name}.labels.npy", "patch": [16]}


def _raw_mask(rng, values: list[int], void: int) -> np.ndarray:
    """A mask of the dataset's own raw values (as the release ships them), its first pixel the dataset's void."""
    raw = rng.choice(np.asarray(values, np.uint8), SIZE)
    raw.flat[0] = void
    return raw


def _cityscapes(root: Path, rng) -> dict:
    """Two cities in train (one image with a labelTrainIds file beside its labelIds, as
    createTrainIdLabelImgs leaves it), one in val; the color PNGs of the release beside them."""
    label_ids = [0, 1, 4, 7, 8, 9, 11, 17, 21, 23, 24, 26, 33]  # void ids (0..6, 9 parking) and classes
    for split, names in (("train", ["aachen_000000_000019", "bochum_000000_000313"]), ("val", ["frankfurt_000000_000294"])):
        for name in names:
            city = name.split("_")[0]
            for top in ("leftImg8bit", "gtFine"):
                (root / top / split / city).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, SIZE + (3,), dtype=np.uint8)).save(root / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png")
            raw = _raw_mask(rng, label_ids, void=0)
            Image.fromarray(raw).save(root / "gtFine" / split / city / f"{name}_gtFine_labelIds.png")
            Image.fromarray(rng.integers(0, 255, SIZE + (3,), dtype=np.uint8)).save(root / "gtFine" / split / city / f"{name}_gtFine_color.png")
            if city == "aachen":
                train_ids = cityscapes.MASKS["_gtFine_labelIds.png"][raw]
                Image.fromarray(train_ids).save(root / "gtFine" / split / city / f"{name}_gtFine_labelTrainIds.png")
    return {"num_classes": 19, "classes": "cityscapes"}


def _ade20k(root: Path, rng) -> dict:
    for split, names in (("training", ["ADE_train_00000001", "ADE_train_00000002"]), ("validation", ["ADE_val_00000001"])):
        (root / "images" / split).mkdir(parents=True)
        (root / "annotations" / split).mkdir(parents=True)
        for name in names:
            Image.fromarray(rng.integers(0, 255, SIZE + (3,), dtype=np.uint8)).save(root / "images" / split / f"{name}.jpg")
            Image.fromarray(_raw_mask(rng, [0, 1, 2, 13, 150], void=0)).save(root / "annotations" / split / f"{name}.png")
    return {"num_classes": 150, "classes": "ade20k", "train_split": "training", "val_split": "validation"}


def _coco_stuff(root: Path, rng) -> dict:
    for split, names in (("train2017", ["000000000009", "000000000025"]), ("val2017", ["000000000139"])):
        (root / "images" / split).mkdir(parents=True)
        (root / "stuffthingmaps_trainval2017" / split).mkdir(parents=True)
        for name in names:
            Image.fromarray(rng.integers(0, 255, SIZE + (3,), dtype=np.uint8)).save(root / "images" / split / f"{name}.jpg")
            raw = _raw_mask(rng, [0, 12, 91, 181, 255], void=255)
            Image.fromarray(raw).save(root / "stuffthingmaps_trainval2017" / split / f"{name}.png")
    return {"num_classes": 171, "classes": "coco_stuff", "train_split": "train2017", "val_split": "val2017"}


def _geotiff(root: Path, rng) -> dict:
    rasterio = need_module("rasterio", "geotiff")
    transform = rasterio.transform.from_origin(600000.0, 4500000.0, 5.0, 5.0)
    for split, names in (("train", ["t1", "t2"]), ("val", ["t3"])):
        for folder in ("images", "labels"):
            (root / split / folder).mkdir(parents=True)
        for name in names:
            for folder, array in (("images", rng.integers(1, 1000, (2, *SIZE)).astype(np.uint16)), ("labels", _labels(rng, SIZE)[None])):
                with rasterio.open(root / split / folder / f"{name}.tif", "w", driver="GTiff", height=SIZE[0], width=SIZE[1],
                                   count=len(array), dtype=array.dtype, crs="EPSG:32632", transform=transform) as ds:
                    ds.write(array)
    return {"bands": [2, 1], "patch": [8, 8]}


FIXTURES = {"voc": _voc, "camvid": _camvid, "folders": _folders, "nifti": _nifti, "series": _series,
            "cityscapes": _cityscapes, "ade20k": _ade20k, "coco_stuff": _coco_stuff, "geotiff": _geotiff}


def _config(name: str, tmp_path: Path, **train):
    rng = np.random.default_rng(0)
    root = tmp_path / name
    root.mkdir()
    data = FIXTURES[name](root, rng)
    model = {"name": "segnet_basic", "width": 2, **{key: data.pop(key) for key in ("mean", "std") if key in data}}
    raw = {"data": {"format": name, "root": str(root), "num_classes": len(CLASSES), "classes": CLASSES, **data},
           "model": model, "train": {"epochs": 1, "batch_size": 2, "precise_bn": {"batches": 0}, **train},
           "output_dir": str(tmp_path / "run")}
    return from_dict(raw)


def test_every_registered_format_has_a_fixture_here():
    """A new format gets a small dataset in its official layout above, and so every test below."""
    assert sorted(FORMATS) == sorted(FIXTURES)


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_a_format_lists_decodes_and_round_trips_predictions(name, tmp_path):
    config = _config(name, tmp_path)
    fmt = get_format(name)
    samples = list_samples(config.data, "train")
    assert len(samples) == 2 and len(list_samples(config.data, "val")) == 1
    for sample in samples:
        decoded = fmt.read(sample, config.data)
        assert decoded.image.ndim == fmt.spatial_rank + 1 and decoded.label.shape == decoded.image.shape[:-1]
        assert decoded.label.dtype == np.uint8 and set(np.unique(decoded.label)) <= {*range(config.data.num_classes), 255}
        assert decoded.label.flat[0] == 255  # the dataset's void, whatever its own value was
        np.testing.assert_array_equal(fmt.read_labels(sample, config.data), decoded.label)
        last = config.data.num_classes - 1
        pred = np.where(decoded.label == 255, 0, last - decoded.label).astype(np.uint8)
        path = fmt.write_prediction(tmp_path / f"{sample.name}{fmt.prediction_extension}", pred, decoded)
        assert path.name.endswith(fmt.prediction_extension)
        np.testing.assert_array_equal(fmt.read_prediction(path, sample, decoded.label, config.data), pred)
    report = check_dataset(config, "train")
    assert report.ok and report.num_ok == 2 and report.class_pixels.sum() > 0


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_a_prediction_of_the_wrong_shape_is_one_line_naming_the_file(name, tmp_path):
    config = _config(name, tmp_path)
    fmt = get_format(name)
    sample = list_samples(config.data, "val")[0]
    decoded = fmt.read(sample, config.data)
    path = fmt.write_prediction(tmp_path / f"p{fmt.prediction_extension}", np.zeros(np.array(decoded.label.shape) + 1, np.uint8), decoded)
    with pytest.raises(SegtrainError, match=f"^{path}: prediction .*shape|^{path}: prediction is"):
        fmt.read_prediction(path, sample, decoded.label, config.data)


def test_unknown_format_names_the_key_and_the_closest_name(tmp_path):
    with pytest.raises(SegtrainError, match=r"^<dict>: key 'data\.format': must be one of .*got 'nifty'; did you mean nifti\?"):
        from_dict({"data": {"format": "nifty", "root": str(tmp_path), "num_classes": 2}})


# ------------------------------------------------------------------ the mapped datasets, value by value
def _by_hand(name: str, tmp_path: Path, raw: np.ndarray, mask_name: str | None = None):
    """The fixture of ``name`` with its val sample replaced by a 2x4 image and the raw mask ``raw``
    (saved as ``mask_name`` beside the old mask, which is removed, when given): (decoded labels, config)."""
    config = _config(name, tmp_path)
    sample = list_samples(config.data, "val")[0]
    Image.fromarray(np.zeros(raw.shape + (3,), np.uint8)).save(sample.image)
    mask = sample.mask
    if mask_name is not None:
        sample.mask.unlink()
        mask = sample.mask.with_name(mask_name)
    Image.fromarray(raw).save(mask)
    sample = list_samples(config.data, "val")[0]
    assert sample.mask == mask
    return get_format(name).read(sample, config.data).label, config


def _check_dataset_lines(config, tmp_path: Path, capsys) -> str:
    """`segtrain check-dataset --split val` on the config, its output."""
    from segtrain.cli import main
    from segtrain.config import save_config

    save_config(config, tmp_path / "check.yaml")
    capsys.readouterr()
    assert main(["check-dataset", "--config", str(tmp_path / "check.yaml"), "--split", "val"]) == 0
    return capsys.readouterr().out


def _histogram_row(out: str, index: int, name: str, pixels: int) -> bool:
    return re.search(rf"^\s+{index} {re.escape(name)}\s+{pixels} ", out, re.MULTILINE) is not None


def test_cityscapes_label_ids_become_the_19_train_ids(tmp_path, capsys):
    raw = np.array([[7, 8, 11, 26], [0, 33, 9, 24]], np.uint8)  # road sidewalk building car / unlabeled bicycle parking person
    labels, config = _by_hand("cityscapes", tmp_path, raw)
    np.testing.assert_array_equal(labels, [[0, 1, 2, 13], [255, 18, 255, 11]])
    out = _check_dataset_lines(config, tmp_path, capsys)
    assert _histogram_row(out, 13, "car", 1) and _histogram_row(out, 18, "bicycle", 1) and _histogram_row(out, 255, "void (255)", 2)


def test_cityscapes_reads_label_train_ids_when_an_image_has_no_label_ids(tmp_path):
    raw = np.array([[0, 13, 18, 255]], np.uint8)  # train ids already: road car bicycle void
    name = "frankfurt_000000_000294_gtFine_labelTrainIds.png"
    labels, _ = _by_hand("cityscapes", tmp_path, raw, mask_name=name)
    np.testing.assert_array_equal(labels, [[0, 13, 18, 255]])


def test_cityscapes_value_that_is_no_label_id_is_one_line_naming_the_file(tmp_path):
    with pytest.raises(SegtrainError, match=r"_gtFine_labelIds\.png: mask values 34 \(1 px\) are neither a class \(0\.\.18\)"):
        _by_hand("cityscapes", tmp_path, np.array([[7, 34]], np.uint8))


def test_ade20k_reduces_zero_label(tmp_path, capsys):
    raw = np.array([[0, 1, 2, 150], [13, 3, 0, 150]], np.uint8)  # other wall building flag / person sky other flag
    labels, config = _by_hand("ade20k", tmp_path, raw)
    np.testing.assert_array_equal(labels, [[255, 0, 1, 149], [12, 2, 255, 149]])
    out = _check_dataset_lines(config, tmp_path, capsys)
    assert _histogram_row(out, 0, "wall", 1) and _histogram_row(out, 149, "flag", 2) and _histogram_row(out, 255, "void (255)", 2)


def test_ade20k_value_beyond_150_is_one_line_naming_the_file(tmp_path):
    with pytest.raises(SegtrainError, match=r"ADE_val_00000001\.png: mask values 151 \(1 px\) are neither a class \(0\.\.149\)"):
        _by_hand("ade20k", tmp_path, np.array([[1, 151]], np.uint8))


def test_coco_stuff_maps_the_171_used_ids_and_voids_the_unused(tmp_path, capsys):
    raw = np.array([[0, 11, 12, 181], [255, 90, 91, 92]], np.uint8)  # person (unused) stop sign wood / unlabeled (unused) banner blanket
    labels, config = _by_hand("coco_stuff", tmp_path, raw)
    np.testing.assert_array_equal(labels, [[0, 255, 11, 170], [255, 255, 80, 81]])
    out = _check_dataset_lines(config, tmp_path, capsys)
    assert _histogram_row(out, 0, "person", 1) and _histogram_row(out, 170, "wood", 1) and _histogram_row(out, 80, "banner", 1)
    assert _histogram_row(out, 255, "void (255)", 3)


def test_a_missing_mask_or_split_folder_is_one_line_naming_the_path(tmp_path):
    config = _config("cityscapes", tmp_path)
    sample = list_samples(config.data, "val")[0]
    sample.mask.unlink()
    assert scan_samples(config.data, "val") == ([], [f"{sample.mask}: mask for {sample.image.name} is missing"])
    with pytest.raises(SegtrainError, match=r"leftImg8bit/test: folder not found; check data\.root and the split name"):
        scan_samples(config.data, "test")


def test_a_label_map_applies_on_top_of_the_formats_mapping(tmp_path):
    """``data.label_map`` keys are raw values: Cityscapes' parking (9, void by default) as road."""
    config = _config("cityscapes", tmp_path)
    config.data.label_map = {9: 0}
    sample = list_samples(config.data, "val")[0]
    Image.fromarray(np.zeros((1, 3, 3), np.uint8)).save(sample.image)
    Image.fromarray(np.array([[9, 7, 26]], np.uint8)).save(sample.mask)
    np.testing.assert_array_equal(get_format("cityscapes").read(sample, config.data).label, [[0, 0, 13]])


# ------------------------------------------------------------------ a format from outside segtrain
@dataclasses.dataclass(frozen=True)
class NpzSample:
    name: str
    image: Path  # the file that identifies the sample (check-dataset compares splits by it)


def _scan_npz(data_cfg, root: Path, split: str):
    """``<root>/<split>/<name>.npz`` holding ``image`` (H, W, 3) uint8 and ``label`` (H, W) uint8."""
    return [NpzSample(f.stem, f) for f in sorted((root / split).glob("*.npz"))], []


def _read_npz(sample, data_cfg) -> Decoded:
    with np.load(sample.image) as arrays:
        return Decoded(arrays["image"], arrays["label"])


def _write_json(path: Path, labels: np.ndarray, decoded=None, colors=None) -> Path:
    path.write_text(json.dumps(labels.tolist()))
    return path


def _read_json(path: Path, sample, truth: np.ndarray, data_cfg) -> np.ndarray:
    return np.asarray(json.loads(path.read_text()), dtype=np.uint8)


TOY = DatasetFormat(
    name="toy_npz", spatial_rank=2, default_channels=3, scan=_scan_npz, read=_read_npz,
    read_labels=lambda sample, cfg: _read_npz(sample, cfg).label, prediction_extension=".json",
    write_prediction=_write_json, read_prediction=_read_json,
)


@pytest.fixture
def toy_format():
    register_format(TOY)
    yield TOY
    unregister_format(TOY.name)


def _toy_dataset(root: Path) -> None:
    rng = np.random.default_rng(1)
    for split, count in (("train", 4), ("val", 2)):
        (root / split).mkdir(parents=True)
        for i in range(count):
            label = np.zeros((16, 16), np.uint8)
            label[4:12, 2 + i : 10 + i] = 1
            image = (rng.integers(0, 60, (16, 16, 3)) + 150 * (label[..., None] == 1)).astype(np.uint8)
            np.savez(root / split / f"{split}{i}.npz", image=image, label=label)


@pytest.mark.slow
def test_a_format_registered_from_outside_trains_evaluates_predicts_and_checks(toy_format, tmp_path, capsys):
    from segtrain.cli import main
    from segtrain.config import save_config
    from segtrain.evaluation import evaluate
    from segtrain.training import train

    _toy_dataset(tmp_path / "toy")
    config = from_dict({
        "data": {"format": "toy_npz", "root": str(tmp_path / "toy"), "num_classes": 2, "classes": ["bg", "box"], "hflip": False},
        "model": {"name": "segnet_basic", "width": 4},
        "train": {"epochs": 2, "batch_size": 2, "optimizer": {"name": "adam", "learning_rate": 0.01}, "precise_bn": {"batches": 2}},
        "output_dir": str(tmp_path / "run"),
    })
    result = train(config)
    best = tmp_path / "run" / "checkpoints" / "best.keras"
    assert best.is_file() and 0.0 <= result["miou"] <= 1.0

    scored = evaluate(config, "val", checkpoint=best, verbose=False)
    assert scored["num_images"] == 2 and scored["miou"] == pytest.approx(result["miou"], abs=1e-6)

    save_config(config, tmp_path / "toy.yaml")
    assert main(["predict", "--checkpoint", str(best), "--config", str(tmp_path / "toy.yaml"), "--split", "val",
                 "--output", str(tmp_path / "pred")]) == 0
    written = sorted(p.name for p in (tmp_path / "pred").glob("*.json"))
    assert written == ["val0.json", "val1.json"]  # the format's own writer, not a PNG
    from_files = evaluate(config, "val", pred_dir=tmp_path / "pred", verbose=False)
    assert from_files["confusion_matrix"] == scored["confusion_matrix"]

    assert main(["check-dataset", "--config", str(tmp_path / "toy.yaml")]) == 0
    assert "split 'val': 2 samples, 2 ok, 0 problem(s)" in capsys.readouterr().out
