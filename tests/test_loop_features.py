"""Issue 26 items 3-6 on TensorFlow, JAX and PyTorch: Keras callbacks (every hook, val metrics in the
epoch logs, a clean stop by ``model.stop_training``), ``train.early_stopping`` (exact across SIGKILL and
--resume), ``train.ema`` (against a NumPy average, resume exact) and ``train.accumulate_steps`` (4 x 2
equals batch 8). The measurements come from ``loop_features_run.py``, one process per backend."""

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import need_backend
from test_training import in_memory, make_config, make_data, tiny_model

from segtrain.errors import SegtrainError
from segtrain.metrics import ConfusionMatrix
from segtrain.training import Trainer

REPO = Path(__file__).resolve().parents[1]
BACKENDS = ["tensorflow", "jax", "torch"]
_MEASURED: dict = {}


def measured(backend: str) -> dict:
    """``loop_features_run.py`` under ``backend`` (run once per backend and kept for the tests of this module)."""
    need_backend(backend)
    if backend not in _MEASURED:
        env = dict(os.environ, PYTHONPATH=str(REPO), CUDA_VISIBLE_DEVICES="", KERAS_BACKEND=backend)
        done = subprocess.run([sys.executable, str(REPO / "tests" / "loop_features_run.py")], env=env, cwd=REPO,
                              capture_output=True, text=True, timeout=400)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-3000:]
        _MEASURED[backend] = json.loads(lines[-1][len("RESULT "):])
        print(backend, {k: v for k, v in _MEASURED[backend].items() if k.startswith(("ema", "accumulate"))})
    return _MEASURED[backend]


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_ema_equals_a_numpy_average_and_resumes_exactly(backend):
    got = measured(backend)
    assert got["ema_weights_moved"] > 0.01  # 5 steps moved the weights: the average is not trivially equal
    assert got["ema_vs_numpy"] <= 1e-6  # last.keras holds the average (float32 round-off only)
    assert got["ema_raw_in_memory"] == 0.0  # training continues on the raw weights
    assert got["ema_resume_last"] <= 1e-6 and got["ema_resume_raw"] <= 1e-6  # crash at step 4, resume from 3


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_four_micro_batches_of_2_equal_one_batch_of_8(backend):
    got = measured(backend)
    assert got["accumulate_moved"] > 0.01  # two updates moved the weights
    assert got["accumulate_loss"] <= 1e-6 and got["accumulate_weights"] <= 1e-6
    assert got["accumulate_updates"] == 2  # 8 micro-batches, 2 optimizer updates (the warmup counted updates)
    assert got["accumulate_printed"] and got["accumulate_logged"]


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_keras_callbacks_get_every_hook_and_stop_the_run_cleanly(backend):
    got = measured(backend)
    batches = [f"{kind} {i}" for i in range(4) for kind in ("batch_begin", "batch_end")]
    assert got["calls"] == ["train_begin", "epoch_begin 0", *batches, "epoch_end 0",
                            "epoch_begin 1", *batches, "epoch_end 1", "train_end"]
    for logs in got["epoch_logs"]:
        assert {"loss", "lr", "val_miou", "val_pixel_accuracy", "val_mean_accuracy", "val_mdice"} <= set(logs)
    # EarlyStopping(val_miou, mode max, min_delta 1): nothing improves by 1, so it stops after 2 epochs.
    assert got["keras_early_epochs"] == 2
    assert got["keras_early_line"] == ["stopped at epoch 2 (step 8 of 20): callback EarlyStopping set model.stop_training"]
    # A LambdaCallback stopping after batch 2: that epoch ends there, validated and saved, done.
    assert got["batch_stop"] == {"step": 3, "epoch": 1, "done": True,
                                 "stopped_by": "callback LambdaCallback set model.stop_training"}
    assert got["batch_stop_validated"] and len(got["batch_stop_line"]) == 1


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_train_early_stopping_stops_after_patience_validations(backend):
    got = measured(backend)
    assert got["own_early_epochs"] == 3  # epoch 1 sets the best; 2 and 3 miss it by min_delta 1: patience 2
    assert len(got["own_early_line"]) == 1
    assert "train.early_stopping: val_miou did not improve by more than 1 in 2 validation(s)" in got["own_early_line"][0]
    assert got["own_best_epoch"] == got["own_argmax_epoch"]  # best.keras is the best validated epoch


