"""predict / evaluate for nifti volumes and 1-D series: NIfTI round trip, label groups vs NumPy, --pred-dir."""

import json

import numpy as np
import pytest

from conftest import need_module
from segtrain.cli import main
from segtrain.config import from_dict
from segtrain.errors import SegtrainError
from segtrain.evaluation import evaluate, parse_groups
from segtrain.metrics import group_metrics
from segtrain.prediction_options import PredictOptions

nib = need_module("nibabel")

SHAPE = (16, 12, 8)
AFFINE = np.array([[-1.0, 0, 0, 90], [0, 1.2, 0, -126], [0, 0, 2.0, -72], [0, 0, 0, 1]])
CLASSES = ["background", "necrosis", "edema", "enhancing"]
GROUPS = {"whole": [1, 2, 3], "core": [1, 3], "enhancing": [3]}


def _nifti_dataset(root, cases=("p1", "p2")):
    rng = np.random.default_rng(0)
    labels = {}
    for name in cases:
        folder = root / "val" / name
        folder.mkdir(parents=True)
        nib.save(nib.Nifti1Image(rng.normal(size=SHAPE).astype(np.float32), AFFINE), str(folder / "flair.nii.gz"))
        labels[name] = rng.integers(0, 4, SHAPE).astype(np.float32)  # float-stored, as BRATS stores it
        nib.save(nib.Nifti1Image(labels[name], AFFINE), str(folder / "seg.nii.gz"))
    return labels


def _write_yaml(path, data, groups=None):
    import yaml

    raw = {"data": data, "output_dir": str(path.parent / "run")}
    if groups is not None:
        raw["evaluate"] = {"groups": groups}
    path.write_text(yaml.safe_dump(raw))
    return path


def _nifti_config(tmp_path, groups=None):
    data = {"format": "nifti", "root": str(tmp_path / "data"), "num_classes": 4, "classes": CLASSES,
            "channels": ["flair.nii.gz"], "label": "seg.nii.gz", "normalize": "none", "patch": [8, 8, 8],
            "train_split": "val", "val_split": "val"}
    return _write_yaml(tmp_path / "brats.yaml", data, groups)


@pytest.fixture(scope="module")
def checkpoint_3d(tmp_path_factory):
    from segtrain.models import build_model

    path = tmp_path_factory.mktemp("ckpt") / "tiny3d.keras"
    model = build_model("segnet_basic", num_classes=4, input_shape=(None, None, None, 1), width=4, norm="group")
    model.save(path)
    return path


def _numpy_group_dice(gts, preds, classes):
    inter = sum(np.sum(np.isin(g, classes) & np.isin(p, classes)) for g, p in zip(gts, preds))
    size = sum(np.sum(np.isin(g, classes)) + np.sum(np.isin(p, classes)) for g, p in zip(gts, preds))
    return 2 * inter / size, inter / (size - inter)


def test_group_metrics_against_numpy_by_hand():
    rng = np.random.default_rng(3)
    gt, pred = rng.integers(0, 5, 500), rng.integers(0, 5, 500)
    gt[:20] = 255  # void voxels count in no group
    cm = np.zeros((5, 5), np.int64)
    valid = gt != 255
    np.add.at(cm, (gt[valid], pred[valid]), 1)
    got = group_metrics(cm, {"whole": [1, 2, 3, 4], "core": [1, 3, 4], "enhancing": [4]})
    for name, classes in {"whole": [1, 2, 3, 4], "core": [1, 3, 4], "enhancing": [4]}.items():
        dice, iou = _numpy_group_dice([gt[valid]], [pred[valid]], classes)
        assert got[name]["dice"] == pytest.approx(dice) and got[name]["iou"] == pytest.approx(iou)
    # hand case: gt [0, 1, 1, 2], pred [1, 1, 0, 2]; group {1, 2}: TP 2, FP 1, FN 1 -> Dice 4/6, IoU 2/4
    hand = np.array([[0, 1, 0], [1, 1, 0], [0, 0, 1]])
    assert group_metrics(hand, {"g": [1, 2]})["g"] == {"classes": [1, 2], "dice": pytest.approx(4 / 6), "iou": 0.5, "pixels": 3}
    with pytest.raises(SegtrainError, match="label group 'bad'"):
        group_metrics(hand, {"bad": [3]})
    assert parse_groups("whole=1,2,3,4; core=1,3,4;enhancing=4") == {"whole": [1, 2, 3, 4], "core": [1, 3, 4], "enhancing": [4]}
    with pytest.raises(SegtrainError, match="--groups"):
        parse_groups("whole:1,2")


