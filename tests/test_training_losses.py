"""The trainer minimises the configured loss (train.loss) or the one passed as Trainer(loss_fn=...)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
import tensorflow as tf

from segtrain.config import from_dict
from segtrain.training import Trainer
from test_losses import reference_dice, reference_loss, reference_lovasz

N, SIZE, BATCH = 8, 12, 4
REPO = Path(__file__).resolve().parents[1]


def data():
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 255, (N, SIZE, SIZE, 3)).astype(np.float32)
    masks = (images[..., 0] > 128).astype(np.uint8) + (images[..., 1] > 200).astype(np.uint8)
    masks[:, :1] = 255
    return images, masks


def dataset_fn(config, split, training, *, epoch=0, skip_batches=0):
    images, masks = data()
    return tf.data.Dataset.from_tensor_slices((images, masks)).batch(BATCH, drop_remainder=training).skip(skip_batches)


class FirstLoss(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.losses = []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(logs["loss"])


def run(tmp_path, loss_fn=None, **train):
    """Train one epoch; return (the first logged loss, the logits of the first batch before any step)."""
    seen = {}

    def model_fn(config, input_shape):
        x = keras.Input((None, None, 3))
        y = keras.layers.Conv2D(config.data.num_classes, 3, padding="same")(keras.layers.Rescaling(1 / 255)(x))
        model = keras.Model(x, y)
        seen["logits"] = model(data()[0][:BATCH]).numpy()  # what the first step sees
        return model

    raw = {"data": {"format": "folders", "root": str(tmp_path), "num_classes": 3},
           "train": {"epochs": 1, "batch_size": BATCH, **train}, "output_dir": str(tmp_path / "run")}
    losses = FirstLoss()
    Trainer(from_dict(raw), model_fn=model_fn, dataset_fn=dataset_fn, callbacks=[losses], loss_fn=loss_fn,
            verbose=0).fit()
    return losses.losses[0], seen["logits"]


def test_trainer_minimises_the_configured_weighted_sum(tmp_path):
    w = [1.0, 2.0, 0.5]
    first, logits = run(tmp_path, class_weights=w,
                        loss=[{"name": "ce"}, {"name": "dice", "weight": 0.5}, {"name": "lovasz", "weight": 0.25}])
    masks = data()[1][:BATCH]
    want = (reference_loss(masks, logits, w) + 0.5 * reference_dice(masks, logits, w)
            + 0.25 * reference_lovasz(masks, logits, w))
    assert first == pytest.approx(want, rel=1e-5)


def test_trainer_takes_a_user_loss_fn(tmp_path):
    def mean_square_logit(masks, logits):
        return tf.reduce_mean(tf.square(tf.cast(logits, tf.float32)))

    first, logits = run(tmp_path, loss_fn=mean_square_logit, loss=[{"name": "lovasz"}])  # loss_fn wins
    assert first == pytest.approx(float(np.mean(logits.astype(np.float64) ** 2)), rel=1e-5)


MIRRORED = textwrap.dedent("""
    import json, os, sys
    import keras, numpy as np, tensorflow as tf
    sys.path.insert(0, sys.argv[2])
    from test_training_losses import data, dataset_fn, FirstLoss, BATCH
    from segtrain.config import from_dict
    from segtrain.training import Trainer

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    seen = {}

    def model_fn(config, input_shape):
        x = keras.Input((None, None, 3))
        model = keras.Model(x, keras.layers.Conv2D(3, 3, padding="same")(keras.layers.Rescaling(1 / 255)(x)))
        seen["logits"] = model(data()[0][:BATCH]).numpy().tolist()
        return model

    out = sys.argv[1]
    raw = {"data": {"format": "folders", "root": out, "num_classes": 3},
           "train": {"epochs": 1, "batch_size": BATCH, "class_weights": [1.0, 2.0, 0.5],
                     "loss": [{"name": "ce"}, {"name": "dice", "weight": 0.5}, {"name": "lovasz", "weight": 0.25}]},
           "output_dir": out}
    losses = FirstLoss()
    Trainer(from_dict(raw), model_fn=model_fn, dataset_fn=dataset_fn, callbacks=[losses], verbose=0,
            strategy=tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])).fit()
    print(json.dumps({"first": losses.losses[0], "logits": seen["logits"]}))
""")


@pytest.mark.slow
def test_mirrored_replicas_normalise_ce_globally_and_average_dice_and_lovasz(tmp_path):
    script = tmp_path / "mirrored.py"
    script.write_text(MIRRORED)
    env = dict(os.environ, PYTHONPATH=str(REPO), CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, str(script), str(tmp_path / "run"), str(Path(__file__).parent)],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    logits, masks, w = np.array(got["logits"]), data()[1][:BATCH], [1.0, 2.0, 0.5]
    halves = [slice(0, BATCH // 2), slice(BATCH // 2, BATCH)]  # replica 0 gets the first half
    want = (reference_loss(masks, logits, w)
            + 0.5 * np.mean([reference_dice(masks[h], logits[h], w) for h in halves])
            + 0.25 * np.mean([reference_lovasz(masks[h], logits[h], w) for h in halves]))
    whole_batch = (reference_loss(masks, logits, w) + 0.5 * reference_dice(masks, logits, w)
                   + 0.25 * reference_lovasz(masks, logits, w))
    assert got["first"] == pytest.approx(want, rel=1e-5)
    assert abs(whole_batch - want) > 1e-4  # the two semantics differ on this batch, so the check has teeth
