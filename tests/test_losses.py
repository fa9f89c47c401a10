"""Masked weighted cross-entropy and median-frequency weights against NumPy oracles."""

import glob
import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from segtrain.config import load_config
from segtrain.losses import MaskedCrossEntropy, masked_cross_entropy_terms, median_frequency_weights
from conftest import SHARED_DATA

REPO = Path(__file__).resolve().parents[1]
CAMVID = SHARED_DATA / "camvid"


def reference_loss(labels, logits, weights=None, void=255):
    """PyTorch CrossEntropyLoss(weight=w, ignore_index=void) semantics, in float64 NumPy."""
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    log_prob = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    valid = labels != void
    lab = labels[valid].astype(np.int64)
    nll = -log_prob[valid][np.arange(lab.size), lab]
    w = np.ones(logits.shape[-1]) if weights is None else np.asarray(weights, np.float64)
    return (w[lab] * nll).sum() / w[lab].sum() if lab.size else 0.0


@pytest.fixture
def batch():
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 3, (2, 5, 7, 4)).astype(np.float32)
    labels = rng.integers(0, 4, (2, 5, 7)).astype(np.uint8)
    labels[rng.random(labels.shape) < 0.3] = 255
    return labels, logits


@pytest.mark.parametrize("weights", [None, [0.5, 2.0, 1.0, 3.5]])
def test_loss_matches_numpy_reference(batch, weights):
    labels, logits = batch
    got = float(MaskedCrossEntropy(class_weights=weights)(labels, logits))
    assert got == pytest.approx(reference_loss(labels, logits, weights), rel=1e-5)


def test_void_pixels_change_nothing(batch):
    labels, logits = batch
    scrambled = logits.copy()
    scrambled[labels == 255] = 1e4  # would dominate the loss if void pixels counted
    loss = MaskedCrossEntropy(class_weights=[1, 2, 3, 4])
    assert float(loss(labels, scrambled)) == pytest.approx(float(loss(labels, logits)), rel=1e-6)


def test_all_void_batch_gives_zero_and_finite_gradient():
    logits = tf.Variable(np.random.default_rng(0).normal(size=(1, 3, 3, 5)).astype(np.float32))
    labels = np.full((1, 3, 3), 255, np.uint8)
    with tf.GradientTape() as tape:
        value = MaskedCrossEntropy()(labels, logits)
    grad = tape.gradient(value, logits)
    assert float(value) == 0.0
    assert np.all(np.isfinite(grad.numpy()))


def test_half_precision_logits_are_computed_in_float32(batch):
    labels, logits = batch
    total, count = masked_cross_entropy_terms(labels, tf.constant(logits, tf.float16))
    assert total.dtype == tf.float32
    assert float(total / count) == pytest.approx(reference_loss(labels, logits.astype(np.float16)), rel=1e-4)


def test_loss_serialises():
    loss = MaskedCrossEntropy(class_weights=[1.0, 2.0], ignore_index=7)
    back = MaskedCrossEntropy.from_config(json.loads(json.dumps(loss.get_config())))
    assert back.class_weights == [1.0, 2.0] and back.ignore_index == 7


def test_median_frequency_hand_case():
    # image A (4 px): class 0 x3, class 1 x1; image B (4 px): class 1 x2, void x2.
    a = np.array([[0, 0], [0, 1]], np.uint8)
    b = np.array([[1, 1], [255, 255]], np.uint8)
    w = median_frequency_weights(iter([a, b]), 3)
    freq0, freq1 = 3 / 4, 3 / 8  # class 1 appears in both images: 3 of 8 pixels
    med = np.median([freq0, freq1])
    np.testing.assert_allclose(w, [med / freq0, med / freq1, 0.0])  # class 2 never present -> 0


@pytest.mark.skipif(not CAMVID.is_dir(), reason="shared CamVid data not available")
def test_median_frequency_on_camvid_matches_independent_numpy(tmp_path):
    from segtrain.training import class_weights_for

    # Independent reference: read the 'L' PNGs directly, 11 = Unlabelled = void.
    class_px = np.zeros(11)
    image_px = np.zeros(11)
    for path in sorted(glob.glob(str(CAMVID / "trainannot" / "*.png"))):
        m = np.array(Image.open(path))
        for c in range(11):
            n = np.count_nonzero(m == c)
            class_px[c] += n
            image_px[c] += m.size if n else 0
    freq = class_px / image_px
    expected = np.median(freq) / freq

    config = load_config(REPO / "configs" / "_base_" / "datasets" / "camvid.yaml",
                         [f"data.root={CAMVID}", f"output_dir={tmp_path}", "train.class_weights=median_frequency"])
    got = class_weights_for(config, tmp_path, write=True)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    # The figures the shared data README quotes for this formula.
    np.testing.assert_allclose(got, [0.2793, 0.2017, 4.7865, 0.1490, 1.0000, 0.4217, 3.8467, 1.9736,
                                     0.7889, 6.3747, 8.8587], atol=6e-5)
    cached = json.loads((tmp_path / "class_weights.json").read_text())
    assert cached["weights"] == got
