"""`segtrain publish`: a tiny run trained by `segtrain train`, published, then loaded from the folder by predict,
evaluate and export with the same masks and mIoU as the run's own checkpoint; the model card's figures are
metrics.json's; keras-hub's preset files rebuild the same model; the Hub upload offline (dry run, and a
recording stand-in for ``HfApi``); every refusal one error line."""

from __future__ import annotations

import json
import re
import shutil

import keras
import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import need_module, sample_config
from segtrain import cli
from segtrain.config import load_config, save_config
from segtrain.data.formats.palette import ColorTable
from segtrain.data.formats.sample_dataset import SAMPLE_CLASSES
from segtrain.errors import SegtrainError

COLORS = [[0, 0, 0], [200, 40, 40], [40, 160, 60], [50, 70, 200]]


@pytest.fixture(scope="module")
def run(sample_root, tmp_path_factory):
    """A run folder written by `segtrain train`: a tiny U-Net, 6 short epochs on the sample dataset, classes from a table file."""
    base = tmp_path_factory.mktemp("publish")
    table = base / "shapes.yaml"
    table.write_text(yaml.safe_dump({"classes": dict(zip(SAMPLE_CLASSES, COLORS)), "void": [255, 255, 255]}, sort_keys=False))
    config = sample_config(sample_root, classes=str(table), crop=[48, 48], output_dir=base / "run",
                           model={"name": "unet", "width": 8, "depth": 2, "decoder": "transposed", "norm": "none"},
                           train={"epochs": 6, "batch_size": 10, "mixed_precision": "none", "val_every": 3,
                                  "optimizer": {"name": "adam", "learning_rate": 0.02}})
    config.runtime.loggers, config.runtime.log_images = ["csv"], 0  # a few seconds: no event files, no strips
    save_config(config, base / "experiment.yaml")
    assert cli.main(["train", "--config", str(base / "experiment.yaml")]) == 0
    return base / "run"


@pytest.fixture(scope="module")
def published(run):
    out = run.parent / "published"
    assert cli.main(["publish", str(run), "--output", str(out)]) == 0
    return out


def _masks(folder):
    return {p.name: np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))}


def test_the_published_folder_predicts_and_evaluates_like_the_run_checkpoint(run, published, sample_root, tmp_path):
    files = {p.name for p in published.iterdir()}
    assert {"model.keras", "config.json", "model.weights.h5", "metadata.json", "config.yaml", "classes.yaml", "metrics.json",
            "confusion_matrix.json", "confusion_matrix.png", "README.md", "curves.png", "log.csv"} == files

    # predict: the folder alone (its config: training size and class colours) == the run's checkpoint with the run's config
    images = tmp_path / "images"
    images.mkdir()
    for name in sorted((sample_root / "JPEGImages").iterdir())[:4]:
        shutil.copy(name, images)
    best = run / "checkpoints" / "best.keras"
    assert cli.main(["predict", "--checkpoint", str(published), "--input", str(images), "--output", str(tmp_path / "a")]) == 0
    assert cli.main(["predict", "--checkpoint", str(best), "--config", str(run / "config.yaml"), "--input", str(images),
                     "--output", str(tmp_path / "b")]) == 0
    a, b = _masks(tmp_path / "a"), _masks(tmp_path / "b")
    assert len(a) == 4 and a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert len(np.unique(np.concatenate([m.ravel() for m in a.values()]))) > 1  # the run learnt more than background
    palette = np.asarray(Image.open(next((tmp_path / "a").glob("*.png"))).getpalette()[:12]).reshape(4, 3)
    assert palette.tolist() == COLORS  # drawn in the run's class colours, carried by the folder

    # evaluate: the folder alone == the run's checkpoint == metrics.json == what the run recorded at its best epoch
    assert cli.main(["evaluate", "--checkpoint", str(published), "--json", str(tmp_path / "a.json"),
                     "--output-dir", str(tmp_path / "eval-a")]) == 0
    assert cli.main(["evaluate", "--checkpoint", str(best), "--config", str(run / "config.yaml"),
                     "--json", str(tmp_path / "b.json"), "--output-dir", str(tmp_path / "eval-b")]) == 0
    from_folder, from_run = (json.loads((tmp_path / f"{x}.json").read_text()) for x in "ab")
    report = json.loads((published / "metrics.json").read_text())
    state = json.loads((run / "checkpoints" / "state.json").read_text())
    assert from_folder["miou"] == from_run["miou"] == report["miou"]
    assert from_folder["per_class_iou"] == from_run["per_class_iou"] == report["per_class_iou"]
    assert report["miou"] == pytest.approx(state["best_miou"], abs=1e-6) and report["split"] == "val"

    # the portable config and the colour table
    config = load_config(published / "config.yaml")
    assert config.data.classes == list(SAMPLE_CLASSES) and config.data.colors == COLORS and config.data.void_color == [255, 255, 255]
    assert "output_dir" not in yaml.safe_load((published / "config.yaml").read_text())
    table = ColorTable.from_file(published / "classes.yaml")
    assert table.names == SAMPLE_CLASSES and table.colors.tolist() == COLORS and table.void_color == (255, 255, 255)


