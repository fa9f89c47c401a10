"""Region-based (sigmoid) training: region targets, BCE + soft Dice per region against NumPy, the
label-map rule, config checks, and a tiny run that trains, validates, evaluates and predicts regions."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import need_backend, need_module
from segtrain.config import from_dict
from segtrain.errors import SegtrainError
from segtrain.heads import Head, head_of, region_labels, region_table

REPO = Path(__file__).resolve().parents[1]
BRATS = {"whole": [1, 2, 3, 4], "core": [1, 3, 4], "enhancing": [4]}
REGIONS = list(BRATS.values())


def _np_targets(labels, regions):
    """Independent reference: (..., R) 0/1 targets and the valid mask (void 255 excluded)."""
    targets = np.stack([np.isin(labels, r) for r in regions], axis=-1).astype(np.float64)
    return targets, labels != 255


def _np_bce(labels, logits, regions):
    g, valid = _np_targets(labels, regions)
    s = 1 / (1 + np.exp(-logits.astype(np.float64)))
    bce = -(g * np.log(s) + (1 - g) * np.log(1 - s))
    return bce[valid].sum() / (valid.sum() * len(regions))


def _np_dice(labels, logits, regions, smooth=1.0):
    g, valid = _np_targets(labels, regions)
    s = 1 / (1 + np.exp(-logits.astype(np.float64)))
    g, s = g[valid], s[valid]  # (valid pixels, R)
    dice = (2 * (s * g).sum(0) + smooth) / (s.sum(0) + g.sum(0) + smooth)
    return 1 - dice.mean()


def test_region_table_and_labels():
    table = region_table(REGIONS, 5)
    assert table.tolist() == [[0, 0, 0], [1, 1, 0], [1, 0, 0], [1, 1, 0], [1, 1, 1]]
    assert region_labels(REGIONS) == [2, 1, 4]  # edema, necrosis (smallest of core minus enhancing), enhancing
    assert region_labels([[1], [1, 2]]) == [1, 1]  # a region covered by a later one paints its own smallest class
    labels = np.random.default_rng(0).integers(0, 5, (4, 6))
    np.testing.assert_array_equal(table[labels], _np_targets(labels, REGIONS)[0])


def test_painted_label_map_rule_by_hand():
    # sigmoid probabilities of (whole, core, enhancing) for five voxels
    probs = np.array([[0.2, 0.9, 0.9],   # whole below 0.5 but core/enhancing above: the later regions still paint
                      [0.7, 0.4, 0.1],   # whole only -> edema (2)
                      [0.7, 0.6, 0.2],   # whole + core -> 1
                      [0.9, 0.8, 0.51],  # all three -> enhancing (4)
                      [0.5, 0.1, 0.1]])  # 0.5 is not above the threshold -> background
    head = head_of("sigmoid", BRATS)
    assert head.labels(probs).tolist() == [4, 2, 1, 4, 0]
    logits = np.log(probs / (1 - probs))
    assert head.decode(logits).tolist() == [4, 2, 1, 4, 0]
    assert Head().decode(logits).tolist() == np.argmax(logits, -1).tolist()  # softmax: the argmax
    # nested regions: the map's group k is "region k or a later one predicted"
    rng = np.random.default_rng(1)
    probs = rng.random((200, 3))
    painted = head.labels(probs)
    for k, classes in enumerate(REGIONS):
        np.testing.assert_array_equal(np.isin(painted, classes), (probs[:, k:] > 0.5).any(axis=1))


@pytest.mark.parametrize("smooth", [1.0, 0.0])
def test_region_losses_against_numpy_with_void(smooth):
    from segtrain.losses import SegmentationLoss, region_bce_terms, region_dice_terms

    rng = np.random.default_rng(2)
    labels = rng.integers(0, 5, (2, 6, 5)).astype(np.uint8)
    labels[0, :2] = 255  # void rows count in neither loss
    logits = rng.normal(0, 2, (2, 6, 5, 3)).astype(np.float32)
    table = region_table(REGIONS, 5)
    num, den = region_bce_terms(labels, logits, table)
    assert float(num) / float(den) == pytest.approx(_np_bce(labels, logits, REGIONS), rel=1e-5)
    dice, one = region_dice_terms(labels, logits, table, smooth=smooth)
    assert float(dice) == pytest.approx(_np_dice(labels, logits, REGIONS, smooth), rel=1e-5) and float(one) == 1
    loss = SegmentationLoss([{"name": "ce", "weight": 1.0}, {"name": "dice", "weight": 0.5, "smooth": smooth}],
                            regions=REGIONS, num_classes=5)
    want = _np_bce(labels, logits, REGIONS) + 0.5 * _np_dice(labels, logits, REGIONS, smooth)
    assert float(loss(labels, logits)) == pytest.approx(want, rel=1e-5)
    # changing a void pixel's logits changes nothing
    moved = logits.copy()
    moved[0, 0] += 50
    assert float(loss(labels, moved)) == pytest.approx(float(loss(labels, logits)), rel=1e-6)
    assert SegmentationLoss.from_config(loss.get_config()).regions == REGIONS
    with pytest.raises(SegtrainError, match="focal has no sigmoid form"):
        SegmentationLoss([{"name": "focal"}], regions=REGIONS, num_classes=5)


def _config(**changes):
    raw = {"data": {"format": "voc", "root": "/nonexistent", "num_classes": 5, "regions": BRATS},
           "model": {"head": "sigmoid"}}
    for key, value in changes.items():
        section, _, name = key.partition("__")
        raw.setdefault(section, {})[name] = value
    return from_dict(raw)


@pytest.mark.parametrize("changes, message", [
    ({"data__regions": {}}, "data.regions' is needed with model.head: sigmoid"),
    ({"model__head": "softmax"}, "set model.head: sigmoid"),
    ({"data__regions": {"whole": [1, 5]}}, r"data.regions.whole' must list distinct classes in 0..4"),
    ({"data__regions": {"whole": []}}, "data.regions.whole"),
    ({"train__class_weights": "median_frequency"}, "train.class_weights' has no meaning"),
    ({"train__loss": [{"name": "lovasz"}]}, "lovasz has no sigmoid form"),
])
def test_config_checks(changes, message):
    with pytest.raises(SegtrainError, match=message):
        _config(**changes)


def test_config_builds_one_output_per_region():
    from segtrain.heads import output_channels
    from segtrain.models import build_model_from_config

    config = _config(model__name="segnet_basic", model__width=4)
    assert config.model.head == "sigmoid" and list(config.data.regions) == ["whole", "core", "enhancing"]
    assert output_channels(config) == 3
    assert build_model_from_config(config, (None, None, 3)).output_shape[-1] == 3


# ---- a tiny region-based run on volumes: train (TensorFlow), validate, evaluate, predict -------------
nib = need_module("nibabel")
SHAPE = (20, 20, 12)


def _volumes(root):
    """Two cases with a nested 'tumour' (edema shell around a core with an enhancing centre) in a brain mask."""
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij"), -1)
    for i, name in enumerate(["a", "b"]):
        centre = np.array([9 + i, 10 - i, 6])
        r = np.linalg.norm(grid - centre, axis=-1)
        label = np.select([r < 1.5, r < 3, r < 5], [4, 1, 2], 0).astype(np.float32)
        brain = np.linalg.norm(grid - np.array([10, 10, 6]), axis=-1) < 9
        image = np.where(brain, (label > 0) * 2.0 + (label == 4) + np.random.default_rng(i).normal(0, 0.3, SHAPE), 0)
        folder = root / "train" / name
        folder.mkdir(parents=True)
        for file, array in (("img.nii.gz", image), ("seg.nii.gz", label), ("brain.nii.gz", brain)):
            nib.save(nib.Nifti1Image(np.asarray(array, np.float32), np.eye(4)), str(folder / file))


def _volume_config(tmp_path, head="sigmoid"):
    raw = {"data": {"format": "nifti", "root": str(tmp_path / "data"), "num_classes": 5,
                    "classes": ["background", "necrosis", "edema", "non_enhancing", "enhancing"],
                    "channels": ["img.nii.gz"], "label": "seg.nii.gz", "mask": "brain.nii.gz", "normalize": "none",
                    "patch": [16, 16, 8], "patches_per_case": 4, "foreground_fraction": 0.5,
                    "train_split": "train", "val_split": "train", "regions": BRATS if head == "sigmoid" else {}},
           "model": {"name": "unet", "width": 4, "depth": 2, "norm": "instance", "head": head},
           "train": {"epochs": 6, "batch_size": 2, "mixed_precision": "none", "precise_bn": {"batches": 0},
                     "optimizer": {"name": "adam", "learning_rate": 0.01},
                     "loss": [{"name": "ce"}, {"name": "dice"}]},
           "runtime": {"loggers": ["csv"]}, "output_dir": str(tmp_path / "run")}
    return raw


@pytest.mark.slow
def test_tiny_region_run_trains_validates_evaluates_and_predicts(tmp_path):
    import yaml

    from segtrain.evaluation import evaluate
    from segtrain.inference import load_checkpoint, predict_logits
    from segtrain.training import train

    _volumes(tmp_path / "data")
    raw = _volume_config(tmp_path)
    config = from_dict(raw)
    result = train(config, verbose=0)
    history = json.loads((tmp_path / "run" / "checkpoints" / "state.json").read_text())["history"]
    losses = [row["loss"] for row in history]
    assert losses[-1] < 0.7 * losses[0]  # BCE + Dice per region goes down
    assert set(history[-1]["val_group_dice"]) == set(BRATS)  # validation reports the regions
    assert result["steps"] == 24
    checkpoint = tmp_path / "run" / "checkpoints" / "last.keras"
    model = load_checkpoint(checkpoint)
    assert model.output_shape[-1] == 3
    report = evaluate(config, "train", checkpoint=checkpoint, verbose=False)
    # independent reference: Gaussian-blended logits -> sigmoid > 0.5 -> painted in order; background outside the brain
    inter = {k: 0 for k in BRATS}
    sizes = {k: 0 for k in BRATS}
    for name in ["a", "b"]:
        folder = tmp_path / "data" / "train" / name
        image, truth, brain = (np.asarray(nib.load(str(folder / f)).dataobj) for f in ("img.nii.gz", "seg.nii.gz", "brain.nii.gz"))
        logits = predict_logits(model, image[..., None].astype(np.float32), window=(16, 16, 8), blend="gaussian")
        painted = np.zeros(SHAPE, np.uint8)
        for k, label in zip(range(3), [2, 1, 4]):
            painted[logits[..., k] > 0] = label
        painted[brain == 0] = 0
        for k, classes in BRATS.items():
            p, g = np.isin(painted, classes), np.isin(truth, classes)
            inter[k] += (p & g).sum()
            sizes[k] += p.sum() + g.sum()
        if name == "a":
            expected_a = painted
    for k in BRATS:
        assert report["groups"][k]["dice"] == pytest.approx(2 * inter[k] / sizes[k])
    assert report["groups"]["whole"]["dice"] > 0.5  # it learned the tumour
    # predict writes that label map
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))  # region order is channel order
    from segtrain.cli import main

    assert main(["predict", "--config", str(path), "--split", "train", "--checkpoint", str(checkpoint),
                 "--output", str(tmp_path / "pred")]) == 0
    np.testing.assert_array_equal(np.asarray(nib.load(str(tmp_path / "pred" / "a.nii.gz")).dataobj), expected_a)
    # regions listed in another order than in training: refused, not silently relabelled
    reordered = from_dict({**raw, "data": {**raw["data"], "regions": dict(reversed(list(BRATS.items())))}})
    with pytest.raises(SegtrainError, match="list the regions as in training"):
        evaluate(reordered, "train", checkpoint=checkpoint, verbose=False)
    # a softmax config refuses the region checkpoint in one line
    softmax = from_dict(_volume_config(tmp_path, head="softmax"))
    with pytest.raises(SegtrainError, match="model predicts 3 channels but data.num_classes is 5"):
        evaluate(softmax, "train", checkpoint=checkpoint, verbose=False)


JAX_SCRIPT = """
import json, sys
import numpy as np
from segtrain.config import from_dict
from segtrain.losses import SegmentationLoss
from segtrain.training import train
raw = json.loads(sys.argv[1])
rng = np.random.default_rng(2)
labels = rng.integers(0, 5, (2, 6, 5)).astype(np.uint8); labels[0, :2] = 255
logits = rng.normal(0, 2, (2, 6, 5, 3)).astype(np.float32)
loss = SegmentationLoss([{"name": "ce"}, {"name": "dice"}], regions=[[1, 2, 3, 4], [1, 3, 4], [4]], num_classes=5)
result = train(from_dict(raw), verbose=0)
print(json.dumps({"loss": float(loss(labels, logits)), "steps": result["steps"], "final": result["loss"]}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax"])
def test_region_loss_and_run_on_another_backend(tmp_path, backend):
    need_backend(backend)
    _volumes(tmp_path / "data")
    raw = _volume_config(tmp_path)
    raw["train"]["epochs"] = 1
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run([sys.executable, "-c", JAX_SCRIPT, json.dumps(raw)], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 5, (2, 6, 5)).astype(np.uint8)
    labels[0, :2] = 255
    logits = rng.normal(0, 2, (2, 6, 5, 3)).astype(np.float32)
    assert out["loss"] == pytest.approx(_np_bce(labels, logits, REGIONS) + _np_dice(labels, logits, REGIONS), rel=1e-5)
    assert out["steps"] == 4 and np.isfinite(out["final"])


def test_2d_prediction_with_flip_tta_averages_sigmoids_then_paints():
    from segtrain.inference import predict_logits, predict_mask
    from segtrain.models import build_model
    from segtrain.prediction_options import PredictOptions

    model = build_model("segnet_basic", num_classes=3, input_shape=(None, None, 3), width=4, norm="none")
    image = np.random.default_rng(4).uniform(0, 255, (16, 24, 3)).astype(np.float32)
    sig = lambda x: 1 / (1 + np.exp(-x.astype(np.float64)))  # noqa: E731
    probs = (sig(predict_logits(model, image)) + sig(predict_logits(model, image[:, ::-1].copy())[:, ::-1])) / 2
    want = np.zeros(probs.shape[:2], np.uint8)
    for k, label in enumerate([2, 1, 4]):
        want[probs[..., k] > 0.5] = label
    got = predict_mask(model, image, PredictOptions(flip=True), head_of("sigmoid", BRATS))
    np.testing.assert_array_equal(got, want)
    assert len(np.unique(want)) > 1  # the rule had something to paint


def test_auto_resume_sees_regions_listed_in_another_order_as_another_config(tmp_path):
    from segtrain.config.loading import save_config
    from segtrain.training import config_difference

    save_config(_config(), tmp_path / "config.yaml")
    assert config_difference(tmp_path / "config.yaml", _config()) is None
    reordered = _config(data__regions=dict(reversed(list(BRATS.items()))))
    difference = config_difference(tmp_path / "config.yaml", reordered)
    assert difference is not None and difference.startswith("data.regions: in the order")
