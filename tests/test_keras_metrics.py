"""Keras interop: the streaming void-aware mean IoU, and segtrain objects reloading in a fresh process."""

import json
import math
import os
import subprocess
import sys
import textwrap

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest

from segtrain.errors import SegtrainError
from segtrain.keras_metrics import MaskedMeanIoU
from segtrain.losses import MaskedCrossEntropy
from segtrain.metrics import compute_metrics, confusion_matrix
from segtrain.schedules import WarmupSchedule


def batches(n=4, classes=5, seed=2):
    """Logits/labels over several batches; class 3 never in the labels, ~20 % void."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        labels = rng.choice([0, 1, 2, 4], size=(2, 6, 7)).astype(np.uint8)
        labels[rng.random(labels.shape) < 0.2] = 255
        logits = rng.normal(0, 1, (2, 6, 7, classes)).astype(np.float32)
        logits[..., 3] -= 1.5  # class 3 is predicted rarely, but sometimes
        out.append((labels, logits))
    return out


def numpy_miou(pairs, classes=5):
    cm = sum(confusion_matrix(lab, lg.argmax(-1).astype(np.uint8), classes) for lab, lg in pairs)
    return compute_metrics(cm)["miou"]


def test_streaming_miou_equals_numpy_over_several_batches():
    pairs = batches()
    metric = MaskedMeanIoU(5)
    for labels, logits in pairs:
        metric.update_state(labels, logits)
    assert float(metric.result()) == pytest.approx(numpy_miou(pairs), rel=1e-6)
    # Not the mean of per-batch mIoUs.
    per_batch = np.mean([numpy_miou([p]) for p in pairs])
    assert abs(per_batch - numpy_miou(pairs)) > 1e-3
    metric.reset_state()
    assert math.isnan(float(metric.result()))  # nothing seen
    metric.update_state(pairs[0][0][..., None], pairs[0][1])  # (B, H, W, 1) labels
    assert float(metric.result()) == pytest.approx(numpy_miou(pairs[:1]), rel=1e-6)


def test_void_only_absent_classes_and_bad_labels():
    logits = np.zeros((1, 2, 2, 3), np.float32)
    logits[..., 1] = 1.0  # predicts class 1 everywhere
    metric = MaskedMeanIoU(3)
    metric.update_state(np.full((1, 2, 2), 255, np.uint8), logits)
    assert math.isnan(float(metric.result()))  # only void: no valid pixel
    metric.update_state(np.array([[[1, 1], [0, 255]]], np.uint8), logits)
    # class 1: TP 2, FP 1 (the class-0 pixel) -> 2/3; class 0: 0/1 -> 0; class 2 never seen -> left out
    assert float(metric.result()) == pytest.approx((2 / 3 + 0) / 2, rel=1e-6)
    metric.update_state(np.array([[[1, 7], [0, 0]]], np.uint8), logits)  # label 7 with 3 classes
    assert math.isnan(float(metric.result()))
    with pytest.raises(SegtrainError, match="sample_weight"):
        metric.update_state(np.zeros((1, 2, 2), np.uint8), logits, sample_weight=np.ones((1, 2, 2)))
    with pytest.raises(SegtrainError, match="look one-hot"):
        metric.update_state(np.zeros((1, 2, 2, 3), np.float32), logits)


def tiny_model(classes=5):
    x = keras.Input((None, None, 3))
    return keras.Model(x, keras.layers.Conv2D(classes, 3, padding="same")(x))


def test_model_evaluate_with_xla_matches_numpy():
    rng = np.random.default_rng(4)
    images = rng.normal(size=(12, 8, 9, 3)).astype(np.float32)
    labels = rng.integers(0, 4, (12, 8, 9)).astype(np.uint8)  # class 4 only ever predicted
    labels[:, 0] = 255
    model = tiny_model()
    model.compile(loss=MaskedCrossEntropy(), metrics=[MaskedMeanIoU(5)], jit_compile=True)
    got = model.evaluate(images, labels, batch_size=4, verbose=0, return_dict=True)["miou"]
    pred = model.predict(images, batch_size=4, verbose=0)
    want = compute_metrics(confusion_matrix(labels, pred.argmax(-1).astype(np.uint8), 5))["miou"]
    assert got == pytest.approx(want, rel=1e-6)


@pytest.mark.slow
def test_compiled_model_reloads_in_a_fresh_process_after_one_import(tmp_path):
    model = tiny_model(3)
    schedule = WarmupSchedule(0.1, 100, "poly", warmup_steps=5)
    model.compile(optimizer=keras.optimizers.SGD(schedule), loss=MaskedCrossEntropy(class_weights=[1.0, 2.0, 0.5]),
                  metrics=[MaskedMeanIoU(3)])
    rng = np.random.default_rng(0)
    images = rng.normal(size=(4, 6, 6, 3)).astype(np.float32)
    labels = rng.integers(0, 3, (4, 6, 6)).astype(np.uint8)
    labels[:, 0] = 255
    model.fit(images, labels, epochs=1, verbose=0)
    want = model.evaluate(images, labels, verbose=0, return_dict=True)
    np.savez(tmp_path / "data.npz", images=images, labels=labels)
    model.save(tmp_path / "m.keras")
    code = textwrap.dedent(f"""
        import json, numpy as np, keras
        import segtrain.models
        model = keras.models.load_model({str(tmp_path / "m.keras")!r})
        data = np.load({str(tmp_path / "data.npz")!r})
        got = model.evaluate(data["images"], data["labels"], verbose=0, return_dict=True)
        print(json.dumps({{"loss_class": type(model.loss).__name__, "weights": model.loss.class_weights, **got}}))
    """)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["loss_class"] == "MaskedCrossEntropy" and got["weights"] == [1.0, 2.0, 0.5]
    assert got["loss"] == pytest.approx(want["loss"], rel=1e-6)
    assert got["miou"] == pytest.approx(want["miou"], rel=1e-6) and math.isfinite(got["miou"])


def test_plain_import_pulls_no_tensorflow():
    code = ("import sys, segtrain, segtrain.config, segtrain.loss_specs, segtrain.labels; "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
