"""The loop reads a step's loss one step late (JAX: the next step is queued before the host waits):
the same losses, weights, NaN stops, checkpoints and resume as reading it at once (issue 31.4).

A no-op per-batch callback makes the loop read each loss at once (a hook may stop the run or
change the weights), so one process compares the two readings on the same tiny run. JAX runs
in a subprocess (Keras picks its backend at import).
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import need_backend

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent('''
    import json, os, signal, sys, tempfile
    from pathlib import Path
    import keras
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    from test_training import make_config, make_data, tiny_model
    from segtrain.errors import SegtrainError
    from segtrain.training import Trainer, TrainingInterrupted

    images, masks = make_data()  # 16 images, batch 4: 4 steps an epoch

    class MarkerLoss(keras.layers.Layer):
        """A NaN training loss for a batch holding a pixel over 1e6; its gradient, outputs and weights stay
        finite, so only that step's loss fails (a NaN image would reach the weights first)."""
        def call(self, x, training=None):
            if training:
                self.add_loss(keras.ops.where(keras.ops.max(x) > 1e6, float("nan"), 0.0))
            return x

    def marked_model(config, input_shape):
        x = keras.Input((None, None, 3))
        return keras.Model(x, tiny_model(config, input_shape)(MarkerLoss()(x)))

    def batches(nan_at=None, term_at=None):
        """NumPy batches; a marked image (a NaN loss) at global step ``nan_at``; SIGTERM to this process as step ``term_at``'s batch is taken."""
        def dataset_fn(config, split, training, *, epoch=0, skip_batches=0):
            order = np.random.default_rng([config.train.seed, epoch]).permutation(16) if training else np.arange(16)
            for i in range(skip_batches, 4):
                x = images[order[4 * i:4 * i + 4]].copy()
                step = epoch * 4 + i + 1
                if training and step == nan_at:
                    x[0, 0, 0, 0] = 1e7
                if training and step == term_at:
                    os.kill(os.getpid(), signal.SIGTERM)
                yield x, masks[order[4 * i:4 * i + 4]]

        class Sized:
            def __init__(self, *args, **kwargs):
                self.args, self.kwargs = args, kwargs
            def __len__(self):
                return 4 - self.kwargs.get("skip_batches", 0)
            def __iter__(self):
                return dataset_fn(*self.args, **self.kwargs)
        return Sized

    def run(folder, at_once, resume=False, **data):
        hooks = [keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, l: None)] if at_once else []
        config = make_config(Path(folder), epochs=2, checkpoint_every_steps=3, mixed_precision="none",
                             schedule={"name": "constant"})
        trainer = Trainer(config, model_fn=marked_model, dataset_fn=batches(**data), callbacks=hooks, verbose=0)
        try:
            result = {"loss": trainer.fit(resume=resume)["loss"]}
        except (SegtrainError, TrainingInterrupted) as err:
            result = {"error": str(err).replace(str(folder), "RUN")}
        state = Path(folder, "run", "checkpoints", "state.json")
        if state.exists():
            result["step"] = json.loads(state.read_text())["step"]
            model = keras.models.load_model(Path(folder, "run", "checkpoints", "last.keras"),
                                            custom_objects={"MarkerLoss": MarkerLoss})
            result["weights"] = [w.tolist() for w in model.get_weights()]
        return result

    out = {"backend": keras.backend.backend()}
    for at_once in (False, True):
        key = "at_once" if at_once else "late"
        out[key + "_nan"] = run(tempfile.mkdtemp(), at_once, nan_at=5)
        out[key + "_straight"] = run(tempfile.mkdtemp(), at_once)
    folder = tempfile.mkdtemp()
    out["late_stopped"] = run(folder, False, term_at=6)
    out["late_resumed"] = run(folder, False, resume=True)
    print("RESULT" + json.dumps(out))
''')


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    need_backend("jax")
    script = tmp_path_factory.mktemp("queue") / "run.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(REPO), KERAS_BACKEND="jax", CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, str(script), str(REPO / "tests")], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT"))
    return json.loads(line[len("RESULT"):])


def test_read_late_trains_the_same_weights_and_losses(runs):
    assert runs["backend"] == "jax"
    late, at_once = runs["late_straight"], runs["at_once_straight"]
    assert late["step"] == at_once["step"] == 8
    assert late["loss"] == at_once["loss"] and late["weights"] == at_once["weights"]


def test_nan_at_step_5_stops_with_the_same_message_and_checkpoint(runs):
    """Step 5 is read after step 6 is queued; its NaN still names step 5, and the step-4 checkpoint (whose
    weights gave the NaN) is discarded for step 3's, as when the loss is read at once."""
    late, at_once = runs["late_nan"], runs["at_once_nan"]
    assert late["error"].startswith("train step 5: loss is nan") and "last.keras (step 3)" in late["error"]
    assert late["error"] == at_once["error"]
    assert late["step"] == at_once["step"] == 3 and late["weights"] == at_once["weights"]


def test_stop_signal_mid_epoch_then_resume_matches_the_straight_run(runs):
    stopped, resumed = runs["late_stopped"], runs["late_resumed"]
    assert stopped["error"].startswith("stopped by SIGTERM at step 6") and stopped["step"] == 6
    assert resumed["step"] == 8 and resumed["weights"] == runs["late_straight"]["weights"]
    assert resumed["loss"] == runs["late_straight"]["loss"]
