"""The training loop on a tiny model and in-memory data: learning, run folder, faults, schedules."""

import csv
import errno
import io
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
import tensorflow as tf

from segtrain.config import from_dict, to_dict
from segtrain.errors import SegtrainError
from segtrain.io_utils import TMP_SUFFIX
from segtrain.schedules import WarmupSchedule
from segtrain.training import Trainer, TrainingInterrupted

N, SIZE = 16, 16


def make_data(seed=0):
    """Class 1 where the red channel is bright: learnable by a 3x3 conv; a void border."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (N, SIZE, SIZE, 3)).astype(np.float32)
    masks = (images[..., 0] > 128).astype(np.uint8)
    masks[:, :2] = 255
    return images, masks


def in_memory(images, masks):
    def dataset_fn(config, split, training, *, epoch=0, skip_batches=0):
        order = np.random.default_rng([config.train.seed, epoch]).permutation(N) if training else np.arange(N)
        ds = tf.data.Dataset.from_tensor_slices((images[order], masks[order]))
        return ds.batch(config.train.batch_size, drop_remainder=training).skip(skip_batches)

    return dataset_fn


def tiny_model(config, input_shape):
    x = keras.Input((None, None, 3))
    y = keras.layers.Rescaling(1 / 127.5, offset=-1)(x)
    y = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(y)
    return keras.Model(x, keras.layers.Conv2D(config.data.num_classes, 1)(y))


def make_config(tmp_path, **train):
    raw = {"data": {"format": "folders", "root": str(tmp_path), "num_classes": 2, "classes": ["dark", "red"]},
           "train": {"epochs": 4, "batch_size": 4, "optimizer": {"name": "adam", "learning_rate": 0.02}, **train},
           "output_dir": str(tmp_path / "run")}
    return from_dict(raw)


def test_tiny_training_learns_and_writes_the_run_folder(tmp_path):
    images, masks = make_data()
    config = make_config(tmp_path)
    trainer = Trainer(config, model_fn=tiny_model, dataset_fn=in_memory(images, masks), verbose=0)
    result = trainer.fit()
    history = json.loads((tmp_path / "run" / "checkpoints" / "state.json").read_text())["history"]
    losses = [row["loss"] for row in history]
    assert losses[-1] < 0.8 * losses[0]
    assert result["miou"] > history[0]["val_miou"]
    assert result["miou"] >= 0.80  # stated floor: the task is separable per pixel
    assert result["steps"] == 4 * (N // 4) and result["epochs"] == 4

    run = tmp_path / "run"
    assert (run / "config.yaml").is_file() and (run / "curves.png").stat().st_size > 1000
    # run.log names the machine: CPU model and relevant flags as /proc/cpuinfo has them, and the thread pools
    machine = next(line for line in (run / "run.log").read_text().splitlines() if " machine: " in line)
    cpuinfo = Path("/proc/cpuinfo").read_text().split("\n\n")[0]
    model = re.search(r"model name\s*:\s*(.*)", cpuinfo).group(1).strip()
    flags = re.search(r"^flags\s*:(.*)$", cpuinfo, re.M).group(1).split()
    assert f"machine: {model}, {os.cpu_count()} cores, " in machine
    for flag in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile"):
        assert (f" {flag}" in machine.split(";")[0]) == (flag in flags), flag
    assert "threads: intra_op " in machine and "inter_op " in machine and "onednn " in machine
    csv_rows = (run / "log.csv").read_text().strip().splitlines()
    assert len(csv_rows) == 1 + 4 and csv_rows[0].startswith("epoch,step,loss")
    # TensorBoard holds log.csv's numbers: every scalar of every epoch, read back from the event files.
    with open(run / "log.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    scalars = tensorboard_scalars(run / "tensorboard")
    events = {key: value for key, value in scalars.items() if not key[0].startswith("step/")}  # per-step loss and lr
    assert sorted(step for tag, step in scalars if tag == "step/loss") == list(range(1, 17))
    expected = {(tag, int(row["epoch"])): float(row[tag]) for row in rows
                for tag in ("loss", "lr", "val_miou", "val_pixel_accuracy", "val_mean_accuracy", "seconds",
                            "images_per_second", "data_wait")}
    expected.update({(f"val_iou/{name}", int(row["epoch"])): float(row[f"iou_{name}"]) for row in rows
                     for name in ("dark", "red")})
    assert set(events) == set(expected) and len(expected) == 4 * 10
    for key, value in expected.items():
        assert events[key] == pytest.approx(value, rel=1e-6), key  # float32 events, CSV of float64
    # Plain Keras loads the checkpoint and it predicts what the trainer validated.
    loaded = keras.models.load_model(run / "checkpoints" / "last.keras")
    np.testing.assert_allclose(loaded.predict(images[:2], verbose=0), trainer.model.predict(images[:2], verbose=0),
                               rtol=1e-5, atol=1e-5)
    assert (run / "checkpoints" / "best.keras").is_file()
    # Two committed generations: the newest and the one before it (and nothing else).
    previous = json.loads((run / "checkpoints" / "state-previous.json").read_text())
    assert previous["step"] == 12 and previous["model_file"] == "previous-00000012.keras"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "best.keras", "last.keras", "previous-00000012.keras", "resume-00000012.npz", "resume-00000016.npz",
        "state-previous.json", "state.json"]


def tensorboard_scalars(folder: Path) -> dict:
    """``{(tag, step): value}`` of every scalar in the event files under ``folder``."""
    found = {}
    for path in sorted(folder.rglob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.HasField("image") or value.metadata.plugin_data.plugin_name == "text":
                    continue  # the validation pictures and the run's facts and config
                found[(value.tag, int(event.step))] = float(tf.make_ndarray(value.tensor)) if value.HasField(
                    "tensor") else float(value.simple_value)
    return found


class Poison(keras.callbacks.Callback):
    """Fills the kernels of the given layers with ``value`` when global step ``at_step`` has finished.

    NaN *inputs* are no fault injection: inside a tf.function Grappler fuses Conv2D + BiasAdd +
    ReLU into oneDNN's _FusedConv2D, whose ReLU maps NaN to 0, so on such builds the loss of
    NaN images stays finite (issue 13). A NaN logits kernel gives a NaN loss on any machine.
    """

    def __init__(self, at_step, value, layers=(-1,)):
        super().__init__()
        self.at_step, self.value, self.layers, self.seen = at_step, value, layers, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.at_step:
            for index in self.layers:
                kernel = self.model.layers[index].kernel
                kernel.assign(np.full(kernel.shape, self.value, np.float32))


def committed(run):
    """(state.json, weights of last.keras) of a run folder."""
    state = json.loads((run / "checkpoints" / "state.json").read_text())
    return state, keras.models.load_model(run / "checkpoints" / "last.keras")


def test_nan_loss_stops_with_clear_error_and_keeps_last_good_checkpoint(tmp_path):
    images, masks = make_data()
    config = make_config(tmp_path, epochs=3)
    poison = Poison(at_step=N // 4, value=np.nan)  # the last step of epoch 1: its save is refused
    trainer = Trainer(config, model_fn=tiny_model, dataset_fn=in_memory(images, masks), callbacks=[poison], verbose=0)
    with pytest.raises(SegtrainError, match=r"train step 4: .*non-finite.*no good checkpoint exists yet"):
        trainer.fit()
    assert not (tmp_path / "run" / "checkpoints" / "state.json").exists()

    poison = Poison(at_step=N // 4 + 1, value=np.nan)  # after epoch 1's checkpoint: step 6 has a NaN loss
    trainer = Trainer(config, model_fn=tiny_model, dataset_fn=in_memory(images, masks), callbacks=[poison], verbose=0)
    with pytest.raises(SegtrainError, match=r"train step 6: loss is nan.*the last good checkpoint is .*last.keras \(step 4\)"):
        trainer.fit()
    state, model = committed(tmp_path / "run")
    assert state["epoch"] == 1 and state["step"] == N // 4  # the end of the last good epoch
    assert all(np.isfinite(w).all() for w in model.get_weights())


def test_finite_loss_with_exploded_weights_is_never_committed(tmp_path):
    """Issue 14.2: the loss of step k is computed before its update, so it can be finite while the
    update leaves weights whose outputs are not (here: kernels of 1e30, logits overflow)."""
    images, masks = make_data()
    config = make_config(tmp_path, epochs=2, checkpoint_every_steps=1)
    poison = Poison(at_step=3, value=1e30, layers=(-2, -1))
    trainer = Trainer(config, model_fn=tiny_model, dataset_fn=in_memory(images, masks), callbacks=[poison], verbose=0)
    with pytest.raises(SegtrainError, match=r"train step 3: the update left non-finite.*checkpoint is .*\(step 2\)"):
        trainer.fit()
    state, model = committed(tmp_path / "run")
    assert state["step"] == 2
    assert np.isfinite(model.predict(images[:4], verbose=0)).all()


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_huge_learning_rate_stops_and_names_a_verified_checkpoint(tmp_path, optimizer):
    """The issue's reproductions: SGD at lr 1e30 (an exploded "last good" checkpoint) and Adam at lr 1e9
    (completed with loss 5.8e18 and exit code 0). A checkpoint counts as good once the loss of the
    step after it (computed with its weights) was finite and not exploded."""
    images, masks = make_data()
    lr = 1e30 if optimizer == "sgd" else 1e9
    config = make_config(tmp_path, epochs=3, checkpoint_every_steps=1, optimizer={"name": optimizer, "learning_rate": lr})
    history = StepLosses()
    with pytest.raises(SegtrainError, match=r"diverged|loss is nan") as raised:
        Trainer(config, model_fn=tiny_model, dataset_fn=in_memory(images, masks), callbacks=[history], verbose=0).fit()
    failed = int(re.match(r"train step (\d+):", str(raised.value)).group(1))
    run = tmp_path / "run"
    if (run / "checkpoints" / "state.json").exists():
        state, model = committed(run)
        assert f"last.keras (step {state['step']})" in str(raised.value)
        assert np.isfinite(model.predict(images, verbose=0)).all()
        # the step after the named checkpoint trained on its weights with a sane loss
        assert state["step"] < failed - 1 and history.losses[state["step"]] < 1000 * max(history.losses[0], 1)
    else:
        assert "no good checkpoint exists yet" in str(raised.value)
        assert not (run / "checkpoints" / "last.keras").exists()


class StepLosses(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.losses = []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(logs["loss"])


class NanLossSwitch(keras.layers.Layer):
    """Adds a training loss that is NaN once its integer switch is on; outputs and float weights stay finite,
    so a checkpoint written with the switch on passes every check and only the next step's loss fails."""

    def build(self, input_shape):
        self.on = self.add_weight(shape=(), dtype="int32", initializer="zeros", trainable=False, name="on")

    def call(self, x, training=None):
        if training:
            self.add_loss(keras.ops.where(self.on > 0, float("nan"), 0.0))
        return x


