"""Stop signals: SIGTERM and SIGUSR1 (schedulers, containers) stop `segtrain train` at a step boundary with
a checkpoint and exit code 143; a plain re-run with ``runtime.auto_resume`` continues it exactly.

Real signals in real `segtrain train` processes on every backend. Where a signal lands matters, so the
child sends it to itself at a chosen moment (a step, the start of validation or of precise BN, the middle
of a checkpoint write: after the resume arrays, before ``last.keras``) instead of the test racing it. The
finishing run also trains the same config uninterrupted in the same process and reports the largest
weight difference: it must be 0 up to 1e-6, as for Ctrl-C and SIGKILL (tests/test_resume.py).
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
from test_training import in_memory, make_config, make_data, tiny_model

from segtrain.backend import installed
from segtrain.errors import SegtrainError
from segtrain.training import STOP_SIGNALS, Trainer, TrainingInterrupted

REPO = Path(__file__).resolve().parents[1]
STEPS_PER_EPOCH = 7  # 60 sample images, batch 8

# `segtrain train --config CONFIG` (the CLI's main) on a small BatchNorm model (the zoo's SegNet is resumed
# in tests/test_resume.py), sending itself SIGNAL at SIGNAL_AT once; with REFERENCE set it then trains the
# config uninterrupted into that folder and writes max |dW| there.
SCRIPT = textwrap.dedent('''
    import json, os, signal, sys

    import segtrain.checkpoints as checkpoints
    import segtrain.precise_bn as precise_bn
    import segtrain.training as training
    from segtrain.cli import main

    def small_model(config, input_shape):  # compiles in a fraction of the zoo's time; BatchNorm for precise BN
        import keras

        x = keras.Input(input_shape)
        y = keras.layers.Conv2D(4, 3, padding="same")(keras.layers.Rescaling(1 / 127.5, offset=-1)(x))
        y = keras.layers.ReLU()(keras.layers.BatchNormalization()(y))
        return keras.Model(x, keras.layers.Conv2D(config.data.num_classes, 1)(y))

    training._default_model = small_model
    at, signum = os.environ.get("SIGNAL_AT"), getattr(signal, os.environ.get("SIGNAL", "SIGTERM"))

    def then_signal(owner, name, when=lambda *args: True):
        original = getattr(owner, name)
        sent = []

        def wrapper(*args, **kwargs):
            if not sent and when(*args):
                sent.append(os.kill(os.getpid(), signum))
            return original(*args, **kwargs)

        setattr(owner, name, wrapper)

    if at is not None and at.startswith("step"):  # as step N begins
        then_signal(training.Trainer, "_record", lambda trainer, state, loss: state.step + 1 == int(at[4:]))
    elif at == "save":  # resume arrays written, last.keras and state.json not yet
        then_signal(checkpoints, "save_keras")
    elif at == "precise_bn":
        then_signal(precise_bn.PreciseBN, "refresh")
    elif at == "validation":
        then_signal(training.Trainer, "validate")
    code = main(["train", "--config", sys.argv[1]])
    reference = os.environ.get("REFERENCE")
    if code == 0 and reference:
        import keras
        import numpy as np

        assert main(["train", "--config", sys.argv[1], "--set", "output_dir=" + reference]) == 0
        got, want = (keras.models.load_model(os.path.join(folder, "checkpoints", "last.keras")).get_weights()
                     for folder in (sys.argv[2], reference))
        dw = max(float(np.max(np.abs(a - b))) for a, b in zip(got, want, strict=True))
        with open(os.path.join(reference, "dw.json"), "w") as fh:
            json.dump({"max_dw": dw}, fh)
    sys.exit(code)
''')


def write_config(tmp_path: Path, epochs: int, precise_bn: int = 0) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(textwrap.dedent(f"""
        _base_: {REPO / "configs" / "quickstart.yaml"}
        data:
          resize: [32, 32]  # one shape for training and validation: one compilation each
          crop: null
          hflip: false
        train:
          epochs: {epochs}
          batch_size: 8
          deterministic: true
          checkpoint_every_steps: 2
          precise_bn:
            batches: {precise_bn}
        runtime:
          auto_resume: true
        output_dir: {tmp_path / "run"}
    """))
    (tmp_path / "run.py").write_text(SCRIPT)
    return path


def train(tmp_path: Path, backend: str, signal_at: str | None = None, signal_name: str = "SIGTERM",
          reference: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), CUDA_VISIBLE_DEVICES="", KERAS_BACKEND=backend, SIGNAL=signal_name)
    env.pop("SIGNAL_AT", None)
    env.update({"SIGNAL_AT": signal_at} if signal_at else {}, **({"REFERENCE": str(reference)} if reference else {}))
    return subprocess.run([sys.executable, str(tmp_path / "run.py"), str(tmp_path / "run.yaml"), str(tmp_path / "run")],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)


def state(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "run" / "checkpoints" / "state.json").read_text())


def stopped(tmp_path: Path, backend: str, signal_at: str, signal_name: str, step: int) -> None:
    """One run stopped by ``signal_name`` at ``signal_at``: exit 143, the line, a checkpoint of ``step``, no litter."""
    done = train(tmp_path, backend, signal_at, signal_name)
    assert done.returncode == 143, done.stdout + done.stderr
    assert f"stopped by {signal_name} at step {step}; checkpoint saved in" in done.stderr, done.stderr
    assert "continue with --resume (exit code 143)" in done.stderr
    assert state(tmp_path)["step"] == step and not state(tmp_path)["done"]
    assert not list((tmp_path / "run").rglob("*.segtrain-tmp*"))


def finished_exactly(tmp_path: Path, backend: str, steps: int) -> float:
    """The plain re-run resumes (runtime.auto_resume), finishes, and equals the uninterrupted run; returns max |dW|."""
    done = train(tmp_path, backend, reference=tmp_path / "straight")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "runtime.auto_resume: resuming the run in" in done.stdout
    assert state(tmp_path)["done"] and state(tmp_path)["step"] == steps
    straight = json.loads((tmp_path / "straight" / "checkpoints" / "state.json").read_text())
    np.testing.assert_allclose([r["loss"] for r in state(tmp_path)["history"]], [r["loss"] for r in straight["history"]],
                               rtol=0, atol=1e-6)
    max_dw = json.loads((tmp_path / "straight" / "dw.json").read_text())["max_dw"]
    print(f"{backend}: max |dW| resumed vs uninterrupted = {max_dw:.3g}")
    assert max_dw <= 1e-6
    return max_dw


@pytest.mark.slow
@pytest.mark.parametrize("backend,signal_name,signal_at,step", [
    # the signal comes while step 5's loss is read; without per-batch callbacks the loop reads it one step
    # late, with step 6 already queued, so the run stops (and is checkpointed) after step 6
    ("jax", "SIGUSR1", "step5", 6),
    ("torch", "SIGTERM", "save", 3),  # the save of step 2 finishes, step 3 runs, then the run stops
])
def test_signal_mid_epoch_stops_with_a_checkpoint_and_a_plain_rerun_resumes_exactly(tmp_path, backend, signal_name,
                                                                                     signal_at, step):
    if not installed(backend):
        pytest.skip(f"needs {backend} (pip install -e \".[{backend}]\")")
    write_config(tmp_path, epochs=1)
    stopped(tmp_path, backend, signal_at, signal_name, step)
    finished_exactly(tmp_path, backend, STEPS_PER_EPOCH)


@pytest.mark.slow
def test_signals_during_precise_bn_and_validation(tmp_path):
    """One TensorFlow run stopped twice, in each of the two long phases of an epoch's end."""
    write_config(tmp_path, epochs=3, precise_bn=2)
    stopped(tmp_path, "tensorflow", "precise_bn", "SIGUSR1", step=STEPS_PER_EPOCH)  # after epoch 1's end and its save
    stopped(tmp_path, "tensorflow", "validation", "SIGTERM", step=2 * STEPS_PER_EPOCH)
    finished_exactly(tmp_path, "tensorflow", 3 * STEPS_PER_EPOCH)