# ---- early stopping across SIGKILL and --resume (TensorFlow; the counter is backend-independent loop state) ----
KILL_SCRIPT = textwrap.dedent('''
    import json, os, sys, time
    sys.path.insert(0, sys.argv[3])
    import keras
    from test_training import in_memory, make_config, make_data, tiny_model
    from segtrain.training import Trainer

    class Slow(keras.callbacks.Callback):  # leaves the test time to kill us mid-run
        def on_train_batch_end(self, batch, logs=None):
            time.sleep(0.2)

    folder = sys.argv[1]
    config = make_config(__import__("pathlib").Path(folder), epochs=10, checkpoint_every_steps=1, mixed_precision="none",
                         early_stopping={"metric": "val_miou", "patience": 3, "min_delta": 1.0})
    images, masks = make_data()
    result = Trainer(config, model_fn=tiny_model, dataset_fn=in_memory(images, masks), callbacks=[Slow()],
                     verbose=0).fit(resume=sys.argv[2] == "1")
    with open(os.path.join(folder, "result.json"), "w") as fh:
        json.dump(result, fh)
''')


def _start(tmp_path: Path, folder: Path, resume: bool) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO), CUDA_VISIBLE_DEVICES="", KERAS_BACKEND="tensorflow")
    return subprocess.Popen([sys.executable, str(tmp_path / "run.py"), str(folder), "1" if resume else "0",
                             str(REPO / "tests")], env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _state(folder: Path) -> dict:
    try:
        return json.loads((folder / "run" / "checkpoints" / "state.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


@pytest.mark.slow
def test_early_stopping_after_sigkill_and_resume_stops_at_the_same_epoch(tmp_path):
    (tmp_path / "run.py").write_text(KILL_SCRIPT)
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    straight.mkdir()
    killed.mkdir()
    a, b = _start(tmp_path, straight, False), _start(tmp_path, killed, False)
    deadline = time.time() + 240
    while _state(killed).get("step", 0) < 9:  # epochs 1-2 validated (the counter at 1), mid-epoch 3
        assert b.poll() is None, b.stdout.read()
        assert time.time() < deadline, "the run never reached step 9"
        time.sleep(0.05)
    time.sleep(random.uniform(0.0, 0.4))
    b.send_signal(signal.SIGKILL)
    b.wait()
    assert b.returncode == -signal.SIGKILL and not _state(killed)["done"]
    resumed = _start(tmp_path, killed, True)
    out_a, _ = a.communicate(timeout=240)
    out_b, _ = resumed.communicate(timeout=240)
    assert a.returncode == 0 and resumed.returncode == 0, out_a + out_b
    ra, rb = (json.loads((folder / "result.json").read_text()) for folder in (straight, killed))
    assert ra["epochs"] == rb["epochs"] == 4 and ra["steps"] == rb["steps"] == 16  # not the 10 epochs asked for
    assert _state(killed)["stopped_by"] == _state(straight)["stopped_by"]
    assert _state(killed)["stopping_wait"] == 3


# ---- in-process: config checks, refused callbacks, a stopped run resumed ------------------------------
@pytest.mark.parametrize("train,message", [
    ({"accumulate_steps": 0}, "key 'train.accumulate_steps' must be at least 1, got 0"),
    ({"ema": {"momentum": 1.0}}, "key 'train.ema.momentum' must be in (0, 1), e.g. 0.999, got 1.0"),
    ({"early_stopping": {"patience": 0}}, "key 'train.early_stopping.patience' must be at least 1, got 0"),
    ({"early_stopping": {"min_delta": -0.1}}, "key 'train.early_stopping.min_delta' must be a finite number >= 0"),
    ({"early_stopping": {"metric": "loss"}}, "key 'train.early_stopping.metric': must be one of val_miou"),
    ({"ema": {"decay": 0.9}}, "unknown key 'train.ema.decay'; allowed keys here: momentum"),
])
def test_bad_loop_feature_keys_are_one_line_naming_the_key(tmp_path, train, message):
    with pytest.raises(SegtrainError) as err:
        make_config(tmp_path, **train)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_null_sections_are_off(tmp_path):
    config = make_config(tmp_path, ema=None, early_stopping=None)
    assert config.train.ema is None and config.train.early_stopping is None and config.train.accumulate_steps == 1


@pytest.mark.parametrize("callback", [lambda: keras.callbacks.ReduceLROnPlateau("val_miou", mode="max"),
                                      lambda: keras.callbacks.BackupAndRestore("/tmp/never"),
                                      lambda: keras.callbacks.TensorBoard("/tmp/never")])
def test_replaced_keras_callbacks_are_refused_in_one_line(tmp_path, callback):
    with pytest.raises(SegtrainError, match=r"Trainer\(callbacks=\.\.\.\): keras\.callbacks\.\w+ does not work in "
                                            r"segtrain's loop: .*; (use|point) "):
        Trainer(make_config(tmp_path, epochs=1), model_fn=tiny_model, callbacks=[callback()], verbose=0)


def test_csv_logger_model_checkpoint_terminate_on_nan_and_a_stopped_run_resumed(tmp_path, capsys):
    images, masks = make_data()
    csv, saved = tmp_path / "keras.csv", tmp_path / "keras_best.keras"
    stopper = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: setattr(stopper.model, "stop_training", True))
    config = make_config(tmp_path, epochs=3, mixed_precision="none")
    callbacks = [keras.callbacks.CSVLogger(str(csv)), keras.callbacks.TerminateOnNaN(),
                 keras.callbacks.ModelCheckpoint(str(saved), monitor="val_miou", mode="max", save_best_only=True), stopper]
    trainer = Trainer(config, model_fn=tiny_model, dataset_fn=in_memory(images, masks), callbacks=callbacks, verbose=0)
    trainer.fit()
    header, *rows = csv.read_text().splitlines()
    assert header.split(",")[:1] == ["epoch"] and "val_miou" in header.split(",") and len(rows) == 1
    for got, want in zip(keras.models.load_model(saved).get_weights(), trainer.model.get_weights(), strict=True):
        assert abs(got - want).max() == 0.0
    result = Trainer(config, model_fn=tiny_model, dataset_fn=in_memory(images, masks), verbose=1).fit(resume=True)
    assert result["epochs"] == 1
    assert "stopped at epoch 1 (step 4): callback LambdaCallback set model.stop_training; start a new run" in \
        capsys.readouterr().out


def bn_model(config, input_shape):
    x = keras.Input((None, None, 3))
    y = keras.layers.Conv2D(8, 3, padding="same")(keras.layers.Rescaling(1 / 127.5, offset=-1)(x))
    y = keras.layers.ReLU()(keras.layers.BatchNormalization()(y))
    return keras.Model(x, keras.layers.Conv2D(config.data.num_classes, 1)(y))


def test_ema_weights_are_validated_with_precise_bn_and_saved_in_last_keras(tmp_path):
    """The logged val mIoU is that of last.keras (averaged weights, BN statistics precise BN computed for
    them), not of the raw weights the trainer keeps training."""
    images, masks = make_data()
    config = make_config(tmp_path, epochs=2, mixed_precision="none", ema={"momentum": 0.5},
                         precise_bn={"batches": 2})
    trainer = Trainer(config, model_fn=bn_model, dataset_fn=in_memory(images, masks), verbose=0)
    result = trainer.fit()
    saved = keras.models.load_model(tmp_path / "run" / "checkpoints" / "last.keras")
    miou = ConfusionMatrix(2, 255).update(masks, np.argmax(saved.predict(images, verbose=0), -1)).metrics()["miou"]
    assert abs(miou - result["miou"]) <= 1e-9
    raw = {v.path: v.numpy() for v in trainer.model.trainable_variables}
    assert max(abs(v.numpy() - raw[v.path]).max() for v in saved.trainable_variables) > 1e-3
