"""The configurable losses (ce, focal, Dice, Lovasz, weighted sums) and median-frequency weights against NumPy oracles."""

import glob
import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from segtrain.config import from_dict, load_config
from segtrain.errors import SegtrainError
from segtrain.losses import (MaskedCrossEntropy, SegmentationLoss, build_loss, masked_cross_entropy_terms,
                             median_frequency_weights)
from conftest import SHARED_DATA, shared_data

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


def test_median_frequency_on_camvid_matches_independent_numpy(tmp_path):
    shared_data("camvid", "trainannot")
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


# ---- NumPy references, written from the papers ---------------------------------------------

def softmax(logits):
    z = np.exp(logits - logits.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def reference_focal(labels, logits, weights=None, gamma=2.0, void=255):
    """Lin et al. 2017: -(1 - p_y)^gamma log p_y, weighted mean over valid pixels."""
    probs = softmax(logits.astype(np.float64))
    valid = labels != void
    lab = labels[valid].astype(np.int64)
    p = probs[valid][np.arange(lab.size), lab]
    w = np.ones(logits.shape[-1]) if weights is None else np.asarray(weights, np.float64)
    return (w[lab] * -((1 - p) ** gamma) * np.log(p)).sum() / w[lab].sum()


def reference_dice(labels, logits, weights=None, smooth=1.0, void=255):
    """1 - class-weighted mean of per-class soft Dice over the valid pixels of the batch."""
    probs = softmax(logits.astype(np.float64))
    valid = labels != void
    w = np.ones(logits.shape[-1]) if weights is None else np.asarray(weights, np.float64)
    dices = []
    for c in range(logits.shape[-1]):
        s = probs[..., c][valid]
        g = (labels[valid] == c).astype(np.float64)
        dices.append((2 * (s * g).sum() + smooth) / (s.sum() + g.sum() + smooth))
    return 1 - (w * np.array(dices)).sum() / w.sum()


def lovasz_grad(gt_sorted):
    """Berman et al. 2018, Alg. 1: gradient of the Lovasz extension of the Jaccard loss."""
    gts = gt_sorted.sum()
    intersection = gts - np.cumsum(gt_sorted)
    union = gts + np.cumsum(1 - gt_sorted)
    jaccard = 1.0 - intersection / union
    jaccard[1:] = jaccard[1:] - jaccard[:-1]
    return jaccard


def reference_lovasz(labels, logits, weights=None, void=255):
    """lovasz_softmax_flat(classes='present') after dropping void pixels; class-weighted mean."""
    valid = labels != void
    probas = softmax(logits.astype(np.float64))[valid]
    lab = labels[valid]
    w = np.ones(logits.shape[-1]) if weights is None else np.asarray(weights, np.float64)
    losses, ws = [], []
    for c in range(logits.shape[-1]):
        fg = (lab == c).astype(np.float64)
        if fg.sum() == 0:
            continue
        errors = np.abs(fg - probas[:, c])
        perm = np.argsort(-errors, kind="stable")
        losses.append(errors[perm] @ lovasz_grad(fg[perm]))
        ws.append(w[c])
    return float(np.dot(ws, losses) / np.sum(ws)) if losses else 0.0


REFERENCES = {
    "ce": lambda labels, logits, w, **o: reference_loss(labels, logits, w),
    "focal": lambda labels, logits, w, **o: reference_focal(labels, logits, w, **o),
    "dice": lambda labels, logits, w, **o: reference_dice(labels, logits, w, **o),
    "lovasz": lambda labels, logits, w, **o: reference_lovasz(labels, logits, w),
}
CASES = [("ce", {}), ("focal", {"gamma": 2.0}), ("focal", {"gamma": 0.5}), ("dice", {"smooth": 1.0}),
         ("dice", {"smooth": 0.0}), ("lovasz", {})]


def test_every_registered_loss_has_a_reference_and_cases():
    """A loss added to ``loss_specs.LOSS_OPTIONS`` needs a NumPy reference here, and so every test below."""
    from segtrain.loss_specs import LOSS_OPTIONS

    assert set(REFERENCES) == set(LOSS_OPTIONS) == {name for name, _ in CASES}


@pytest.mark.parametrize("weights", [None, [0.5, 2.0, 1.0, 3.5]])
@pytest.mark.parametrize("name,options", CASES)
def test_each_loss_matches_its_numpy_reference(batch, name, options, weights):
    labels, logits = batch
    got = float(SegmentationLoss([{"name": name, **options}], class_weights=weights)(labels, logits))
    assert got == pytest.approx(REFERENCES[name](labels, logits, weights, **options), rel=1e-5, abs=1e-6)


def test_lovasz_with_an_absent_class_and_larger_batch():
    rng = np.random.default_rng(11)
    logits = rng.normal(0, 2, (3, 9, 11, 5)).astype(np.float32)
    labels = rng.choice([0, 1, 3, 4], size=(3, 9, 11)).astype(np.uint8)  # class 2 absent: not averaged
    labels[:, :2] = 255
    got = float(SegmentationLoss([{"name": "lovasz"}], class_weights=[1, 2, 3, 4, 5])(labels, logits))
    assert got == pytest.approx(reference_lovasz(labels, logits, [1, 2, 3, 4, 5]), rel=1e-5)


def test_focal_with_gamma_zero_is_cross_entropy(batch):
    labels, logits = batch
    focal = SegmentationLoss([{"name": "focal", "gamma": 0}])(labels, logits)
    assert float(focal) == pytest.approx(reference_loss(labels, logits), rel=1e-6)


def test_weighted_sum_of_losses(batch):
    labels, logits = batch
    w = [0.5, 2.0, 1.0, 3.5]
    loss = SegmentationLoss([{"name": "ce", "weight": 1.0}, {"name": "dice", "weight": 0.5, "smooth": 2.0},
                             {"name": "lovasz", "weight": 0.25}], class_weights=w)
    want = (reference_loss(labels, logits, w) + 0.5 * reference_dice(labels, logits, w, smooth=2.0)
            + 0.25 * reference_lovasz(labels, logits, w))
    assert float(loss(labels, logits)) == pytest.approx(want, rel=1e-5)


def numeric_gradient(fn, logits, h=1e-6):
    grad = np.zeros_like(logits, dtype=np.float64)
    flat, out = logits.astype(np.float64).reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        up, down = flat.copy(), flat.copy()
        up[i] += h
        down[i] -= h
        out[i] = (fn(up.reshape(logits.shape)) - fn(down.reshape(logits.shape))) / (2 * h)
    return grad


@pytest.mark.parametrize("name,options", CASES)
def test_gradients_match_finite_differences_of_the_reference(name, options):
    rng = np.random.default_rng(5)
    logits = rng.normal(0, 1.5, (2, 3, 4, 3)).astype(np.float32)
    labels = rng.integers(0, 3, (2, 3, 4)).astype(np.uint8)
    labels[0, 0] = 255
    w = [1.0, 2.0, 0.5]
    variable = tf.Variable(logits)
    with tf.GradientTape() as tape:
        value = SegmentationLoss([{"name": name, **options}], class_weights=w)(labels, variable)
    got = tape.gradient(value, variable).numpy()
    want = numeric_gradient(lambda x: REFERENCES[name](labels, x, w, **options), logits)
    np.testing.assert_allclose(got, want, atol=2e-5)
    assert np.all(got[labels == 255] == 0)  # void pixels get no gradient


@pytest.mark.parametrize("name,options", CASES)
def test_void_is_ignored_and_all_void_gives_zero(batch, name, options):
    labels, logits = batch
    loss = SegmentationLoss([{"name": name, **options}], class_weights=[1, 2, 3, 4])
    scrambled = logits.copy()
    scrambled[labels == 255] = 1e4
    assert float(loss(labels, scrambled)) == pytest.approx(float(loss(labels, logits)), rel=1e-6, abs=1e-7)
    variable = tf.Variable(logits)
    with tf.GradientTape() as tape:
        value = loss(np.full(labels.shape, 255, np.uint8), variable)
    assert float(value) == 0.0
    assert np.all(tape.gradient(value, variable).numpy() == 0)


def test_replica_shares_sum_to_the_documented_global_loss(batch):
    """Two replicas' shares: pixel sums normalised by the global batch, Dice averaged over replicas."""
    labels, logits = batch
    w = [0.5, 2.0, 1.0, 3.5]
    loss = SegmentationLoss([{"name": "ce"}, {"name": "focal"}, {"name": "dice", "weight": 0.5}], class_weights=w)
    halves = [(labels[:1], logits[:1]), (labels[1:], logits[1:])]
    dens = [tf.stack([d for _, d in loss.terms(*half)]) for half in halves]
    total = sum(float(loss.replica_loss(*half, lambda d: dens[0] + dens[1])) for half in halves)
    want = (reference_loss(labels, logits, w) + reference_focal(labels, logits, w)
            + 0.5 * np.mean([reference_dice(lab, lg, w) for lab, lg in halves]))
    assert total == pytest.approx(want, rel=1e-5)
    # A user's (labels, logits) -> scalar is averaged over replicas.
    user = build_loss(lambda lab, lg: tf.reduce_mean(tf.cast(lg, tf.float32)))
    two = tf.constant(2.0)
    shares = [float(user(lab, lg, lambda d: d * two)) for lab, lg in halves]
    assert sum(shares) == pytest.approx(np.mean([lg.mean() for _, lg in halves]), rel=1e-5)


def test_default_loss_is_the_old_cross_entropy_bit_for_bit(batch):
    labels, logits = batch
    w = [0.5, 2.0, 1.0, 3.5]
    total, count = masked_cross_entropy_terms(labels, logits, w)
    assert float(build_loss([{"name": "ce", "weight": 1.0}], w)(labels, logits, lambda d: d)) == float(total / count)


def test_labels_with_a_channel_axis_are_squeezed_and_one_hot_is_explained(batch):
    labels, logits = batch
    loss = MaskedCrossEntropy()
    assert float(loss(labels[..., None], logits)) == pytest.approx(float(loss(labels, logits)), rel=1e-7)
    one_hot = np.eye(4, dtype=np.float32)[np.where(labels == 255, 0, labels)]
    with pytest.raises(SegtrainError, match=r"look one-hot .*argmax\(one_hot, axis=-1\)"):
        loss(one_hot, logits)
    with pytest.raises(SegtrainError, match="do not fit logits"):
        loss(labels[0, 0], logits)


def test_segmentation_loss_serialises():
    loss = SegmentationLoss([{"name": "dice", "smooth": 0.5}, {"name": "focal", "weight": 2}], class_weights=[1, 3])
    back = SegmentationLoss.from_config(json.loads(json.dumps(loss.get_config())))
    assert back.spec == [{"name": "dice", "weight": 1.0, "smooth": 0.5}, {"name": "focal", "weight": 2.0, "gamma": 2.0}]
    assert back.class_weights == [1.0, 3.0]


# ---- train.loss in the config ----------------------------------------------------------------

def loss_config(loss=None):
    raw = {"data": {"format": "folders", "root": "/tmp", "num_classes": 3}}
    if loss is not None:
        raw["train"] = {"loss": loss}
    return from_dict(raw, source="c.yaml")


def test_config_loss_default_and_defaults_filled_in():
    assert loss_config().train.loss == [{"name": "ce", "weight": 1.0}]
    got = loss_config([{"name": "ce"}, {"name": "dice", "weight": 0.5}, {"name": "focal", "gamma": 1}])
    assert got.train.loss == [{"name": "ce", "weight": 1.0}, {"name": "dice", "weight": 0.5, "smooth": 1.0},
                              {"name": "focal", "weight": 1.0, "gamma": 1.0}]


@pytest.mark.parametrize("loss,message", [
    ([{"name": "ce"}, {"name": "dicee"}], r"c.yaml: key 'train.loss\[1\].name': unknown loss 'dicee'; use one of ce, focal, dice, lovasz"),
    ([{"weight": 1.0}], r"key 'train.loss\[0\].name': unknown loss None"),
    ([{"name": "dice", "gamma": 2}], r"unknown key 'train.loss\[0\].gamma'; dice takes weight, smooth"),
    ([{"name": "focal", "gamma": -1}], r"key 'train.loss\[0\].gamma' must be a number >= 0"),
    ([{"name": "ce", "weight": 0}], r"key 'train.loss\[0\].weight' must be a positive number"),
    ([{"name": "ce", "weight": True}], r"key 'train.loss\[0\].weight' must be a positive number"),
    ([], r"key 'train.loss' must be a non-empty list"),
    (["ce"], r"key 'train.loss\[0\]': expected a mapping"),
])
def test_config_loss_errors_are_one_line_and_name_the_key(loss, message):
    with pytest.raises(SegtrainError, match=message) as err:
        loss_config(loss)
    assert "\n" not in str(err.value)


def test_config_loss_from_command_line_override(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(f"data: {{format: folders, root: {tmp_path}, num_classes: 2}}\n")
    config = load_config(path, ["train.loss=[{name: ce}, {name: lovasz, weight: 0.5}]"])
    assert config.train.loss == [{"name": "ce", "weight": 1.0}, {"name": "lovasz", "weight": 0.5}]


def test_all_terms_compile_under_xla_with_the_eager_values_and_gradients(batch):
    labels, logits = batch
    loss = SegmentationLoss([{"name": "ce"}, {"name": "focal"}, {"name": "dice"}, {"name": "lovasz"}],
                            class_weights=[0.5, 2.0, 1.0, 3.5])

    def value_and_grad(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = loss(labels, x)
        return value, tape.gradient(value, x)

    eager = value_and_grad(tf.constant(logits))
    compiled = tf.function(value_and_grad, jit_compile=True)(tf.constant(logits))
    assert float(compiled[0]) == pytest.approx(float(eager[0]), rel=1e-5)
    np.testing.assert_allclose(compiled[1].numpy(), eager[1].numpy(), atol=1e-6)


@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_focal_gradient_is_finite_on_saturated_predictions(gamma):
    logits = np.zeros((1, 2, 2, 3), np.float32)
    logits[..., 1] = 100.0  # p = 1 in float32
    variable = tf.Variable(logits)
    with tf.GradientTape() as tape:
        value = SegmentationLoss([{"name": "focal", "gamma": gamma}])(np.ones((1, 2, 2), np.uint8), variable)
    assert float(value) == pytest.approx(0.0, abs=1e-6)
    assert np.all(np.isfinite(tape.gradient(value, variable).numpy()))
