"""Zoo models: one shared test body for every model x decoder x rank the registry declares.

Written the segmentation_models.pytorch way (its ``tests/models/base.py``): the cases come
from the registry (``list_models``, ``decoders_of``, ``ranks_of``), so a newly registered
model is tested without touching this file. Models are built at tiny widths (``tiny``):
building is dominated by variable creation, so the whole file stays fast.
"""

import functools
import inspect
import itertools
import os
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
from conftest import need_module

from segtrain.config import from_dict
from segtrain.errors import SegtrainError
from segtrain.models import DECODERS, build_model, build_model_from_config, decoders_of, list_models, ranks_of
from segtrain.models.blocks import NORMS
from segtrain.models.registry import RANKS, get_builder
from segtrain.models.segnet import segnet_basic

# Sizes divisible by no model's total stride (8, 16 or 32), one shape per rank
ODD_SHAPES = {1: (13, 2), 2: (9, 11, 3), 3: (5, 3, 7, 1)}
CASES = [(name, decoder, rank) for name in list_models() for decoder in decoders_of(name) for rank in ranks_of(name)]
REFUSED_DECODERS = [(name, d) for name in list_models() for d in DECODERS if d not in decoders_of(name)]
REFUSED_RANKS = [(name, rank) for name in list_models() for rank in RANKS if rank not in ranks_of(name)]
CLASSES = 3


def tiny_options(name: str) -> dict:
    """The smallest build a model's signature allows: width 1 and, where a builder takes them,
    a 2-channel fc6/fc7, the widest context module (most weights to round-trip) and the
    smallest keras.applications encoder (MobileNetV2) instead of a default ResNet50."""
    params = inspect.signature(get_builder(name)).parameters
    options = {"width": 1}
    if "fc_width" in params:
        options["fc_width"] = 2
    if "context" in params:
        options["context"] = "large"
    if "encoder" in params and params["encoder"].default not in (None, "plain"):
        options["encoder"] = "mobilenetv2"
    if "preset" in params:
        options["preset"] = str(_hub_presets()["deeplab"])
    return options


@functools.cache
def _hub_presets() -> dict:
    """tests/test_keras_hub.py's tiny keras-hub presets, saved once per process (keras_hub's builder needs one)."""
    need_module("keras_hub", "keras_hub")
    from test_keras_hub import save_presets  # needs keras_hub, which only this model takes

    return save_presets(Path(tempfile.mkdtemp(prefix="segtrain_hub_presets_")))


def tiny(name, decoder, shape, num_classes=CLASSES, **kwargs):
    return build_model(name, num_classes, shape, decoder=decoder, **{"norm": "none", **tiny_options(name), **kwargs})


def _id(case):
    return "-".join(str(part) for part in case)


def _case(name, decoder, rank):
    """A keras.applications encoder (even MobileNetV2) takes ~10 s to build and save on 2 cores."""
    slow = name == "keras_hub" or "encoder" in tiny_options(name)  # keras_hub: saves tiny presets first
    return pytest.param(name, decoder, rank, id=_id((name, decoder, rank)), marks=[pytest.mark.slow] if slow else [])


@pytest.mark.parametrize("name,decoder,rank", [_case(*c) for c in CASES])
def test_every_model_decoder_and_rank(tmp_path, name, decoder, rank):
    """Logits of the input's spatial size for any size; identical outputs after a .keras round trip."""
    norm = NORMS[CASES.index((name, decoder, rank)) % len(NORMS)]  # every norm, spread over the cases
    channels = ODD_SHAPES[rank][-1]
    model = tiny(name, decoder, (None,) * rank + (channels,), norm=norm)
    assert model.name == name
    assert tuple(model.output.shape) == (None,) * (rank + 1) + (CLASSES,)
    # Every layer, at a size the stride does not divide, computes the shape it declares
    # (compute_output_shape): a wrong size inside would be hidden by the final crop.
    outputs = [(layer.name, y) for layer in model.layers for y in keras.tree.flatten(layer.output)]
    assert outputs[-1][1] is model.output
    probe = keras.Model(model.input, [y for _, y in outputs])
    x = np.random.default_rng(1).uniform(0, 255, (2,) + ODD_SHAPES[rank]).astype("float32")
    declared, computed = probe(keras.Input(ODD_SHAPES[rank])), probe(x, training=False)
    for (layer, _), static, value in zip(outputs, declared, computed):
        assert tuple(value.shape[1:]) == tuple(static.shape[1:]), layer
    assert tuple(declared[-1].shape) == (None,) + ODD_SHAPES[rank][:-1] + (CLASSES,)
    want = np.asarray(computed[-1])
    assert want.shape == x.shape[:-1] + (CLASSES,)
    if rank == 2:  # CamVid's 360x480, not a multiple of 32
        assert tuple(model(keras.Input((360, 480, channels))).shape) == (None, 360, 480, CLASSES)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)  # no custom_objects: importing segtrain.models registers them
    np.testing.assert_array_equal(np.asarray(loaded(x, training=False)), want)
    assert [w.name for w in loaded.weights] == [w.name for w in model.weights]


@pytest.mark.parametrize("name,decoder", REFUSED_DECODERS, ids=[_id(c) for c in REFUSED_DECODERS])
def test_refused_decoder_is_one_documented_line(name, decoder):
    msg = f"model.decoder: '{decoder}' is not applicable to {name}; use one of {', '.join(decoders_of(name))}"
    with pytest.raises(SegtrainError) as error:
        tiny(name, decoder, (16, 16, 3))
    assert str(error.value) == msg


@pytest.mark.parametrize("name,rank", REFUSED_RANKS, ids=[_id(c) for c in REFUSED_RANKS])
def test_refused_rank_is_one_line(name, rank):
    shape = ODD_SHAPES[rank]
    with pytest.raises(SegtrainError) as error:
        tiny(name, None, shape)
    dims = "/".join(f"{r}-D" for r in ranks_of(name))
    assert str(error.value).startswith(f"model.name: {name} is {dims} only (input ")
    assert str(error.value).endswith(f"), got {shape}") and "\n" not in str(error.value)


def test_registry_lists_all_models():
    assert list_models() == ["deeplabv3plus", "dilated_context", "dilated_frontend", "keras_hub", "segnet", "segnet_basic", "unet"]
    assert all(ranks_of(name) == RANKS for name in list_models() if name not in ("deeplabv3plus", "keras_hub"))
    assert ranks_of("deeplabv3plus") == (2,)


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
    for name in (n for n in list_models() if n != "keras_hub"):  # keras_hub: the preset fixes its decoder (RGB only)
        # the default decoder (decoder=None) is the first registered one
        default = tiny(name, None, (16, 16, 1), num_classes=2, mean=None, std=None)
        assert any(layer.name.endswith(decoders_of(name)[0]) for layer in default.layers), name
    msg = r"model.decoder: 'unpool' is not applicable to dilated_context; use one of bilinear, resize_conv, transposed"
    with pytest.raises(SegtrainError, match=msg):
        build_model("dilated_context", 3, (16, 16, 3), decoder="unpool")
    with pytest.raises(SegtrainError, match=r"model.decoder: 'deconv' is not a decoder of segnet_basic; use one of unpool"):
        segnet_basic(3, (16, 16, 3), "deconv")  # checked when the builder is called directly too


def test_cases_cover_every_registered_combination():
    """The parametrisation above is the registry's, so a new model is tested without editing this file."""
    declared = {(n, d, r) for n in list_models() for d, r in itertools.product(decoders_of(n), ranks_of(n))}
    assert set(CASES) == declared and len(CASES) == len(declared)
