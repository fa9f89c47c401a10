"""Zoo models: shapes for every model x decoder x rank, parameter counts, .keras round trip."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest

from segtrain.config import from_dict
from segtrain.errors import SegtrainError
from segtrain.models import DECODERS, build_model, build_model_from_config, decoders_of, list_models
from segtrain.models.segnet import segnet_basic

SEGNETS = ["segnet_basic", "segnet"]
DILATED = ["dilated_frontend", "dilated_context"]
COMBOS = [(m, d) for m in SEGNETS for d in ("unpool", "resize_conv", "transposed", "bilinear")] + [
    (m, d) for m in DILATED for d in ("resize_conv", "transposed", "bilinear")
]
TINY = {"width": 1, "norm": "none"}  # few weights: building is dominated by variable creation


def tiny(name, decoder, shape, num_classes=3, **kwargs):
    extra = {"fc_width": 2} if name in DILATED else {}
    return build_model(name, num_classes, shape, decoder=decoder, **{**TINY, **extra, **kwargs})


def test_registry_lists_all_models():
    assert list_models() == sorted(SEGNETS + DILATED + ["deeplabv3plus", "unet"])


@pytest.mark.parametrize("name,decoder", COMBOS)
def test_output_shape_every_rank(name, decoder):
    """Sizes not divisible by the total stride (8, 16 or 32) come back unchanged."""
    for shape in [(13, 2), (5, 3, 7, 1), (9, 11, 3)]:
        model = tiny(name, decoder, shape)
        assert tuple(model.output.shape) == (None,) + shape[:-1] + (3,), (name, decoder, shape)
    assert model.name == name
    x = np.random.default_rng(0).uniform(0, 255, (2, 9, 11, 3)).astype("float32")
    assert model(x).shape == (2, 9, 11, 3)


@pytest.mark.parametrize("name", SEGNETS + DILATED)
def test_camvid_size_and_none_dims(name):
    decoder = "unpool" if name in SEGNETS else "bilinear"
    assert tuple(tiny(name, decoder, (360, 480, 3), num_classes=11).output.shape) == (None, 360, 480, 11)
    model = tiny(name, decoder, (None, None, 3))
    assert tuple(model.output.shape) == (None, None, None, 3)
    assert model(np.zeros((1, 19, 7, 3), "float32")).shape == (1, 19, 7, 3)


def test_segnet_parameter_counts_near_the_papers():
    full = build_model("segnet_basic", 11, (360, 480, 3)).count_params()
    # 7x7x64 convs: 3->64 + 3 x 64->64 in the encoder, 4 x 64->64 in the decoder (paper: ~1.4M)
    convs = 7 * 7 * (3 * 64 + 7 * 64 * 64)
    assert 1.35e6 < full < 1.45e6
    assert convs < full < convs + 8 * 4 * 64 + 11 * 65 + 1  # + norms and classifier
    counts = {build_model("segnet_basic", 11, (None, None, 3), decoder=d, width=8).count_params()
              for d in ("unpool", "resize_conv", "transposed", "bilinear")}
    assert len(counts) == 1  # learned upsamplers replace a conv: decoders compare on equal terms
    assert 29.0e6 < build_model("segnet", 12, (None, None, 3), norm="none").count_params() < 29.6e6


def test_input_normalisation_is_the_first_layer():
    model = tiny("segnet_basic", "unpool", (8, 8, 3))
    norm = model.get_layer("normalize")
    np.testing.assert_allclose(np.ravel(norm.mean), [123.675, 116.28, 103.53], rtol=1e-6)
    np.testing.assert_allclose(np.sqrt(np.ravel(norm.variance)), [58.395, 57.12, 57.375], rtol=1e-6)
    names = [layer.name for layer in tiny("segnet_basic", "unpool", (16, 1)).layers]
    assert "normalize" not in names  # ImageNet defaults apply only to 3-channel 2-D inputs
    one = tiny("segnet_basic", "unpool", (16, 1), mean=[10.0], std=[2.0]).get_layer("normalize")
    np.testing.assert_allclose(np.ravel(one.variance), [4.0])


def _config(**model):
    return from_dict({"data": {"format": "voc", "root": "/nonexistent", "num_classes": 5}, "model": model})


def test_build_model_from_config_and_errors():
    model = build_model_from_config(_config(name="dilated_context", decoder="transposed", width=1, norm="group",
                                            context="large"), (16, 16, 3))
    assert tuple(model.output.shape) == (None, 16, 16, 5)
    assert model.get_layer("ctx7").kernel.shape[-1] == 32 * 5  # large context widths
    with pytest.raises(SegtrainError, match="model.decoder"):
        build_model_from_config(_config(name="dilated_frontend", decoder="unpool", width=1), (16, 16, 3))
    with pytest.raises(SegtrainError, match="model.mean"):
        build_model_from_config(_config(width=1), (16, 1))  # default ImageNet mean, 1 channel
    with pytest.raises(SegtrainError, match="model.name"):
        build_model_from_config(_config(name="pspnet"), (16, 16, 3))
    with pytest.raises(SegtrainError, match="model.norm"):
        build_model_from_config(_config(norm="batchnorm", width=1), (16, 16, 3))


def test_each_family_registers_its_decoders_default_first():
    assert decoders_of("segnet_basic") == decoders_of("segnet") == DECODERS
    assert decoders_of("dilated_frontend") == decoders_of("dilated_context") == ("bilinear", "resize_conv", "transposed")
    for name in list_models():  # the default decoder (decoder=None) is the first registered one
        default = build_model(name, 2, (16, 16, 1), **{**TINY, "mean": None, "std": None,
                                                       **({"fc_width": 2} if name in DILATED else {})})
        assert any(layer.name.endswith(decoders_of(name)[0]) for layer in default.layers), name
    msg = r"model.decoder: 'unpool' is not applicable to dilated_context; use one of bilinear, resize_conv, transposed"
    with pytest.raises(SegtrainError, match=msg):
        build_model("dilated_context", 3, (16, 16, 3), decoder="unpool")
    with pytest.raises(SegtrainError, match=r"model.decoder: 'deconv' is not a decoder of segnet_basic; use one of unpool"):
        segnet_basic(3, (16, 16, 3), "deconv")  # checked when the builder is called directly too


@pytest.mark.parametrize("name,decoder,norm,shape", [
    ("segnet_basic", "unpool", "batch", (12, 10, 3)),
    ("segnet_basic", "transposed", "layer", (12, 2)),
    ("segnet", "resize_conv", "instance", (None, None, 3)),
    ("dilated_frontend", "bilinear", "group", (4, 6, 5, 1)),
    ("dilated_context", "resize_conv", "batch", (12, 10, 3)),
])
def test_keras_round_trip_identical_outputs(tmp_path, name, decoder, norm, shape):
    extra = {"context": "large"} if name == "dilated_context" else {}
    model = tiny(name, decoder, shape, norm=norm, **extra)
    x = np.random.default_rng(1).uniform(0, 255, (2,) + tuple(s or 13 for s in shape[:-1]) + shape[-1:])
    x = x.astype("float32")
    want = np.asarray(model(x, training=False))
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)  # no custom_objects
    np.testing.assert_array_equal(np.asarray(loaded(x, training=False)), want)
    assert [w.name for w in loaded.weights] == [w.name for w in model.weights]