def test_predict_writes_nifti_with_source_affine_and_evaluate_agrees(tmp_path, checkpoint_3d):
    from segtrain.inference import load_checkpoint, predict_logits

    labels = _nifti_dataset(tmp_path / "data")
    config_path = _nifti_config(tmp_path, groups=GROUPS)
    out = tmp_path / "pred"
    assert main(["predict", "--config", str(config_path), "--split", "val", "--checkpoint", str(checkpoint_3d),
                 "--output", str(out)]) == 0
    model = load_checkpoint(checkpoint_3d)
    preds = []
    for name in labels:
        img = nib.load(str(out / f"{name}.nii.gz"))
        np.testing.assert_allclose(img.affine, AFFINE)
        assert img.get_data_dtype() == np.uint8 and img.shape == SHAPE
        source = nib.load(str(tmp_path / "data" / "val" / name / "flair.nii.gz"))
        image = np.asanyarray(source.dataobj)[..., None]
        expected = np.argmax(predict_logits(model, image, window=(8, 8, 8), blend="gaussian"), axis=-1)
        np.testing.assert_array_equal(np.asanyarray(img.dataobj), expected)  # labels survive the round trip
        preds.append(expected)
    assert len(np.unique(np.concatenate([p.ravel() for p in preds]))) > 1  # not a constant prediction
    # evaluate --checkpoint (sliding windows of data.patch) == evaluate --pred-dir of what predict wrote
    report = tmp_path / "eval.json"
    assert main(["evaluate", "--config", str(config_path), "--split", "val", "--checkpoint", str(checkpoint_3d),
                 "--json", str(report)]) == 0
    from_model = json.loads(report.read_text())
    from_files = evaluate(from_dict({"data": {**_data_of(config_path)}, "evaluate": {"groups": GROUPS}}), "val",
                          pred_dir=out, verbose=False)
    assert from_model["miou"] == pytest.approx(from_files["miou"])
    for name, classes in GROUPS.items():
        dice, _ = _numpy_group_dice(list(labels.values()), preds, classes)
        assert from_model["groups"][name]["dice"] == pytest.approx(dice)
        assert from_files["groups"][name]["dice"] == pytest.approx(dice)
    assert [c["name"] for c in from_model["per_case"]] == list(labels)


def _data_of(config_path):
    import yaml

    return yaml.safe_load(config_path.read_text())["data"]


def test_evaluate_pred_dir_nifti_groups_and_per_class_against_numpy(tmp_path):
    labels = _nifti_dataset(tmp_path / "data")
    config_path = _nifti_config(tmp_path)
    rng = np.random.default_rng(7)
    (tmp_path / "pred").mkdir()
    preds = {}
    for name, gt in labels.items():
        preds[name] = np.where(rng.random(SHAPE) < 0.7, gt, rng.integers(0, 4, SHAPE)).astype(np.uint8)
        nib.save(nib.Nifti1Image(preds[name], AFFINE), str(tmp_path / "pred" / f"{name}.nii.gz"))
    report = tmp_path / "m.json"
    assert main(["evaluate", "--config", str(config_path), "--split", "val", "--pred-dir", str(tmp_path / "pred"),
                 "--groups", "whole=1,2,3;core=1,3;enhancing=3", "--json", str(report)]) == 0
    metrics = json.loads(report.read_text())
    gts, ps = [labels[n].astype(np.uint8) for n in labels], [preds[n] for n in labels]
    for name, classes in GROUPS.items():
        dice, iou = _numpy_group_dice(gts, ps, classes)
        assert metrics["groups"][name]["dice"] == pytest.approx(dice)
        assert metrics["groups"][name]["iou"] == pytest.approx(iou)
    for c in range(4):
        dice, _ = _numpy_group_dice(gts, ps, [c])  # one class is a group of one
        assert metrics["per_class_dice"][c] == pytest.approx(dice)
    first = metrics["per_case"][0]
    assert first["groups"]["core"] == pytest.approx(_numpy_group_dice(gts[:1], ps[:1], [1, 3])[0])
    # a prediction in another voxel space is an error naming the file
    nib.save(nib.Nifti1Image(ps[0], np.eye(4)), str(tmp_path / "pred" / "p1.nii.gz"))
    config = from_dict({"data": _data_of(config_path)})
    with pytest.raises(SegtrainError, match="p1.nii.gz: affine differs"):
        evaluate(config, "val", pred_dir=tmp_path / "pred", verbose=False)
    (tmp_path / "pred" / "p2.nii.gz").unlink()
    with pytest.raises(SegtrainError, match="p2.nii.gz: no prediction for sample p2"):
        evaluate(config, "val", pred_dir=tmp_path / "pred", verbose=False)


