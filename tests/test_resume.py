"""Exact resume: a run SIGKILLed mid-epoch and resumed ends where the uninterrupted run ends (on
TensorFlow, JAX and PyTorch);
resuming a finished run to a new length; damaged resume files; litter of killed saves.

Real data layer (the built-in sample dataset, augmented), real zoo model (narrow SegNet-Basic
with BatchNorm), op determinism on CPU; subprocesses so the kill is a real SIGKILL.
"""

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import need_backend
from test_training import in_memory, make_config, make_data, tiny_model

from segtrain.io_utils import TMP_SUFFIX
from segtrain.errors import SegtrainError
from segtrain.training import Trainer

REPO = Path(__file__).resolve().parents[1]
STEPS_PER_EPOCH, EPOCHS = 7, 2  # 60 sample images, batch 8

SCRIPT = textwrap.dedent('''
    import json, os, sys, time
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import keras

    import segtrain.models  # noqa: F401  (registers the zoo's layers for load_model)
    from segtrain.config import load_config
    from segtrain.training import Trainer

    class Slow(keras.callbacks.Callback):  # leaves the test time to kill us mid-run
        def on_train_batch_end(self, batch, logs=None):
            time.sleep(0.15)

    config = load_config(sys.argv[1], ["output_dir=" + sys.argv[2]])
    result = Trainer(config, callbacks=[Slow()], verbose=0).fit(resume=sys.argv[3] == "1")
    with open(os.path.join(sys.argv[2], "result.json"), "w") as fh:
        json.dump(result, fh)
''')


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "resume.yaml"
    path.write_text(textwrap.dedent(f"""
        _base_: {REPO / "configs" / "quickstart.yaml"}
        data:
          crop: [32, 32]
        model:
          width: 4
          norm: batch
        train:
          epochs: {EPOCHS}
          batch_size: 8
          deterministic: true
          checkpoint_every_steps: 2
    """))
    return path