def switchable_model(config, input_shape):
    x = keras.Input((None, None, 3))
    y = NanLossSwitch()(keras.layers.Rescaling(1 / 127.5, offset=-1)(x))
    y = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(y)
    return keras.Model(x, keras.layers.Conv2D(config.data.num_classes, 1)(y))


class SwitchOn(keras.callbacks.Callback):
    def __init__(self, at_step):
        super().__init__()
        self.at_step, self.seen = at_step, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.at_step:
            self.model.layers[2].on.assign(1)


def test_nan_loss_after_a_checkpoint_falls_back_to_the_one_before(tmp_path):
    """Checkpoint every step; the weights saved after step 5 give a NaN loss at step 6: step 5's checkpoint
    is discarded and step 4's is committed again (state, resume file and last.keras agree)."""
    images, masks = make_data()
    straight = Trainer(make_config(tmp_path / "ref", steps=4), model_fn=switchable_model,
                       dataset_fn=in_memory(images, masks), verbose=0)
    straight.fit()
    config = make_config(tmp_path, epochs=3, checkpoint_every_steps=1)
    trainer = Trainer(config, model_fn=switchable_model, dataset_fn=in_memory(images, masks),
                      callbacks=[SwitchOn(at_step=5)], verbose=0)
    with pytest.raises(SegtrainError, match=r"train step 6: loss is nan.*last.keras \(step 4\)"):
        trainer.fit()
    checkpoints = tmp_path / "run" / "checkpoints"
    state = json.loads((checkpoints / "state.json").read_text())
    assert state["step"] == 4 and state["epoch"] == 1 and state["resume_file"] == "resume-00000004.npz"
    assert sorted(p.name for p in checkpoints.glob("resume-*.npz")) == ["resume-00000004.npz"]
    assert not list(checkpoints.glob("previous-*.keras")) and not (checkpoints / "state-previous.json").exists()
    model = keras.models.load_model(checkpoints / "last.keras", custom_objects={"NanLossSwitch": NanLossSwitch})
    for a, b in zip(model.get_weights(), straight.model.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_weighted_run_uses_explicit_class_weights(tmp_path):
    images, masks = make_data()
    config = make_config(tmp_path, epochs=1, class_weights=[0.0, 1.0])
    trainer = Trainer(config, model_fn=tiny_model, dataset_fn=in_memory(images, masks), verbose=0)
    trainer.fit()
    # Only class 1 carries weight: the model learns to predict it everywhere it can.
    assert trainer.class_weights == [0.0, 1.0]
    pred = trainer.model.predict(images, verbose=0).argmax(-1)
    assert (pred[masks != 255] == 1).mean() > 0.9


class CtrlC(keras.callbacks.Callback):
    """Delivers a real SIGINT to this process after the given global batch."""

    def __init__(self, at_step):
        super().__init__()
        self.seen, self.at_step = 0, at_step

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.at_step:
            os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_saves_a_resumable_checkpoint(tmp_path):
    images, masks = make_data()
    data = in_memory(images, masks)
    straight = Trainer(make_config(tmp_path / "a", epochs=2), model_fn=tiny_model, dataset_fn=data, verbose=0)
    expected = straight.fit()

    config = make_config(tmp_path / "b", epochs=2)
    with pytest.raises(TrainingInterrupted, match="--resume"):
        Trainer(config, model_fn=tiny_model, dataset_fn=data, callbacks=[CtrlC(6)], verbose=0).fit()
    state = json.loads((tmp_path / "b" / "run" / "checkpoints" / "state.json").read_text())
    assert (state["epoch"], state["batch"], state["step"]) == (1, 2, 6)  # mid-epoch, after the 6th step
    resumed = Trainer(config, model_fn=tiny_model, dataset_fn=data, verbose=0)
    got = resumed.fit(resume=True)
    assert got["steps"] == expected["steps"] and got["miou"] == pytest.approx(expected["miou"], abs=1e-6)
    for a, b in zip(straight.model.get_weights(), resumed.model.get_weights()):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["constant", "poly", "cosine", "step"])