def test_series_predict_and_evaluate(tmp_path):
    import keras

    root = tmp_path / "data" / "val"
    root.mkdir(parents=True)
    rng = np.random.default_rng(1)
    labels = {}
    for name, length in (("walk", 50), ("run", 37)):
        np.save(root / f"{name}.npy", rng.normal(size=(length, 2)).astype(np.float32))
        labels[name] = rng.integers(0, 3, length)
        np.save(root / f"{name}.labels.npy", labels[name])
    data = {"format": "series", "root": str(tmp_path / "data"), "num_classes": 3, "classes": ["a", "b", "c"],
            "label": "{name}.labels.npy", "channels": 2, "normalize": "none", "patch": [16],
            "train_split": "val", "val_split": "val"}
    config_path = _write_yaml(tmp_path / "tssb.yaml", data)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((None, 2)), keras.layers.Conv1D(3, 1)])  # pointwise: windows are exact
    model.save(tmp_path / "m.keras")
    out = tmp_path / "pred"
    assert main(["predict", "--config", str(config_path), "--split", "val", "--checkpoint", str(tmp_path / "m.keras"),
                 "--output", str(out)]) == 0
    preds = []
    for name in labels:
        signal = np.load(root / f"{name}.npy")
        expected = np.argmax(model.predict(signal[None], verbose=0)[0], axis=-1)
        got = np.load(out / f"{name}.npy")
        np.testing.assert_array_equal(got, expected)
        preds.append(got)
    metrics = evaluate(from_dict({"data": data}), "val", pred_dir=out, groups={"ab": [0, 1]}, verbose=False)
    dice, iou = _numpy_group_dice(list(labels.values()), preds, [0, 1])
    assert metrics["groups"]["ab"]["dice"] == pytest.approx(dice) and metrics["groups"]["ab"]["iou"] == pytest.approx(iou)
    with pytest.raises(SegtrainError, match="--tta and --scales apply to 2-D images"):
        evaluate(from_dict({"data": data}), "val", checkpoint=tmp_path / "m.keras", options=PredictOptions(flip=True), verbose=False)


def test_predict_input_nifti_case_folder_file_and_folder_of_cases(tmp_path, checkpoint_3d):
    """``predict --input`` on a nifti config: a case folder, a folder of case folders and a single-channel file
    give the same volumes as ``--split``; a folder without the channel files is one error line."""
    _nifti_dataset(tmp_path / "data")
    config_path = _nifti_config(tmp_path)
    run = ["predict", "--config", str(config_path), "--checkpoint", str(checkpoint_3d)]
    assert main([*run, "--split", "val", "--output", str(tmp_path / "split")]) == 0
    val = tmp_path / "data" / "val"
    inputs = {"folders": (val, ["p1", "p2"]), "case": (val / "p2", ["p2"]), "file": (val / "p1" / "flair.nii.gz", ["flair"])}
    for label, (path, names) in inputs.items():
        out = tmp_path / label
        assert main([*run, "--input", str(path), "--output", str(out)]) == 0
        assert sorted(p.name for p in out.iterdir()) == [f"{n}.nii.gz" for n in names]
        for name in names:
            reference = "p1" if name == "flair" else name
            got, want = nib.load(str(out / f"{name}.nii.gz")), nib.load(str(tmp_path / "split" / f"{reference}.nii.gz"))
            np.testing.assert_allclose(got.affine, AFFINE)
            np.testing.assert_array_equal(np.asanyarray(got.dataobj), np.asanyarray(want.dataobj))
    (tmp_path / "empty").mkdir()
    assert main([*run, "--input", str(tmp_path / "empty"), "--output", str(tmp_path / "x")]) == 1


def test_predict_input_series_file_and_folder(tmp_path):
    import keras

    root = tmp_path / "new"
    root.mkdir()
    rng = np.random.default_rng(2)
    for name, length in (("a", 40), ("b", 23)):
        np.save(root / f"{name}.npy", rng.normal(size=(length, 2)).astype(np.float32))
    np.save(root / "a.labels.npy", np.zeros(40, np.int64))  # a label file beside the signals is not a signal
    data = {"format": "series", "root": str(tmp_path), "num_classes": 3, "label": "{name}.labels.npy", "channels": 2,
            "normalize": "none", "patch": [16]}
    config_path = _write_yaml(tmp_path / "s.yaml", data)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((None, 2)), keras.layers.Conv1D(3, 1)])  # pointwise: windows are exact
    model.save(tmp_path / "m.keras")
    run = ["predict", "--config", str(config_path), "--checkpoint", str(tmp_path / "m.keras")]
    assert main([*run, "--input", str(root), "--output", str(tmp_path / "all")]) == 0
    assert main([*run, "--input", str(root / "b.npy"), "--output", str(tmp_path / "one")]) == 0
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == ["a.npy", "b.npy"]
    for out, name in ((tmp_path / "all", "a"), (tmp_path / "all", "b"), (tmp_path / "one", "b")):
        expected = np.argmax(model.predict(np.load(root / f"{name}.npy")[None], verbose=0)[0], axis=-1)
        np.testing.assert_array_equal(np.load(out / f"{name}.npy"), expected)