# ---- in process: the exit code a signal gives, and what auto_resume refuses ---------------------------
class SendSignal(keras.callbacks.Callback):
    """Sends ``signum`` to this process after the ``at_step``-th batch."""

    def __init__(self, signum, at_step):
        super().__init__()
        self.signum, self.at_step, self.seen = signum, at_step, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.at_step:
            os.kill(os.getpid(), self.signum)


def tiny_trainer(tmp_path, callbacks=(), **raw):
    images, masks = make_data()
    config = make_config(tmp_path, epochs=2)
    for key, value in raw.items():
        section, name = key.split("__")
        setattr(getattr(config, section), name, value)
    return Trainer(config, model_fn=tiny_model, dataset_fn=in_memory(images, masks), callbacks=list(callbacks), verbose=0)


@pytest.fixture
def survivable():
    """No-op handlers for the stop signals while the test runs: if the trainer failed to catch one, the
    signal must fail the test, not end (SIGTERM) or interrupt (SIGINT) the test process."""
    previous = {signum: signal.signal(signum, lambda *args: None) for signum in STOP_SIGNALS}
    yield
    for signum, handler in previous.items():
        signal.signal(signum, handler)


@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 143), (signal.SIGUSR1, 143), (signal.SIGINT, 130)])
def test_each_stop_signal_saves_and_gives_its_exit_code(tmp_path, signum, code, survivable):
    before = signal.getsignal(signum)
    with pytest.raises(TrainingInterrupted) as stop:
        tiny_trainer(tmp_path, [SendSignal(signum, 3)]).fit()
    assert stop.value.exit_code == code
    assert json.loads((tmp_path / "run" / "checkpoints" / "state.json").read_text())["step"] == 3
    assert signal.getsignal(signum) is before  # the handler is put back


def test_auto_resume_refuses_a_folder_holding_another_config(tmp_path, capsys, survivable):
    with pytest.raises(TrainingInterrupted):
        tiny_trainer(tmp_path, [SendSignal(signal.SIGTERM, 3)], runtime__auto_resume=True).fit()
    with pytest.raises(SegtrainError, match=r"runtime.auto_resume: .* holds a run of another config "
                                            r"\(train.seed: 0 there, 1 here\); run it with that config"):
        tiny_trainer(tmp_path, runtime__auto_resume=True, train__seed=1).fit()
    resumed = tiny_trainer(tmp_path, runtime__auto_resume=True)
    resumed.verbose = 1
    assert resumed.fit()["steps"] == 8
    assert f"runtime.auto_resume: resuming the run in {tmp_path / 'run'} from step 3" in capsys.readouterr().out