def test_keras_hub_style_preset_files_rebuild_the_same_model(published):
    import segtrain.models  # noqa: F401  (registers the zoo's layers)

    model = keras.models.load_model(published / "model.keras", compile=False)
    rebuilt = keras.saving.deserialize_keras_object(json.loads((published / "config.json").read_text()))
    rebuilt.load_weights(published / "model.weights.h5")
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 48, 3)).astype("float32")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(rebuilt(x)), keras.ops.convert_to_numpy(model(x)))
    metadata = json.loads((published / "metadata.json").read_text())
    assert metadata["parameter_count"] == model.count_params() and metadata["keras_version"] == keras.version()
    assert metadata["segtrain"]["classes"] == list(SAMPLE_CLASSES) and metadata["segtrain"]["colors"] == COLORS


def _card_figures(card: str) -> dict[str, str]:
    """``| name | value ... |`` rows of the card's tables: first cell -> second cell."""
    return {m[1].strip(): m[2].strip() for m in re.finditer(r"^\| ([^|`]+) \| ([^|]+) \|", card, re.M)}


def test_the_model_card_has_the_run_command_split_and_the_figures_of_metrics_json(run, published):
    card = (published / "README.md").read_text()
    report = json.loads((published / "metrics.json").read_text())
    rows = _card_figures(card)
    assert rows["mIoU"] == f"{report['miou']:.4f}" and rows["pixel accuracy"] == f"{report['pixel_accuracy']:.4f}"
    for name, iou in zip(report["class_names"], report["per_class_iou"]):
        assert rows[name] == ("n/a" if iou is None else f"{iou:.4f}")
    assert f"segtrain train --config {run.parent / 'experiment.yaml'}" in card  # the exact command, from run.log
    assert "**val** split, re-evaluated at publish time" in card and "the same figure" in card
    assert "## Intended use" in card and "**Not set by the publisher.**" in card and "\n# license:" in card
    assert card.startswith("---\nlibrary_name: keras\n")


def test_from_run_takes_the_recorded_figures(run, tmp_path):
    out = tmp_path / "from-run"
    assert cli.main(["publish", str(run), "--output", str(out), "--from-run"]) == 0
    state = json.loads((run / "checkpoints" / "state.json").read_text())
    best = next(r for r in state["history"] if r["epoch"] == state["best_epoch"])
    report = json.loads((out / "metrics.json").read_text())
    assert report["miou"] == best["val_miou"] and report["per_class_iou"] == list(best["val_per_class_iou"].values())
    assert "read from the run: its validation at epoch" in (out / "README.md").read_text()
    assert not (out / "confusion_matrix.json").exists()


