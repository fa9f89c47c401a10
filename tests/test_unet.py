"""U-Net: the paper's parameter count by hand, shapes in 1-D/2-D/3-D, skips, round trip, config."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest

from segtrain.config import from_dict
from segtrain.errors import SegtrainError
from segtrain.models.encoders import ENCODERS
from segtrain.models import build_model, build_model_from_config, decoders_of
from segtrain.models.checkerboard import model_score


def tiny(decoder, shape, **kwargs):
    return build_model("unet", 3, shape, decoder=decoder, **{"width": 2, "depth": 3, "norm": "none", **kwargs})


def test_paper_parameter_count_by_hand():
    """Ronneberger et al.: 3x3 convs 1->64->64 ... 512->1024->1024, 2x2 up-convs halving the
    channels, 1x1 classifier to 2 classes (no norm)."""
    conv = lambda k, cin, cout: k * k * cin * cout + cout  # noqa: E731
    widths = [64, 128, 256, 512]
    total, cin = 0, 1
    for w in widths:
        total += conv(3, cin, w) + conv(3, w, w)
        cin = w
    total += conv(3, 512, 1024) + conv(3, 1024, 1024)
    for w in reversed(widths):
        total += conv(2, 2 * w, w) + conv(3, 2 * w, w) + conv(3, w, w)  # up-conv, then convs on the concat
    total += conv(1, 64, 2)
    assert total == 31_030_658
    model = build_model("unet", 2, (None, None, 1), decoder="transposed", norm="none", mean=None, std=None)
    assert model.count_params() == total
    small = {d: tiny(d, (None, None, 1), width=4).count_params() for d in ("transposed", "resize_conv")}
    assert small["transposed"] == small["resize_conv"]  # same kernel: the two learned decoders compare fairly


@pytest.mark.parametrize("decoder", ["resize_conv", "transposed", "bilinear"])
def test_odd_sizes_every_rank(decoder):
    for shape in [(13, 2), (9, 11, 3), (5, 3, 7, 1)]:  # none a multiple of the stride 8
        model = tiny(decoder, shape, mean=None, std=None)
        assert tuple(model.output.shape) == (None,) + shape[:-1] + (3,), (decoder, shape)
        x = np.random.default_rng(0).uniform(0, 1, (2,) + shape).astype("float32")
        assert model(x).shape == (2,) + shape[:-1] + (3,)
    assert model.predict(x, verbose=0).shape == x.shape[:-1] + (3,)  # 3-D in a compiled graph too
    dynamic = tiny(decoder, (None, None, 3))
    assert dynamic(np.zeros((1, 19, 7, 3), "float32")).shape == (1, 19, 7, 3)


def test_skips_concatenate_the_encoder_stage_of_the_same_resolution():
    model = tiny("transposed", (16, 16, 1), width=4, depth=2)
    for s, (size, width) in {1: (16, 4), 2: (8, 8)}.items():
        skip = model.get_layer(f"dec{s}_skip")
        encoder, upsampled = skip.input
        assert encoder is model.get_layer(f"enc{s}_conv2").output
        assert tuple(encoder.shape) == tuple(upsampled.shape) == (None, size, size, width)
        assert skip.output.shape[-1] == 2 * width
    assert model.get_layer("dec2_skip").input[1].shape[-1] == 8  # bilinear keeps the bottleneck's 16
    assert tiny("bilinear", (16, 16, 1), width=4, depth=2).get_layer("dec2_skip").input[1].shape[-1] == 16


def test_encoder_detail_reaches_the_logits_through_the_skip():
    """With the bottleneck's path zeroed, the logits still depend on the input: only the skips carry it."""
    model = tiny("resize_conv", (16, 16, 1), depth=2, mean=None, std=None)
    for layer in model.layers:
        if layer.name.startswith("dec2_resize_conv"):
            layer.kernel.assign(np.zeros(layer.kernel.shape, "float32"))
            layer.bias.assign(np.zeros(layer.bias.shape, "float32"))
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0, 1, (2, 1, 16, 16, 1)).astype("float32")
    assert not np.allclose(model(a), model(b))


@pytest.mark.parametrize("decoder,norm,shape", [
    ("resize_conv", "batch", (12, 10, 3)),
    ("transposed", "group", (12, 2)),
    ("bilinear", "instance", (6, 5, 4, 1)),
])
def test_keras_round_trip_without_custom_objects(tmp_path, decoder, norm, shape):
    model = tiny(decoder, shape, norm=norm)
    x = np.random.default_rng(1).uniform(0, 255, (2,) + shape).astype("float32")
    want = np.asarray(model(x, training=False))
    model.save(tmp_path / "unet.keras")
    loaded = keras.models.load_model(tmp_path / "unet.keras")
    np.testing.assert_array_equal(np.asarray(loaded(x, training=False)), want)


