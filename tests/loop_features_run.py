"""Run by tests/test_loop_features.py under one KERAS_BACKEND: the loop features on test_training's tiny
model (no BatchNorm), float32; prints one JSON object of measurements (the test asserts on them)."""

import contextlib
import io
import json
import sys
import tempfile
from pathlib import Path

import keras
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_training import in_memory, make_config, make_data, tiny_model  # noqa: E402

from segtrain.training import Trainer  # noqa: E402

IMAGES, MASKS = make_data()
ROOT = Path(tempfile.mkdtemp())


def fit(name: str, callbacks=(), resume: bool = False, **train):
    folder = ROOT / name
    folder.mkdir(exist_ok=True)
    config = make_config(folder, mixed_precision="none", **train)
    trainer = Trainer(config, model_fn=tiny_model, dataset_fn=in_memory(IMAGES, MASKS), callbacks=list(callbacks),
                      verbose=1)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = trainer.fit(resume=resume)
    state = json.loads((folder / "run" / "checkpoints" / "state.json").read_text())
    return trainer, result, state, out.getvalue(), folder / "run"


def saved_weights(run: Path, which: str = "last") -> list[np.ndarray]:
    return keras.models.load_model(run / "checkpoints" / f"{which}.keras").get_weights()


def max_diff(a, b) -> float:
    return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)))) for x, y in zip(a, b, strict=True))


def ema() -> dict:
    """5 SGD steps with train.ema: last.keras against a NumPy EMA of the raw weights seen after each step."""
    momentum, raw = 0.8, []
    record = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: raw.append(
        [np.array(w) for w in trainer_model[0].get_weights()]))
    trainer_model = []

    class Grab(keras.callbacks.Callback):
        def set_model(self, model):
            trainer_model[:] = [model]

    common = dict(steps=5, batch_size=2, ema={"momentum": momentum}, optimizer={"name": "sgd", "learning_rate": 0.05})
    trainer, _, _, _, run = fit("ema", [Grab(), record], **common)
    average = raw[0]  # the average starts at the weights after the first update
    for weights in raw[1:]:
        average = [momentum * a + (1 - momentum) * w for a, w in zip(average, weights)]
    moved = max_diff(raw[-1], raw[0])

    class Crash(keras.callbacks.Callback):  # dies after step 4, whose checkpoint is not written: resume from 3
        def on_train_batch_end(self, batch, logs=None):
            if batch == 3:
                raise RuntimeError("crash")

    try:
        fit("ema_resumed", [Crash()], checkpoint_every_steps=1, **common)
    except RuntimeError:
        pass
    resumed, _, _, _, resumed_run = fit("ema_resumed", resume=True, checkpoint_every_steps=1, **common)
    return {"ema_vs_numpy": max_diff(saved_weights(run), average), "ema_raw_in_memory": max_diff(
        trainer.model.get_weights(), raw[-1]), "ema_weights_moved": moved,
        "ema_resume_last": max_diff(saved_weights(resumed_run), saved_weights(run)),
        "ema_resume_raw": max_diff(resumed.model.get_weights(), trainer.model.get_weights())}


def accumulation() -> dict:
    """Batch 8 against 4 micro-batches of 2, two updates, with a warmup that counts updates."""
    common = dict(optimizer={"name": "sgd", "learning_rate": 0.1},
                  schedule={"name": "poly", "warmup_steps": 1})
    initial = []
    first = keras.callbacks.LambdaCallback(on_train_begin=lambda logs: initial.extend(first.model.get_weights()))
    big, _, big_state, _, _ = fit("batch8", steps=2, batch_size=8, **common)
    small, _, small_state, out, small_run = fit("batch2x4", [first], steps=8, batch_size=2, accumulate_steps=4, **common)
    return {"accumulate_loss": abs(big_state["history"][0]["loss"] - small_state["history"][0]["loss"]),
            "accumulate_weights": max_diff(big.model.get_weights(), small.model.get_weights()),
            "accumulate_moved": max_diff(small.model.get_weights(), initial),
            "accumulate_updates": int(keras.ops.convert_to_numpy(small.optimizer.iterations)),
            "accumulate_printed": "effective batch 8 (4 micro-batches of 2 per optimizer update)" in out,
            "accumulate_logged": "effective batch 8" in (small_run / "run.log").read_text()}


def callbacks() -> dict:
    """Every hook, the val metrics in on_epoch_end's logs, stops by EarlyStopping, a batch-level
    LambdaCallback and train.early_stopping."""
    calls, epoch_logs = [], []
    spy = keras.callbacks.LambdaCallback(
        on_train_begin=lambda logs: calls.append("train_begin"), on_train_end=lambda logs: calls.append("train_end"),
        on_epoch_begin=lambda epoch, logs: calls.append(f"epoch_begin {epoch}"),
        on_epoch_end=lambda epoch, logs: (calls.append(f"epoch_end {epoch}"), epoch_logs.append(logs)),
        on_train_batch_begin=lambda batch, logs: calls.append(f"batch_begin {batch}"),
        on_train_batch_end=lambda batch, logs: calls.append(f"batch_end {batch}"))
    stopping = keras.callbacks.EarlyStopping(monitor="val_miou", mode="max", patience=1, min_delta=1.0)
    _, keras_result, keras_state, keras_out, _ = fit("keras_early", [spy, stopping], epochs=5)

    def stop_at_batch(batch, logs):
        if batch == 2:
            lambda_stop.model.stop_training = True

    lambda_stop = keras.callbacks.LambdaCallback(on_train_batch_end=stop_at_batch)
    _, _, batch_state, batch_out, _ = fit("lambda_stop", [lambda_stop], epochs=3)
    _, own_result, own_state, own_out, _ = fit(
        "own_early", epochs=6, early_stopping={"metric": "val_miou", "patience": 2, "min_delta": 1.0})
    ious = [row["val_miou"] for row in own_state["history"]]
    return {"calls": calls, "epoch_logs": epoch_logs,
            "keras_early_epochs": keras_result["epochs"], "keras_early_stopped_by": keras_state["stopped_by"],
            "keras_early_line": [line for line in keras_out.splitlines() if line.startswith("stopped at")],
            "batch_stop": {k: batch_state[k] for k in ("step", "epoch", "done", "stopped_by")},
            "batch_stop_validated": "val_miou" in batch_state["history"][-1],
            "batch_stop_line": [line for line in batch_out.splitlines() if line.startswith("stopped at")],
            "own_early_epochs": own_result["epochs"], "own_early_line": [
                line for line in own_out.splitlines() if line.startswith("stopped at")],
            "own_best_epoch": own_state["best_epoch"], "own_argmax_epoch": int(np.argmax(ious)) + 1}


if __name__ == "__main__":
    checks = {"ema": ema, "accumulation": accumulation, "callbacks": callbacks}
    found = {}
    for name in sys.argv[1:] or checks:
        found.update(checks[name]())
    print("RESULT " + json.dumps(found))