def _one_error(capsys, argv, *fragments) -> str:
    assert cli.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    for fragment in fragments:
        assert fragment in err, err
    return err


def test_refusals_are_one_line(run, published, tmp_path, capsys, monkeypatch):
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.yaml").write_text((run / "config.yaml").read_text())
    _one_error(capsys, ["publish", str(bare), "--output", str(tmp_path / "o1")], "checkpoints/best.keras: the run has no best checkpoint")
    _one_error(capsys, ["publish", str(tmp_path / "nothing"), "--output", str(tmp_path / "o2")], "no such run folder")
    _one_error(capsys, ["publish", str(run), "--output", str(published)], "--output exists and is not an empty folder")
    _one_error(capsys, ["publish", str(run), "--output", str(tmp_path / "o3"), "--dry-run"], "add --push-to-hub")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    _one_error(capsys, ["publish", str(run), "--output", str(tmp_path / "o4"), "--push-to-hub", "me/tiny"], "HF_TOKEN is not set")
    _one_error(capsys, ["predict", "--checkpoint", str(bare), "--input", str(tmp_path), "--output", str(tmp_path / "p")],
               "a folder without model.keras")
    _one_error(capsys, ["evaluate", "--checkpoint", str(run / "checkpoints" / "best.keras")], "--config: required")
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 5))  # nothing written before a refusal
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging folder left


class RecordingHfApi:
    """``huggingface_hub.HfApi`` that records what would be sent (and can fail like a network)."""

    calls: list = []
    fail: Exception | None = None

    def __init__(self, token=None):
        self.calls.append(("init", token))

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        if self.fail is not None:
            raise self.fail
        self.calls.append(("upload_folder", kwargs))


def test_push_to_hub_offline_dry_run_and_recorded_upload(published, monkeypatch, capsys):
    hub = need_module("huggingface_hub", "hub")
    from segtrain.tools.publish import push_to_hub, upload_plan

    monkeypatch.setattr(hub, "HfApi", RecordingHfApi)
    RecordingHfApi.calls = []
    push_to_hub(published, "me/tiny-unet", dry_run=True)
    out = capsys.readouterr().out
    plan = upload_plan(published)
    assert RecordingHfApi.calls == [] and f"would upload {len(plan)} files" in out and "https://huggingface.co/me/tiny-unet" in out
    assert all(f"  {name}  {size:,} bytes" in out for name, size in plan) and len(plan) == 12

    assert push_to_hub(published, "me/tiny-unet", token="hf_test") == "https://huggingface.co/me/tiny-unet"
    init, create, upload = RecordingHfApi.calls
    assert init == ("init", "hf_test") and create == ("create_repo", "me/tiny-unet", {"repo_type": "model", "exist_ok": True})
    assert upload[1]["folder_path"] == str(published) and upload[1]["repo_id"] == "me/tiny-unet"

    RecordingHfApi.fail = ConnectionError("Max retries exceeded with url: /api/repos/create")
    try:
        with pytest.raises(SegtrainError, match=r"^--push-to-hub me/tiny-unet: upload failed \(Max retries.*hf upload me/tiny-unet"):
            push_to_hub(published, "me/tiny-unet", token="hf_test")
    finally:
        RecordingHfApi.fail = None
    with pytest.raises(SegtrainError, match="not a repository id"):
        push_to_hub(published, "me/bad name", dry_run=True)


@pytest.mark.slow
def test_export_takes_the_published_folder(published, tmp_path):
    need_module("tensorflow", "export")
    need_module("tf2onnx", "export")
    need_module("onnxruntime", "export")
    output = tmp_path / "model.onnx"
    assert cli.main(["export", "--checkpoint", str(published), "--format", "onnx", "--output", str(output)]) == 0
    report = json.loads(output.with_name(output.name + ".report.json").read_text())
    assert report["export"]["input_shape"] == [1, 48, 48, 3]  # the training size from the folder's config.yaml