def start(tmp_path: Path, config: Path, out: Path, resume: bool, backend: str = "tensorflow") -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO), CUDA_VISIBLE_DEVICES="", KERAS_BACKEND=backend)
    return subprocess.Popen([sys.executable, str(tmp_path / "run.py"), str(config), str(out), "1" if resume else "0"],
                            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def read_state(out: Path) -> dict | None:
    try:
        return json.loads((out / "checkpoints" / "state.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


@pytest.mark.parametrize("backend", ["tensorflow", "jax", pytest.param("torch", marks=pytest.mark.slow)])
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(tmp_path, backend):
    import keras

    import segtrain.models  # noqa: F401  (registers the zoo's layers for load_model)

    (tmp_path / "run.py").write_text(SCRIPT)
    config = write_config(tmp_path)
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    need_backend(backend)
    a = start(tmp_path, config, straight, resume=False, backend=backend)
    b = start(tmp_path, config, killed, resume=False, backend=backend)
    deadline = time.time() + 240
    while (read_state(killed) or {}).get("step", 0) < 4:  # a mid-epoch checkpoint exists
        assert b.poll() is None, b.stdout.read()
        assert time.time() < deadline, "the run never reached step 4"
        time.sleep(0.05)
    time.sleep(random.uniform(0.0, 0.6))  # an arbitrary moment: mid-step, mid-save, ...
    b.send_signal(signal.SIGKILL)
    b.wait()
    state = read_state(killed)
    assert b.returncode == -signal.SIGKILL
    assert not state["done"] and 4 <= state["step"] < STEPS_PER_EPOCH * EPOCHS

    resumed = start(tmp_path, config, killed, resume=True, backend=backend)
    out_a, _ = a.communicate(timeout=300)
    out_b, _ = resumed.communicate(timeout=300)
    assert a.returncode == 0, out_a
    assert resumed.returncode == 0, out_b

    ra = json.loads((straight / "result.json").read_text())
    rb = json.loads((killed / "result.json").read_text())
    assert ra["steps"] == rb["steps"] == STEPS_PER_EPOCH * EPOCHS
    assert abs(ra["miou"] - rb["miou"]) <= 1e-6 and abs(ra["loss"] - rb["loss"]) <= 1e-6
    ha = read_state(straight)["history"]
    hb = read_state(killed)["history"]
    np.testing.assert_allclose([r["loss"] for r in ha], [r["loss"] for r in hb], rtol=0, atol=1e-6)
    wa = keras.models.load_model(straight / "checkpoints" / "last.keras").get_weights()
    wb = keras.models.load_model(killed / "checkpoints" / "last.keras").get_weights()
    assert len(wa) == len(wb)
    for x, y in zip(wa, wb):
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-6)


# ---- in-process resume cases on the tiny model of test_training ------------------------------
def tiny_trainer(tmp_path, **train):
    images, masks = make_data()
    return Trainer(make_config(tmp_path, **train), model_fn=tiny_model, dataset_fn=in_memory(images, masks), verbose=0)


def test_resume_of_a_finished_run_with_more_epochs_continues_to_the_new_end(tmp_path, capsys):
    straight = tiny_trainer(tmp_path / "straight", epochs=4)
    expected = straight.fit()
    tiny_trainer(tmp_path / "grown", epochs=2).fit()
    grown = tiny_trainer(tmp_path / "grown", epochs=4)
    got = grown.fit(resume=True)
    assert got["steps"] == expected["steps"] == 16 and got["epochs"] == 4
    assert got["miou"] == pytest.approx(expected["miou"], abs=1e-6)
    for a, b in zip(straight.model.get_weights(), grown.model.get_weights(), strict=True):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-6)
    # Resuming it again at the same length: nothing to do, and it says so.
    again = tiny_trainer(tmp_path / "grown", epochs=4)
    again.verbose = 1
    assert again.fit(resume=True)["steps"] == 16
    assert "is complete (step 16 of 16); raise train.epochs or train.steps" in capsys.readouterr().out


def test_resume_to_another_length_under_a_decaying_schedule_is_refused(tmp_path):
    tiny_trainer(tmp_path, epochs=1, schedule={"name": "cosine"}).fit()
    with pytest.raises(SegtrainError, match=r"train.steps/train.epochs: .*cosine.* over 4 steps; resuming with 8"):
        tiny_trainer(tmp_path, epochs=2, schedule={"name": "cosine"}).fit(resume=True)
    with pytest.raises(SegtrainError, match=r"already at step 4, past the 2 steps"):
        tiny_trainer(tmp_path, steps=2).fit(resume=True)


def test_missing_or_truncated_resume_file_is_one_clear_error(tmp_path):
    tiny_trainer(tmp_path, epochs=1).fit()
    resume_file = next((tmp_path / "run" / "checkpoints").glob("resume-*.npz"))
    resume_file.write_bytes(resume_file.read_bytes()[: resume_file.stat().st_size // 2])
    with pytest.raises(SegtrainError, match=rf"{resume_file.name}: the resume file is damaged"):
        tiny_trainer(tmp_path, epochs=2).fit(resume=True)
    resume_file.unlink()
    with pytest.raises(SegtrainError, match=rf"{resume_file.name}: the resume file named by .*state.json is missing"):
        tiny_trainer(tmp_path, epochs=2).fit(resume=True)


def test_resume_removes_temporaries_of_dead_processes_only(tmp_path):
    run = tmp_path / "run"
    tiny_trainer(tmp_path, epochs=1).fit()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        litter = [run / f".log.csv.{dead.pid}{TMP_SUFFIX}", run / "checkpoints" / f".resume-00000002.npz.{dead.pid}{TMP_SUFFIX}"]
        kept = run / "checkpoints" / f".last.keras.{alive.pid}{TMP_SUFFIX}.keras"
        for path in [*litter, kept]:
            path.write_bytes(b"x" * 1000)
        tiny_trainer(tmp_path, epochs=2).fit(resume=True)
        assert not any(path.exists() for path in litter) and kept.exists()
    finally:
        alive.kill()
        alive.wait()


def test_auto_forced_to_bf16_learns_and_resumes_exactly(tmp_path, monkeypatch):
    """``mixed_precision: auto`` made to pick bf16 (a CPU reporting avx512_bf16, no GPU), whatever this
    machine has: the tiny run learns, and a run stopped at epoch 2 and resumed to 4 ends where it ends."""
    from segtrain import precision

    monkeypatch.setattr(precision, "gpu_capabilities", lambda: [])
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx512_bf16"})
    straight = tiny_trainer(tmp_path / "straight", epochs=4)
    assert straight.config.train.mixed_precision == "auto"
    expected = straight.fit()
    assert "dtype policy mixed_bfloat16 (CPU with avx512_bf16)" in (tmp_path / "straight" / "run" / "run.log").read_text()
    assert straight.model.layers[-1].compute_dtype == "bfloat16"
    history = json.loads((tmp_path / "straight" / "run" / "checkpoints" / "state.json").read_text())["history"]
    assert history[-1]["loss"] < 0.8 * history[0]["loss"] and expected["miou"] >= 0.7

    tiny_trainer(tmp_path / "grown", epochs=2).fit()
    grown = tiny_trainer(tmp_path / "grown", epochs=4)
    got = grown.fit(resume=True)
    assert grown.model.layers[-1].compute_dtype == "bfloat16"
    assert got["steps"] == expected["steps"] == 16
    assert got["miou"] == pytest.approx(expected["miou"], abs=1e-6) and got["loss"] == pytest.approx(expected["loss"], abs=1e-6)
    for a, b in zip(straight.model.get_weights(), grown.model.get_weights(), strict=True):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-6)