def test_config_depth_decoders_and_errors():
    config = from_dict({"data": {"format": "voc", "root": "/nonexistent", "num_classes": 5},
                        "model": {"name": "unet", "width": 2, "depth": 2, "norm": "layer", "decoder": None}})
    model = build_model_from_config(config, (20, 12, 3))
    assert model.get_layer("pad_to_stride").multiple == 4 and tuple(model.output.shape) == (None, 20, 12, 5)
    assert decoders_of("unet") == ("resize_conv", "transposed", "bilinear")
    with pytest.raises(SegtrainError, match="model.decoder: 'unpool' is not applicable to unet"):
        tiny("unpool", (16, 16, 3))
    with pytest.raises(SegtrainError, match="model.depth"):
        tiny("resize_conv", (16, 16, 3), depth=0)


def test_checkerboard_transposed_worse_than_resize_conv():
    """Whole untrained models, constant probe (borders included, so a comparison, not zero)."""
    transposed = model_score("unet", "transposed", size=128, width=4, trials=2)
    resize = model_score("unet", "resize_conv", size=128, width=4, trials=2)
    assert 0 < resize < 0.1 and transposed > 5 * resize


@pytest.mark.parametrize("path", ["configs/camvid/unet.yaml", "configs/voc/unet.yaml", "configs/sample/unet.yaml"])
def test_shipped_configs_build(path):
    from pathlib import Path

    from segtrain.config import load_config

    config = load_config(Path(__file__).resolve().parents[1] / path, ["model.width=2"])  # narrow: build only
    assert (config.model.name, config.model.decoder) == ("unet", "resize_conv")
    model = build_model_from_config(config, (None, None, 3))
    assert model.get_layer("pad_to_stride").multiple == 2 ** config.model.depth
    assert model.output.shape[-1] == config.data.num_classes


@pytest.mark.parametrize("encoder", ["vgg16", "resnet50", "mobilenetv2", "efficientnetb0"])
def test_keras_applications_encoders_odd_sizes(encoder):
    model = build_model("unet", 3, (None, None, 3), encoder=encoder, width=2, norm="group")
    assert model.get_layer("pad_to_stride").multiple == 32
    deepest = ENCODERS[encoder].pyramid[-1]  # the encoder's layers sit inline, under their keras.applications names
    assert model.get_layer(deepest).output.shape[-1] >= 320  # the deep features are the bottleneck
    x = np.random.default_rng(0).uniform(0, 255, (1, 70, 50, 3)).astype("float32")
    assert model(x).shape == (1, 70, 50, 3)
    assert model.get_layer("dec2_skip").input[0].shape[1:3] == (None, None)  # stride-2 skip, dynamic size


@pytest.mark.slow
def test_keras_applications_encoder_round_trip(tmp_path):
    model = build_model("unet", 3, (40, 24, 3), encoder="mobilenetv2", width=2, norm="batch")
    x = np.random.default_rng(1).uniform(0, 255, (2, 40, 24, 3)).astype("float32")
    want = np.asarray(model(x, training=False))
    model.save(tmp_path / "m.keras")
    np.testing.assert_array_equal(np.asarray(keras.models.load_model(tmp_path / "m.keras")(x, training=False)), want)


@pytest.mark.slow
def test_resnet50_skips_are_keras_applications_features_from_a_weights_file(tmp_path):
    keras.utils.set_random_seed(5)
    resnet = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(None, None, 3))
    path = tmp_path / "resnet50.weights.h5"
    resnet.save_weights(path)
    model = build_model("unet", 3, (64, 64, 3), encoder="resnet50", encoder_weights=str(path), width=2)
    x = np.random.default_rng(2).uniform(0, 255, (1, 64, 64, 3)).astype("float32")  # RGB
    names = ["conv1_relu", "conv2_block3_out", "conv3_block4_out", "conv4_block6_out", "conv5_block3_out"]
    ours = keras.Model(model.input, [model.get_layer(n).output for n in names])(x, training=False)
    theirs = keras.Model(resnet.input, [resnet.get_layer(n).output for n in names])(
        keras.applications.resnet50.preprocess_input(x.copy()), training=False)  # BGR, caffe mean
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-5 * max(1.0, np.abs(b).max()))


def test_encoder_errors(monkeypatch):
    from keras.src.utils import file_utils

    with pytest.raises(SegtrainError, match="model.encoder: unknown encoder 'resnet18'"):
        build_model("unet", 3, (32, 32, 3), encoder="resnet18")
    with pytest.raises(SegtrainError, match="model.encoder: resnet50 takes 2-D RGB input"):
        build_model("unet", 3, (32, 32, 1), encoder="resnet50")
    with pytest.raises(SegtrainError, match="model.encoder_weights: the plain U-Net encoder"):
        build_model("unet", 3, (32, 32, 3), encoder_weights="imagenet")
    monkeypatch.setattr(file_utils, "get_file", lambda *a, **k: (_ for _ in ()).throw(Exception("no internet")))
    with pytest.raises(SegtrainError, match="imagenet: cannot download the MobileNetV2 weights"):
        build_model("unet", 3, (32, 32, 3), encoder="mobilenetv2", encoder_weights="imagenet")
    config = from_dict({"data": {"format": "voc", "root": "/nonexistent", "num_classes": 5},
                        "model": {"name": "segnet", "encoder": "resnet50"}})
    with pytest.raises(SegtrainError, match="model.encoder: segnet does not take it"):
        build_model_from_config(config, (32, 32, 3))
