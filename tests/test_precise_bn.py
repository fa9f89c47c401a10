"""Precise BN: recomputed statistics equal a NumPy population computation; stale statistics are repaired."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest

from segtrain.models.blocks import ConvNormAct
from segtrain.precise_bn import batchnorm_layers, recompute_bn_statistics

EPS = 1e-3  # Keras BatchNormalization's default epsilon


def two_bn_model():
    """1x1 convolutions only, so NumPy can run the same forward pass as matrix products.

    The second BN sits inside a ConvNormAct (a nested layer), as in the model zoo.
    """
    x = keras.Input((None, None, 3))
    y = keras.layers.Conv2D(4, 1, name="conv1")(x)
    y = keras.layers.BatchNormalization(name="bn1")(y)
    y = keras.layers.ReLU()(y)
    y = ConvNormAct(5, kernel_size=1, norm="batch", activation=None, name="cna")(y)
    return keras.Model(x, keras.layers.Conv2D(2, 1, name="head")(y))


def numpy_population(model, batches):
    """BN inputs computed independently in NumPy (training-mode BN: batch statistics); their population stats."""
    conv1 = model.get_layer("conv1")
    bn1 = model.get_layer("bn1")
    cna = model.get_layer("cna")
    w1, b1 = (np.asarray(v, np.float64) for v in conv1.get_weights())
    gamma, beta = (np.asarray(v, np.float64) for v in (bn1.gamma.numpy(), bn1.beta.numpy()))
    w2 = np.asarray(cna.kernel.numpy(), np.float64)
    inputs1, inputs2 = [], []
    for x in batches:
        z1 = x.astype(np.float64) @ w1[0, 0] + b1
        inputs1.append(z1.reshape(-1, z1.shape[-1]))
        mean, var = z1.mean(axis=(0, 1, 2)), z1.var(axis=(0, 1, 2))
        h = np.maximum((z1 - mean) / np.sqrt(var + EPS) * gamma + beta, 0.0)
        z2 = h @ w2[0, 0]
        inputs2.append(z2.reshape(-1, z2.shape[-1]))
    return [(np.concatenate(v).mean(0), np.concatenate(v).var(0)) for v in (inputs1, inputs2)]


def test_recomputed_statistics_equal_numpy_population_statistics():
    keras.utils.set_random_seed(1)
    model = two_bn_model()
    rng = np.random.default_rng(0)
    for layer in batchnorm_layers(model):  # non-trivial affine parameters, wrong running statistics
        layer.gamma.assign(rng.uniform(0.5, 2.0, layer.gamma.shape))
        layer.beta.assign(rng.normal(0, 1, layer.beta.shape))
        layer.moving_mean.assign(np.full(layer.moving_mean.shape, 7.0))
    # Unequal batch sizes and shifted batch means: the between-batch term of the variance counts.
    batches = [rng.normal(loc, 2.0, (n, 5, 6, 3)).astype(np.float32) for loc, n in ((0.0, 4), (3.0, 4), (-1.0, 2))]

    assert [layer.name for layer in batchnorm_layers(model)] == ["bn1", "norm"]
    assert recompute_bn_statistics(model, iter(batches)) == 3
    expected = numpy_population(model, batches)
    for layer, (mean, var) in zip(batchnorm_layers(model), expected):
        np.testing.assert_allclose(layer.moving_mean.numpy(), mean, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(layer.moving_variance.numpy(), var, rtol=1e-5, atol=1e-5)
    # The pass leaves the layers' own call in place: inference now uses the new statistics.
    assert "call" not in vars(model.get_layer("bn1"))


def test_a_failing_pass_keeps_the_old_statistics():
    model = two_bn_model()
    before = [layer.moving_mean.numpy().copy() for layer in batchnorm_layers(model)]

    def broken():
        yield np.ones((2, 4, 4, 3), np.float32)
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError):
        recompute_bn_statistics(model, broken())
    for layer, mean in zip(batchnorm_layers(model), before):
        np.testing.assert_array_equal(layer.moving_mean.numpy(), mean)
        assert "call" not in vars(layer)


def test_model_without_batchnorm_is_left_alone():
    x = keras.Input((None, None, 3))
    model = keras.Model(x, keras.layers.Conv2D(2, 1)(x))
    assert recompute_bn_statistics(model, iter([np.ones((1, 4, 4, 3), np.float32)])) == 0


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sample_config(tmp_path, precise_batches=4):
    """A narrow BatchNorm SegNet-Basic on the built-in sample dataset, float32, two short epochs."""
    import yaml

    path = tmp_path / "bn.yaml"
    path.write_text(yaml.safe_dump({
        "_base_": os.path.join(REPO, "configs", "quickstart.yaml"),
        "data": {"crop": [32, 32], "scale": [1.0, 1.0]},
        "model": {"norm": "batch", "width": 8},
        "train": {"epochs": 2, "batch_size": 8, "mixed_precision": "none",
                  "precise_bn": {"batches": precise_batches}},
        "output_dir": str(tmp_path / "run"),
    }))
    return path


def bn_state(model):
    return [(layer.moving_mean.numpy().copy(), layer.moving_variance.numpy().copy()) for layer in batchnorm_layers(model)]


@pytest.mark.slow
def test_trainer_writes_precise_statistics_and_evaluate_repairs_stale_ones(tmp_path):
    import json

    from segtrain.cli import main as cli_main
    from segtrain.config import load_config
    from segtrain.evaluation import evaluate
    from segtrain.inference import load_checkpoint
    from segtrain.precise_bn import recompute_for_config
    from segtrain.training import Trainer

    path = sample_config(tmp_path)
    config = load_config(path)
    result = Trainer(config, verbose=0).fit()
    checkpoints = tmp_path / "run" / "checkpoints"

    # last.keras was written after the recompute: recomputing again over the same batches changes nothing.
    model = load_checkpoint(checkpoints / "last.keras")
    written = bn_state(model)
    assert len(written) > 4
    assert recompute_for_config(model, config, 4) == 4
    for (mean, var), (mean2, var2) in zip(written, bn_state(model)):
        np.testing.assert_allclose(mean2, mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(var2, var, rtol=1e-5, atol=1e-6)
    assert evaluate(config, "val", model=model, verbose=False)["miou"] == pytest.approx(result["miou"], abs=1e-6)

    # Stale statistics (shifted means, shrunk variances) ruin the score; --precise-bn gives it back exactly.
    for layer in batchnorm_layers(model):
        layer.moving_mean.assign(layer.moving_mean.numpy() + 2.0)
        layer.moving_variance.assign(layer.moving_variance.numpy() * 0.05)
    stale = checkpoints / "stale.keras"
    model.save(stale)
    assert evaluate(config, "val", checkpoint=stale, verbose=False)["miou"] < result["miou"] - 0.1
    assert cli_main(["evaluate", "--config", str(path), "--checkpoint", str(stale), "--precise-bn", "4",
                     "--json", str(tmp_path / "m.json")]) == 0
    report = json.loads((tmp_path / "m.json").read_text())
    assert report["miou"] == pytest.approx(result["miou"], abs=1e-6) and report["options"]["precise_bn"] == 4
    assert cli_main(["evaluate", "--config", str(path), "--checkpoint", str(stale), "--precise-bn", "-1"]) == 1


def test_config_defaults_and_bad_values():
    from segtrain.config import from_dict
    from segtrain.errors import SegtrainError
    from segtrain.precise_bn import precise_bn_for

    raw = {"data": {"format": "voc", "root": "/nowhere", "num_classes": 2}}
    config = from_dict(raw)
    assert config.train.precise_bn.batches == 16 and config.train.mixed_precision == "auto"
    assert precise_bn_for(two_bn_model(), config, dataset_fn=None) is not None
    x = keras.Input((None, None, 3))
    assert precise_bn_for(keras.Model(x, keras.layers.Conv2D(2, 1)(x)), config, dataset_fn=None) is None
    off = from_dict({**raw, "train": {"precise_bn": {"batches": 0}}})
    assert precise_bn_for(two_bn_model(), off, dataset_fn=None) is None
    with pytest.raises(SegtrainError, match=r"train.precise_bn.batches"):
        from_dict({**raw, "train": {"precise_bn": {"batches": -2}}})
