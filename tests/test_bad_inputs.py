"""The bad-input corpus: every command against every bad input it can meet.

Each case writes one small broken thing (a config, a data file, a checkpoint, a label PNG)
into a copy of a tiny generated dataset and runs a ``segtrain`` command on it. The promise
under test, for every case: exit code 1, exactly one line on stderr (``error: ...``), the
file or key named in it, and no half-written file (a ``*.segtrain-tmp`` temporary) left in the output folder.
Cases marked ``accept`` are inputs that look odd but are valid (a UTF-8 BOM in a list file):
they must succeed, print what they name (a note) and leave no temporary either. Command-line
misuse (a misspelt command, option or choice) is a case too: its "input" is the argv itself.

Commands run in-process through ``segtrain.cli.main`` (start-up happens once), except
training on bad *data*, which runs in a subprocess with a timeout: a hang or an abort
after the error line is exactly what those cases are there to catch.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import yaml
from PIL import Image

from segtrain.cli import main
from segtrain.data.formats.palette import pil_palette, voc_colormap
from segtrain.io_utils import TMP_SUFFIX

REPO = Path(__file__).resolve().parents[1]
NUM_CLASSES = 3
SIZE = 16
TRAIN, VAL = ("t0", "t1", "t2", "t3"), ("v0", "v1")


# ---- the clean world each case breaks one thing of ----------------------------------------

def write_mask(path: Path, mask: np.ndarray) -> None:
    image = Image.fromarray(mask.astype(np.uint8), mode="P")
    image.putpalette(pil_palette(voc_colormap(256)[:NUM_CLASSES]))
    image.save(path)


def make_dataset(root: Path) -> Path:
    rng = np.random.default_rng(0)
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClass").mkdir()
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    for name in TRAIN + VAL:
        Image.fromarray(rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)).save(root / "JPEGImages" / f"{name}.jpg")
        mask = rng.integers(0, NUM_CLASSES, (SIZE, SIZE))
        mask[0, 0] = 255
        write_mask(root / "SegmentationClass" / f"{name}.png", mask)
    for split, names in (("train", TRAIN), ("val", VAL)):
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(names) + "\n")
    return root


def base_config(root: Path, out: Path) -> dict:
    return {
        "data": {"format": "voc", "root": str(root), "num_classes": NUM_CLASSES, "classes": ["a", "b", "c"],
                 "hflip": False},
        "model": {"name": "segnet_basic", "decoder": "unpool", "norm": "group", "width": 4},
        "train": {"epochs": 1, "batch_size": 2, "seed": 0, "optimizer": {"name": "adam", "learning_rate": 0.001}},
        "output_dir": str(out),
    }


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from segtrain.models import build_model

    path = tmp_path_factory.mktemp("ckpt") / "model.keras"
    build_model("segnet_basic", num_classes=NUM_CLASSES, input_shape=(None, None, 3), decoder="unpool",
                norm="group", width=4).save(path)
    return path


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:
    """A small PNG that declares 196 M pixels: over Pillow's decompression-bomb limit."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    Image.new("L", (14000, 14000)).save(path, optimize=False)
    return path


@pytest.fixture(scope="module")
def narrow_mobilenet(tmp_path_factory) -> Path:
    """Weights of MobileNetV2 at alpha 0.35: another architecture than DeepLabV3+'s MobileNetV2 encoder (alpha 1)."""
    import keras

    path = tmp_path_factory.mktemp("weights") / "mobilenetv2_035.weights.h5"
    keras.applications.MobileNetV2(include_top=False, weights=None, alpha=0.35, input_shape=(None, None, 3)).save_weights(path)
    return path


@dataclass
class World:
    root: Path  # the dataset
    out: Path  # output_dir / output folders
    config: Path  # the YAML
    checkpoint: Path
    bomb: Path
    monkeypatch: pytest.MonkeyPatch
    narrow_mobilenet: Path
    raw: dict = field(default_factory=dict)
    argv: list[str] | None = None  # the command line, for the "argv" cases (a misspelt command or option)

    def write_config(self, raw: dict | None = None, text: str | None = None) -> None:
        self.config.write_text(text if text is not None else yaml.safe_dump(raw or self.raw), encoding="utf-8")

    def mask(self, name: str) -> Path:
        return self.root / "SegmentationClass" / f"{name}.png"

    def image(self, name: str) -> Path:
        return self.root / "JPEGImages" / f"{name}.jpg"