def test_schedule_matches_formula_and_serialises(name):
    base, total, warm = 0.1, 100, 10
    sched = WarmupSchedule(base, total, name, warmup_steps=warm, power=0.9, step_size=30, gamma=0.5, min_lr=0.001)
    for step in (0, 4, 9, 10, 40, 99, 100, 150):
        if step < warm:
            want = base * (step + 1) / warm
        else:
            frac = min((step - warm) / (total - warm), 1.0)
            want = {"constant": base,
                    "poly": 0.001 + (base - 0.001) * (1 - frac) ** 0.9,
                    "cosine": 0.001 + (base - 0.001) * 0.5 * (1 + math.cos(math.pi * frac)),
                    "step": base * 0.5 ** ((step - warm) // 30)}[name]
        assert float(sched(step)) == pytest.approx(want, rel=1e-5, abs=1e-7), step
    back = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(sched))
    assert back.get_config() == sched.get_config()


# ---- the command line, in subprocesses: exit codes, stderr, hangs --------------------------
REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "configs" / "quickstart.yaml"
BAD_LABELS = ["--set", "data.num_classes=3", "--set", "data.classes=[a,b,c]"]  # the sample masks hold class 3


def segtrain_train(*args, timeout=120):
    """``segtrain train`` in a fresh process, with the user's default environment (no log-level override)."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env.update(PYTHONPATH=str(REPO), CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, "-m", "segtrain", "train", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def test_bad_mask_exits_1_with_one_stderr_line(tmp_path):
    done = segtrain_train("--config", str(QUICKSTART), *BAD_LABELS, "--set", "train.steps=2",
                          "--set", f"output_dir={tmp_path / 'run'}")
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [done.stderr.strip()], done.stderr  # no TensorFlow start-up lines
    assert done.stderr.startswith("error: ") and "SegmentationClass" in done.stderr and "num_classes" in done.stderr


@pytest.mark.slow
def test_bad_mask_never_hangs_at_exit(tmp_path):
    """Issue 14.1: the error line printed, then the process hung in the tf.data iterator's destructor (or
    aborted with rc 134) in 19 of 27 runs; the hang showed in 2 of 8 runs on this machine before the fix."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env.update(PYTHONPATH=str(REPO), CUDA_VISIBLE_DEVICES="")
    for pair in range(5):  # 10 attempts, two at a time (most of each is TensorFlow's single-threaded start-up)
        runs = [subprocess.Popen([sys.executable, "-m", "segtrain", "train", "--config", str(QUICKSTART), *BAD_LABELS,
                                  "--set", "train.steps=2", "--set", f"output_dir={tmp_path / f'run{pair}_{i}'}"],
                                 env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for i in range(2)]
        for i, run in enumerate(runs):
            try:
                _, stderr = run.communicate(timeout=90)
            except subprocess.TimeoutExpired:
                for other in runs:
                    other.kill()
                pytest.fail(f"attempt {2 * pair + i + 1}: the process did not exit within 90 s after the data error")
            assert run.returncode == 1, (2 * pair + i + 1, run.returncode, stderr[-2000:])
            assert stderr.count("\n") == 1 and stderr.startswith("error: "), stderr


# ---- the run folder: one run at a time, unusable folders, full disks ------------------------
HOLD_LOCK = "import sys, time; from segtrain.run_lock import RunLock; RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(120)"


def test_second_run_in_a_folder_is_refused_and_a_killed_holder_does_not_block(tmp_path):
    run = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        second = segtrain_train("--config", str(QUICKSTART), "--set", "train.steps=1", "--set", f"output_dir={run}")
        assert second.returncode == 1
        assert second.stderr.splitlines() == [second.stderr.strip()], second.stderr
        assert f"is in use by another training run (pid {holder.pid} on " in second.stderr
        assert not (run / "checkpoints").exists() and not (run / "config.yaml").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # The holder died without cleaning up: its lock file stays, the lock does not.
    assert (run / ".lock").read_text().startswith(f"pid {holder.pid} ")
    images, masks = make_data()
    Trainer(make_config(tmp_path, epochs=1), model_fn=tiny_model, dataset_fn=in_memory(images, masks), verbose=0).fit()
    Trainer(make_config(tmp_path, epochs=2), model_fn=tiny_model, dataset_fn=in_memory(images, masks),
            verbose=0).fit(resume=True)
    assert json.loads((run / "checkpoints" / "state.json").read_text())["step"] == 2 * N // 4


def writable(folder):
    try:
        (folder / "probe").mkdir()
    except OSError:
        return False
    (folder / "probe").rmdir()
    return True


def test_output_dir_that_is_a_file_or_read_only_is_one_error(tmp_path):
    images, masks = make_data()
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    for target in (afile, afile / "run"):
        config = make_config(tmp_path, epochs=1)
        config.output_dir = str(target)
        with pytest.raises(SegtrainError, match=rf"output_dir: cannot write to {target} "):
            Trainer(config, model_fn=tiny_model, dataset_fn=in_memory(images, masks), verbose=0).fit()
    locked = tmp_path / "readonly"
    locked.mkdir()
    locked.chmod(0o555)
    if writable(locked):  # root ignores permissions; sysfs refuses even root
        locked = Path("/sys")
        if not locked.is_dir() or writable(locked):
            pytest.skip("no read-only folder available to this user")
    config = make_config(tmp_path, epochs=1)
    config.output_dir = str(locked / "run")
    with pytest.raises(SegtrainError, match=rf"output_dir: cannot write to {locked / 'run'} "):
        Trainer(config, model_fn=tiny_model, dataset_fn=in_memory(images, masks), verbose=0).fit()


def test_disk_full_while_saving_is_one_error_and_keeps_the_committed_checkpoint(tmp_path, monkeypatch):
    images, masks = make_data()
    real_savez, calls = np.savez, []

    def savez_on_a_full_disk(fh, **arrays):
        calls.append(1)
        if len(calls) == 2:  # the second checkpoint: half written, then the disk is full
            fh.write(b"\0" * 1000)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_savez(fh, **arrays)

    monkeypatch.setattr(np, "savez", savez_on_a_full_disk)
    config = make_config(tmp_path, epochs=2)
    with pytest.raises(SegtrainError, match=r"could not save the checkpoint of step 8 \(No space left on device\); "
                                            r"nothing was lost \(.*last.keras \(step 4\)\).*--resume"):
        Trainer(config, model_fn=tiny_model, dataset_fn=in_memory(images, masks), verbose=0).fit()
    checkpoints = tmp_path / "run" / "checkpoints"
    assert json.loads((checkpoints / "state.json").read_text())["step"] == 4
    assert not list(checkpoints.glob(f".*{TMP_SUFFIX}*"))
    monkeypatch.setattr(np, "savez", real_savez)
    result = Trainer(config, model_fn=tiny_model, dataset_fn=in_memory(images, masks), verbose=0).fit(resume=True)
    assert result["steps"] == 8


# ---- console output ------------------------------------------------------------------------
class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_console_is_plain_when_redirected_and_bar_and_epoch_line_show_the_same_loss(tmp_path, capsys):
    images, masks = make_data()
    trainer = Trainer(make_config(tmp_path, epochs=2), model_fn=tiny_model, dataset_fn=in_memory(images, masks))
    trainer.fit()
    out = capsys.readouterr().out  # not a terminal: no bar, no carriage returns, no ANSI codes
    assert "\r" not in out and "\x1b" not in out
    history = json.loads((tmp_path / "run" / "checkpoints" / "state.json").read_text())["history"]
    lines = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"]
    for line, row in zip(lines, history):
        assert f"mean loss {row['loss']:.4f}" in line

    from segtrain.run_log import ConsoleLog

    terminal = Terminal()
    console = ConsoleLog(stream=terminal, refresh_s=0.0)
    losses = [0.9, 0.5, 0.4]
    for i in range(3):
        console.step(0, 1, i + 1, 3, float(np.mean(losses[: i + 1])), 0.01)
    console.epoch_end({"epoch": 1, "loss": float(np.mean(losses)), "lr": 0.01, "seconds": 1.0}, 1)
    shown = terminal.getvalue()
    assert "\x1b" not in shown
    last_bar, summary = shown.split("\r")[-1].split("\n")[:2]  # the last bar, then the epoch line
    assert "3/3" in last_bar and "mean loss 0.6000" in last_bar
    assert shown.endswith("\nepoch 1/1: mean loss 0.6000  lr 0.01  (1.0 s)\n")


def test_checkpoint_store_refuses_non_finite_variables(tmp_path):
    from segtrain.checkpoints import CheckpointStore, LoopState, NonFiniteCheckpoint

    model = tiny_model(make_config(tmp_path), None)
    optimizer = keras.optimizers.SGD()
    optimizer.build(model.trainable_variables)
    store = CheckpointStore(tmp_path / "run")
    store.save(model, optimizer, LoopState(step=1))
    model.layers[-1].bias.assign([np.inf, 0.0])
    for save in (lambda: store.save(model, optimizer, LoopState(step=2)), lambda: store.save_best(model)):
        with pytest.raises(NonFiniteCheckpoint, match=r"bias: NaN or infinite values, not saved \(.*\(step 1\)\)"):
            save()
    assert store.load_state().step == 1 and not store.best.exists()
    assert [p.name for p in store.dir.glob("resume-*.npz")] == ["resume-00000001.npz"]


class SlowBatches:
    """In-memory batches that each take ``delay`` seconds to arrive, as from a data layer that cannot keep up."""

    def __init__(self, images, masks, batch_size, delay):
        self.images, self.masks, self.batch_size, self.delay = images, masks, batch_size, delay

    def __len__(self):
        return len(self.images) // self.batch_size

    def __iter__(self):
        for i in range(len(self)):
            time.sleep(self.delay)
            s = slice(i * self.batch_size, (i + 1) * self.batch_size)
            yield self.images[s], self.masks[s]


def test_log_reports_images_per_second_and_the_time_spent_waiting_for_data(tmp_path):
    images, masks = make_data()

    def waited_seconds(delay: float) -> list[float]:
        def dataset_fn(config, split, training, *, epoch=0, skip_batches=0):
            return SlowBatches(images, masks, config.train.batch_size if training else 1, delay if training else 0.0)

        run = tmp_path / str(delay)
        Trainer(make_config(run, epochs=3), model_fn=tiny_model, dataset_fn=dataset_fn, verbose=0).fit()
        rows = list(csv.DictReader(io.StringIO((run / "run" / "log.csv").read_text())))
        for row in rows:
            seconds, rate = float(row["seconds"]), float(row["images_per_second"])
            assert N / (seconds + 0.006) - 0.006 <= rate <= N / (seconds - 0.006) + 0.006  # both are rounded to 0.01
        return [float(row["data_wait"]) * float(row["seconds"]) for row in rows[1:]]  # the first epoch compiles

    prompt, slow = waited_seconds(0.0), waited_seconds(0.25)
    for fast_wait, slow_wait in zip(prompt, slow):  # 4 batches an epoch, each 0.25 s late; steps take milliseconds
        assert 0.9 <= slow_wait - fast_wait <= 1.9  # (tf.data's end-of-epoch latency varies a few tenths)


def test_data_clock_counts_only_the_time_spent_inside_next():
    from segtrain.data.loading.batches import DataClock

    clock = DataClock()
    for _ in clock.timed(SlowBatches(*make_data(), batch_size=4, delay=0.05)):
        time.sleep(0.1)  # the step: not waiting
    assert clock.batches == N // 4
    assert 4 * 0.05 <= clock.waited < 4 * 0.05 + 0.2  # the 0.4 s of steps in between would be counted as well


class HostOp(keras.layers.Layer):
    """Adds zero through a host (NumPy) callback: TensorFlow runs it, XLA cannot compile it."""

    def call(self, x):
        zero = tf.numpy_function(lambda a: np.zeros_like(a), [x], tf.float32)
        zero.set_shape(x.shape)
        return x + tf.stop_gradient(zero)


def host_op_model(config, input_shape):
    x = keras.Input((None, None, 3))
    y = HostOp()(keras.layers.Rescaling(1 / 127.5, offset=-1)(x))
    y = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(y)
    return keras.Model(x, keras.layers.Conv2D(config.data.num_classes, 1)(y))


def test_jit_compile_trains_what_the_plain_step_trains(tmp_path):
    """``train.jit_compile: true`` gives the losses and weights of the plain tf.function step (float32)."""
    images, masks = make_data()
    runs = {}
    for jit in (False, True):
        losses = []
        record = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: losses.append(logs["loss"]))
        trainer = Trainer(make_config(tmp_path / f"jit{jit}", epochs=2, jit_compile=jit, mixed_precision="none"),
                          model_fn=tiny_model, dataset_fn=in_memory(images, masks), callbacks=[record], verbose=0)
        result = trainer.fit()
        runs[jit] = losses, trainer.model.get_weights(), result["miou"]
    (plain_losses, plain_weights, plain_miou), (xla_losses, xla_weights, xla_miou) = runs[False], runs[True]
    assert len(xla_losses) == 8 and xla_losses[-1] < xla_losses[0]
    # XLA fuses and reorders float32 arithmetic (measured: losses within 4e-7 relative, weights within
    # 2.2e-7 absolute, the same val mIoU).
    np.testing.assert_allclose(xla_losses, plain_losses, rtol=1e-5, atol=0)
    for a, b in zip(plain_weights, xla_weights, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    assert xla_miou == pytest.approx(plain_miou, abs=1e-4)  # a single flipped pixel would move it by ~5e-4


def test_jit_compile_really_compiles_the_step_with_xla(tmp_path):
    """The flag reaches ``tf.function(jit_compile=True)``: a host callback, which plain TensorFlow runs,
    makes the XLA-compiled step fail to compile."""
    images, masks = make_data()

    def fit(jit):
        config = make_config(tmp_path / f"jit{jit}", epochs=1, jit_compile=jit, mixed_precision="none")
        return Trainer(config, model_fn=host_op_model, dataset_fn=in_memory(images, masks), verbose=0).fit()

    assert fit(False)["steps"] == N // 4
    with pytest.raises(tf.errors.InvalidArgumentError, match="(?s)compile.*PyFunc"):
        fit(True)


class EpochWeights(keras.callbacks.Callback):
    """Keeps each epoch's end weights; turns the classifier around on the last step so the last epoch is the worst."""

    def __init__(self, invert_at_step):
        super().__init__()
        self.invert_at_step, self.steps, self.weights = invert_at_step, 0, []

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if self.steps == self.invert_at_step:
            layer = self.model.layers[-1]
            layer.set_weights([-w for w in layer.get_weights()])  # 2 classes: every prediction flips

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append(self.model.get_weights())


def test_best_keras_holds_the_best_epoch_not_the_last(tmp_path):
    images, masks = make_data()
    config = make_config(tmp_path, epochs=4, mixed_precision="none")
    record = EpochWeights(invert_at_step=4 * (N // 4))
    trainer = Trainer(config, model_fn=tiny_model, dataset_fn=in_memory(images, masks), callbacks=[record], verbose=0)
    result = trainer.fit()
    history = json.loads((tmp_path / "run" / "checkpoints" / "state.json").read_text())["history"]
    mious = [row["val_miou"] for row in history]
    best = int(np.argmax(mious))
    assert best < 3 and mious[3] < mious[best] - 0.2  # the inverted last epoch is not the best
    assert result["best_epoch"] == best + 1 and result["best_miou"] == mious[best]
    saved = keras.models.load_model(tmp_path / "run" / "checkpoints" / "best.keras").get_weights()
    for got, want in zip(saved, record.weights[best], strict=True):
        np.testing.assert_array_equal(got, want)
    last = keras.models.load_model(tmp_path / "run" / "checkpoints" / "last.keras").get_weights()
    for got, want in zip(last, record.weights[3], strict=True):
        np.testing.assert_array_equal(got, want)
    assert any(not np.array_equal(a, b) for a, b in zip(saved, last))


def test_label_groups_pick_best_keras_by_their_mean_dice(tmp_path):
    """With evaluate.groups, each validated row carries the groups' mean Dice and best.keras follows it."""
    images, masks = make_data()
    config = make_config(tmp_path, epochs=3, mixed_precision="none")
    config = from_dict({**to_dict(config), "evaluate": {"groups": {"red": [1], "all": [0, 1]}}})
    result = Trainer(config, model_fn=tiny_model, dataset_fn=in_memory(images, masks), verbose=0).fit()
    history = json.loads((tmp_path / "run" / "checkpoints" / "state.json").read_text())["history"]
    for row in history:  # the mean of the two groups' Dice: red is class 1; all covers every labelled pixel
        assert row["val_group_mdice"] == pytest.approx((row["val_per_class_dice"]["red"] + 1.0) / 2)
    scores = [row["val_group_mdice"] for row in history]
    assert result["best_metric"] == "val_group_mdice"
    assert result["best_epoch"] == int(np.argmax(scores)) + 1 and result["best_score"] == max(scores)