@pytest.fixture
def world(tmp_path, checkpoint, bomb, monkeypatch, narrow_mobilenet) -> World:
    root = make_dataset(tmp_path / "data")
    w = World(root, tmp_path / "out", tmp_path / "config.yaml", checkpoint, bomb, monkeypatch, narrow_mobilenet)
    w.raw = base_config(root, w.out)
    w.write_config()
    return w


# ---- the corpus ---------------------------------------------------------------------------

@dataclass
class Case:
    name: str
    commands: tuple[str, ...]  # which commands meet this input
    breaks: Callable[[World], str | tuple[str, ...]]  # breaks the world; returns the text(s) the error must name
    accept: bool = False


def config_edit(edit: Callable[[dict], None], named: str) -> Callable[[World], str]:
    def breaks(w: World) -> str:
        edit(w.raw)
        w.write_config()
        return named

    return breaks


def config_text(text: Callable[[World], str | bytes], named: str | None = None) -> Callable[[World], str]:
    def breaks(w: World) -> str:
        content = text(w)
        if isinstance(content, bytes):
            w.config.write_bytes(content)
        else:
            w.config.write_text(content, encoding="utf-8")
        return named or w.config.name

    return breaks


def setitem(path: str, value) -> Callable[[dict], None]:
    def edit(raw: dict) -> None:
        *parents, last = path.split(".")
        node = raw
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value

    return edit


def delitem(path: str) -> Callable[[dict], None]:
    def edit(raw: dict) -> None:
        *parents, last = path.split(".")
        node = raw
        for key in parents:
            node = node[key]
        del node[last]

    return edit


def data_file(change: Callable[[World], Path]) -> Callable[[World], str]:
    def breaks(w: World) -> str:
        return change(w).name

    return breaks


def _garbage(path: Path) -> Path:
    path.write_bytes(b"this is not an image at all" * 8)
    return path


def _truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _out_of_range(w: World) -> Path:
    write_mask(w.mask("t1"), np.full((SIZE, SIZE), 50))
    return w.mask("t1")


def _size_mismatch(w: World) -> Path:
    write_mask(w.mask("t2"), np.zeros((SIZE + 3, SIZE)))
    return w.mask("t2")


def _jpeg_mask(w: World) -> Path:
    """Index values stored as JPEG bytes under a .png name: artefacts silently change classes."""
    mask = np.kron(np.array([[0, 1], [2, 1]]), np.ones((SIZE // 2, SIZE // 2))).astype(np.uint8)
    Image.fromarray(mask, mode="L").save(w.mask("t0"), format="JPEG", quality=90)
    return w.mask("t0")


def _bomb_mask(w: World) -> Path:
    shutil.copy(w.bomb, w.mask("t3"))
    return w.mask("t3")


def _missing_mask(w: World) -> Path:
    w.mask("t1").unlink()
    return w.mask("t1")


def _empty_split(w: World) -> Path:
    path = w.root / "ImageSets" / "Segmentation" / "train.txt"
    path.write_text("")
    return path


def _missing_root(w: World) -> str:
    shutil.rmtree(w.root)
    return w.root.name


def _bom_list(w: World) -> str:
    path = w.root / "ImageSets" / "Segmentation" / "train.txt"
    path.write_text("\ufeff" + path.read_text(encoding="utf-8"), encoding="utf-8")
    return ""


def _copied(w: World, folder: str, files: list[Path]) -> Path:
    """``files`` copied into ``<tmp>/<folder>``: an input folder for a command to read."""
    target = w.out.parent / folder
    target.mkdir(exist_ok=True)
    for path in files:
        shutil.copy(path, target / path.name)
    return target


def _pred_dir(w: World) -> Path:
    """Correct predictions for the val split (the ground truth itself), for evaluate --pred-dir to break."""
    return _copied(w, "pred", [w.mask(name) for name in VAL])


def _input_dir(w: World) -> Path:
    return _copied(w, "images", [w.image("v0")])


def _labels_dir(w: World) -> Path:
    """VOC palette label PNGs for convert-labels."""
    return _copied(w, "labels", [w.mask(name) for name in TRAIN])


def breaking_in(make_folder: Callable[[World], Path]):
    """``change(world, folder)`` applied to a fresh input folder; the error must name the file it returns."""

    def wrap(change: Callable[[World, Path], Path]) -> Callable[[World], str]:
        return lambda w: change(w, make_folder(w)).name

    return wrap


_pred, _labels = breaking_in(_pred_dir), breaking_in(_labels_dir)


def _rgb_unknown_colour(w: World, folder: Path) -> Path:
    path = folder / "t0.png"
    Image.fromarray(np.full((SIZE, SIZE, 3), (1, 2, 3), np.uint8)).save(path)
    return path


def _bad_palette_file(w: World) -> str:
    path = w.out.parent / "colours.yaml"
    path.write_text("classes: [[0, 0, 0], [300, 0, 0]]\n")
    _labels_dir(w)
    return path.name


def command_line(argv: Callable[[World], list[str]], *named: str) -> Callable[[World], tuple[str, ...]]:
    """A case whose mistake is the command line itself."""
    def breaks(w: World) -> tuple[str, ...]:
        _labels_dir(w)
        w.argv = argv(w)
        return named

    return breaks


def _read_only_out(w: World) -> str:
    """``w.out`` on a read-only file system: creating it (or anything in it) fails with EROFS, as it does for root too."""
    _labels_dir(w)
    real_mkdir = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if self == w.out or w.out in self.parents:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return real_mkdir(self, *args, **kwargs)

    w.monkeypatch.setattr(Path, "mkdir", mkdir)
    return str(w.out)


def _other_encoder_weights(w: World) -> tuple[str, ...]:
    w.raw["model"] = {"name": "deeplabv3plus", "encoder": "mobilenetv2", "encoder_weights": str(w.narrow_mobilenet)}
    w.write_config()
    return w.narrow_mobilenet.name, "expected shape (3, 3, 3, 32), found (3, 3, 3, 16)"


def _lambda_checkpoint(w: World) -> tuple[str, ...]:
    import keras

    x = keras.Input((None, None, 3))
    w.checkpoint = w.out.parent / "lambda.keras"
    keras.Model(x, keras.layers.Conv2D(NUM_CLASSES, 1)(keras.layers.Lambda(lambda t: t / 255)(x))).save(w.checkpoint)
    return "lambda.keras", "holds a Lambda layer"


def _trained(w: World, **train) -> Path:
    """Train the world's config (2 steps an epoch, a checkpoint every step); returns its checkpoints folder."""
    w.raw["train"].update(train, checkpoint_every_steps=1)
    w.write_config()
    assert main(["train", "--config", str(w.config)]) == 0
    return w.out / "checkpoints"


def _killed_while_saving_last(w: World) -> str:
    """The folder a SIGKILL during the ``last.keras`` write of step 4 leaves: step 3 committed, its model under
    two names (``last.keras`` and ``previous-00000003.keras``, one file), ``state-previous.json`` naming it."""
    folder = _trained(w, epochs=2)
    previous = json.loads((folder / "state-previous.json").read_text())
    os.replace(folder / previous["model_file"], folder / "last.keras")
    os.link(folder / "last.keras", folder / previous["model_file"])
    del previous["model_file"]
    (folder / "state.json").write_text(json.dumps(previous))
    return ""


def _resume_with_other_model(w: World) -> tuple[str, ...]:
    _trained(w, epochs=1)
    w.raw["model"]["width"] = 8
    w.write_config()
    return "resume-00000002.npz", "enc1_conv1/kernel has shape (7, 7, 3, 4) there but (7, 7, 3, 8) in this model"


def _config_of_other_model(w: World) -> str:
    w.raw["model"] = {"name": "unet", "width": 4}
    w.write_config()
    return f"{w.checkpoint} is a segnet_basic, not the unet of"


CONFIG_COMMANDS = ("train", "check-dataset", "evaluate")
DATA_COMMANDS = ("check-dataset", "train-data")

CASES = [
    # config mistakes
    Case("unknown-key", CONFIG_COMMANDS, config_edit(setitem("data.colour", 1), "data.colour")),
    Case("wrong-type", CONFIG_COMMANDS, config_edit(setitem("train.epochs", "ten"), "train.epochs")),
    Case("missing-required", CONFIG_COMMANDS, config_edit(delitem("data.num_classes"), "data.num_classes")),
    Case("python-tag", CONFIG_COMMANDS, config_text(lambda w: "data: !!python/object/apply:os.system ['true']\n")),
    Case("invalid-yaml", CONFIG_COMMANDS, config_text(lambda w: "data: [unclosed\n")),
    Case("not-a-mapping", CONFIG_COMMANDS, config_text(lambda w: "- just\n- a list\n")),
    Case("non-utf8", CONFIG_COMMANDS, config_text(lambda w: "# caf\xe9\n".encode("latin-1") + yaml.safe_dump(w.raw).encode())),
    Case("duplicate-key", CONFIG_COMMANDS, config_text(lambda w: yaml.safe_dump(w.raw) + "output_dir: elsewhere\n", "output_dir")),
    Case("missing-base", CONFIG_COMMANDS, config_text(lambda w: "_base_: nowhere/base.yaml\n" + yaml.safe_dump(w.raw), "nowhere")),
    Case("num-classes-zero", CONFIG_COMMANDS, config_edit(setitem("data.num_classes", 0), "data.num_classes")),
    Case("classes-length", CONFIG_COMMANDS, config_edit(setitem("data.classes", ["a", "b"]), "data.classes")),
    Case("negative-lr", CONFIG_COMMANDS, config_edit(setitem("train.optimizer.learning_rate", -0.1), "learning_rate")),
    Case("negative-steps", CONFIG_COMMANDS, config_edit(setitem("train.steps", -5), "train.steps")),
    Case("step-size-zero", CONFIG_COMMANDS, config_edit(setitem("train.schedule", {"name": "step", "step_size": 0}), "step_size")),
    Case("negative-warmup", CONFIG_COMMANDS, config_edit(setitem("train.schedule", {"name": "constant", "warmup_steps": -3}), "warmup_steps")),
    Case("color-jitter-range", CONFIG_COMMANDS, config_edit(setitem("data.color_jitter", 5), "data.color_jitter")),
    Case("val-every-zero", CONFIG_COMMANDS, config_edit(setitem("train.val_every", 0), "train.val_every")),
    Case("negative-seed", CONFIG_COMMANDS, config_edit(setitem("train.seed", -1), "train.seed")),
    Case("width-zero", CONFIG_COMMANDS, config_edit(setitem("model.width", 0), "model.width")),
    Case("parallel-calls", CONFIG_COMMANDS, config_edit(setitem("data.num_parallel_calls", -7), "data.num_parallel_calls")),
    Case("unknown-model", ("train",), config_edit(setitem("model.name", "segnot"), "model.name")),
    Case("unknown-decoder", ("train",), config_edit(setitem("model.decoder", "pixelshuffle"), "model.decoder")),
    Case("output-dir-is-file", ("train",), lambda w: (w.out.write_text("x"), w.out.name)[1]),
    Case("missing-root", ("check-dataset", "evaluate"), _missing_root),
    # data mistakes
    Case("garbage-mask", DATA_COMMANDS, data_file(lambda w: _garbage(w.mask("t0")))),
    Case("garbage-image", DATA_COMMANDS, data_file(lambda w: _garbage(w.image("t2")))),
    Case("truncated-image", DATA_COMMANDS, data_file(lambda w: _truncate(w.image("t1")))),
    Case("truncated-mask", DATA_COMMANDS, data_file(lambda w: _truncate(w.mask("t3")))),
    Case("out-of-range-mask", DATA_COMMANDS, data_file(_out_of_range)),
    Case("size-mismatch", DATA_COMMANDS, data_file(_size_mismatch)),
    Case("jpeg-mask", DATA_COMMANDS, data_file(_jpeg_mask)),
    Case("bomb-mask", DATA_COMMANDS, data_file(_bomb_mask)),
    Case("missing-mask", DATA_COMMANDS, data_file(_missing_mask)),
    Case("empty-split", DATA_COMMANDS, data_file(_empty_split)),
    Case("bom-in-list", ("check-dataset",), _bom_list, accept=True),
    # finished predictions (evaluate --pred-dir)
    Case("pred-missing-file", ("pred-dir",), _pred(lambda w, d: (d / "v1.png").unlink() or d / "v1.png")),
    Case("pred-garbage", ("pred-dir",), _pred(lambda w, d: _garbage(d / "v0.png"))),
    Case("pred-bomb", ("pred-dir",), _pred(lambda w, d: shutil.copy(w.bomb, d / "v1.png") and d / "v1.png")),
    Case("pred-size-mismatch", ("pred-dir",), _pred(lambda w, d: write_mask(d / "v0.png", np.zeros((3, 3))) or d / "v0.png")),
    Case("pred-rgb", ("pred-dir",), _pred(lambda w, d: Image.new("RGB", (SIZE, SIZE)).save(d / "v1.png") or d / "v1.png")),
    # checkpoints and inputs (predict, export)
    Case("checkpoint-missing", ("predict", "export"), lambda w: (setattr(w, "checkpoint", w.out.parent / "none.keras"), "none.keras")[1]),
    Case("checkpoint-garbage", ("predict", "export"), lambda w: (setattr(w, "checkpoint", _garbage(w.out.parent / "bad.keras")), "bad.keras")[1]),
    Case("input-garbage-image", ("predict",), lambda w: _garbage(_input_dir(w) / "v0.jpg").name),
    Case("input-no-images", ("predict",), lambda w: (shutil.rmtree(_input_dir(w)) or (w.out.parent / "images").mkdir()) or "images"),
    # label conversion
    Case("labels-garbage", ("convert-labels", "convert-labels-jobs"), _labels(lambda w, d: _garbage(d / "t1.png"))),
    Case("labels-bomb", ("convert-labels", "convert-labels-jobs"), _labels(lambda w, d: shutil.copy(w.bomb, d / "t2.png") and d / "t2.png")),
    Case("labels-unknown-colour", ("convert-labels-rgb",), _labels(_rgb_unknown_colour)),
    Case("labels-bad-palette-file", ("convert-labels-rgb",), _bad_palette_file),
    Case("labels-output-is-file", ("convert-labels",), lambda w: (_labels_dir(w), w.out.write_text("x"), w.out.name)[2]),
    Case("output-read-only", ("convert-labels", "train"), _read_only_out),
    # command-line misuse: one line and exit 1 like every other mistake, with the close choice when there is one
    Case("cli-unknown-command", ("argv",), command_line(lambda w: ["trian", "--config", str(w.config)], "did you mean train?")),
    Case("cli-unknown-mode", ("argv",), command_line(
        lambda w: ["convert-labels", "rgb2index", str(w.out.parent / "labels"), str(w.out)], "did you mean rgb-to-index?")),
    Case("cli-unknown-format", ("argv",), command_line(
        lambda w: ["export", "--checkpoint", str(w.checkpoint), "--format", "tflight"], "--format", "'tflight'", "did you mean tflite?")),
    Case("cli-unknown-option", ("argv",), command_line(
        lambda w: ["train", "--config", str(w.config), "--resmue"], "--resmue", "did you mean --resume?")),
    Case("cli-missing-option", ("argv",), command_line(lambda w: ["train"], "--config")),
    Case("cli-not-a-number", ("argv",), command_line(
        lambda w: ["convert-labels", "palette-to-raw", str(w.out.parent / "labels"), str(w.out), "--jobs", "two"], "--jobs")),
    # models and checkpoints that do not fit
    Case("encoder-weights-of-other-architecture", ("train",), _other_encoder_weights),
    Case("checkpoint-with-lambda", ("predict", "export"), _lambda_checkpoint),
    Case("resume-with-other-model", ("train-resume",), _resume_with_other_model),
    Case("resume-after-kill-in-last-write", ("train-resume",), _killed_while_saving_last, accept=True),
    Case("evaluate-config-of-other-model", ("evaluate",), _config_of_other_model, accept=True),
]


# ---- running a command ------------------------------------------------------------------

def argv_for(command: str, w: World) -> list[str]:
    if command == "argv":
        return w.argv
    if command in ("train", "train-data"):
        return ["train", "--config", str(w.config)]
    if command == "train-resume":
        return ["train", "--config", str(w.config), "--resume"]
    if command == "check-dataset":
        return ["check-dataset", "--config", str(w.config)]
    if command == "evaluate":
        return ["evaluate", "--config", str(w.config), "--checkpoint", str(w.checkpoint), "--output-dir", str(w.out / "eval")]
    if command == "pred-dir":
        return ["evaluate", "--config", str(w.config), "--pred-dir", str(w.out.parent / "pred"), "--output-dir", str(w.out / "eval")]
    if command == "predict":
        return ["predict", "--checkpoint", str(w.checkpoint), "--input", str(w.out.parent / "images"), "--output", str(w.out)]
    if command == "export":
        return ["export", "--checkpoint", str(w.checkpoint), "--format", "onnx", "--output", str(w.out / "m.onnx")]
    labels = str(w.out.parent / "labels")
    if command == "convert-labels":
        return ["convert-labels", "palette-to-raw", labels, str(w.out)]
    if command == "convert-labels-jobs":
        return ["convert-labels", "palette-to-raw", labels, str(w.out), "--jobs", "2"]
    if command == "convert-labels-rgb":
        palette = w.out.parent / "colours.yaml"
        return ["convert-labels", "rgb-to-index", labels, str(w.out), "--palette", str(palette) if palette.is_file() else "voc"]
    raise AssertionError(command)


def run_in_process(argv: list[str], capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = main(argv)
    return code, capsys.readouterr().err


def run_subprocess(argv: list[str]) -> tuple[int | str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    try:
        done = subprocess.run([sys.executable, "-m", "segtrain.cli", *argv], capture_output=True, text=True,
                              timeout=180, env=env, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return "hang", ""
    return done.returncode, done.stderr


def check_outcome(code, err: str, named: str | tuple[str, ...], w: World, accept: bool) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    named = (named,) if isinstance(named, str) else named
    if accept:
        assert code == 0, err
        assert all(text in err for text in named), f"{named!r} not said in:\n{err}"
    else:
        assert code == 1, f"exit code {code}, stderr:\n{err}"
        assert len(lines) == 1 and lines[0].startswith("error: "), f"expected one 'error:' line, got:\n{err}"
        for text in named:
            assert text in lines[0], f"{text!r} not named in: {lines[0]}"
    litter = list(w.out.rglob(f"*{TMP_SUFFIX}*")) if w.out.is_dir() else []
    assert not litter, f"half-written files left: {litter}"


def _params():
    for case in CASES:
        for command in case.commands:
            marks = [pytest.mark.slow] if command == "train-data" else []
            yield pytest.param(case, command, id=f"{command}-{case.name}", marks=marks)


@pytest.mark.parametrize("case,command", list(_params()))
def test_bad_input(case: Case, command: str, world: World, capsys):
    named = case.breaks(world)
    argv = argv_for(command, world)
    if command == "predict":
        _input_dir(world) if not (world.out.parent / "images").exists() else None
    if command == "train-data":
        code, err = run_subprocess(argv)
    else:
        code, err = run_in_process(argv, capsys)
    check_outcome(code, err, named, world, case.accept)
