"""DeepLabV3+: output and ASPP shapes at both output strides, the broadcast layer against NumPy,
the .keras round trip in a fresh process, config plumbing, checkerboard score, ONNX parity."""

import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
from conftest import shared_data

from segtrain.config import from_dict
from segtrain.errors import SegtrainError
from segtrain.models import build_model, build_model_from_config
from segtrain.models.checkerboard import model_score
from segtrain.models.deeplab import BroadcastToMatch


def _tiny(output_stride=16, encoder="mobilenetv2", shape=(65, 97, 3), **kwargs):
    keras.utils.set_random_seed(0)
    return build_model("deeplabv3plus", 4, shape, encoder=encoder, output_stride=output_stride, width=8, **kwargs)


def _images(shape, n=1, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, *shape)).astype("float32")


def test_broadcast_to_match_against_numpy():
    x = np.random.default_rng(0).normal(size=(2, 1, 1, 5)).astype("float32")
    reference = np.zeros((2, 3, 7, 9), "float32")
    got = np.asarray(BroadcastToMatch()([x, reference]))
    np.testing.assert_array_equal(got, np.broadcast_to(x, (2, 3, 7, 5)))
    assert BroadcastToMatch().compute_output_shape(((None, 1, 1, 5), (None, 3, None, 9))) == (None, 3, None, 5)


@pytest.mark.parametrize("output_stride", [8, 16])
def test_odd_input_size_and_aspp_branches(output_stride):
    model = _tiny(output_stride)
    y = model(_images((65, 97, 3)), training=False)
    assert y.shape == (1, 65, 97, 4)
    padded = [-(-n // output_stride) * output_stride for n in (65, 97)]  # the stem pads to the stride
    features = tuple(n // output_stride for n in padded)
    rates = [6, 12, 18] if output_stride == 16 else [12, 24, 36]
    branches = ["aspp_1x1", *(f"aspp_rate{r}" for r in rates), "aspp_image_broadcast"]
    for name in branches:
        assert tuple(model.get_layer(name).output.shape) == (None, *features, 32), name
    assert [model.get_layer(f"aspp_rate{r}").dilation_rate for r in rates] == rates
    assert tuple(model.get_layer("aspp_image_conv").output.shape) == (None, 1, 1, 32)
    assert tuple(model.get_layer("decoder_concat").output.shape) == (None, *(n // 4 for n in padded), 32 + 6)


@pytest.mark.slow
def test_resnet50_odd_size():
    model = _tiny(16, "resnet50", (33, 47, 3))
    assert model(_images((33, 47, 3)), training=False).shape == (1, 33, 47, 4)
    assert tuple(model.get_layer("aspp_1x1").output.shape[1:3]) == (3, 3)  # 48x48 padded, /16


@pytest.mark.slow
def test_keras_round_trip_in_a_fresh_process(tmp_path):
    model = _tiny(8, shape=(40, 56, 3))
    x = _images((40, 56, 3), n=2, seed=1)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.asarray(model(x, training=False)))
    model.save(tmp_path / "m.keras")
    script = (
        "import sys, numpy as np, keras, segtrain.models\n"
        "d = sys.argv[1]\n"
        "m = keras.models.load_model(d + '/m.keras')  # no custom_objects\n"
        "np.testing.assert_array_equal(np.asarray(m(np.load(d + '/x.npy'), training=False)), np.load(d + '/y.npy'))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr[-2000:]


def test_config_keys_reach_the_builder_and_are_checked():
    raw = {"data": {"format": "folders", "root": "/nonexistent", "num_classes": 3},
           "model": {"name": "deeplabv3plus", "encoder": "mobilenetv2", "output_stride": 8, "width": 4}}
    model = build_model_from_config(from_dict(raw), (32, 32, 3))
    assert model.get_layer("pad_to_stride").multiple == 8 and model.get_layer("block_1_pad") is not None
    with pytest.raises(SegtrainError, match=r"key 'model.output_stride' must be 8 or 16, got 32"):
        from_dict({**raw, "model": {**raw["model"], "output_stride": 32}})
    segnet = {**raw["model"], "name": "segnet_basic", "output_stride": 16}
    with pytest.raises(SegtrainError, match=r"^model.encoder: segnet_basic does not take it; remove it or use one of deeplabv3plus, unet$"):
        build_model_from_config(from_dict({**raw, "model": segnet}), (32, 32, 3))
    with pytest.raises(SegtrainError, match=r"^model.encoder_weights: segnet_basic does not take it; .* deeplabv3plus, dilated_context"):
        build_model_from_config(from_dict({**raw, "model": {**segnet, "encoder": None, "encoder_weights": "imagenet"}}), (32, 32, 3))
    with pytest.raises(SegtrainError, match=r"^model.encoder: deeplabv3plus takes resnet50 or mobilenetv2 or keras_hub:<preset>, got 'vgg16'"):
        build_model("deeplabv3plus", 3, (32, 32, 3), encoder="vgg16")
    with pytest.raises(SegtrainError, match=r"^model.name: deeplabv3plus is 2-D only"):
        build_model("deeplabv3plus", 3, (8, 32, 32, 3))
    with pytest.raises(SegtrainError, match=r"^model.decoder: 'unpool' is not applicable to deeplabv3plus"):
        build_model("deeplabv3plus", 3, (32, 32, 3), decoder="unpool")


@pytest.mark.slow
def test_checkerboard_score_is_small():
    """Fixed bilinear upsampling of the stride-16 logits leaves little energy at the period 16."""
    assert model_score("deeplabv3plus", "bilinear", size=64, width=4, trials=1) < 0.01  # measured 3.5e-4; segnet_basic transposed 0.72


@pytest.mark.slow
def test_onnx_export_matches_in_onnxruntime_and_opencv(tmp_path):
    from segtrain.export import check_parity, export_model

    model = _tiny(8)
    classifier = model.get_layer("classifier").kernel  # amplify the tiny initial logits to ~5 so that
    scale = float(np.max(np.abs(model(_images((65, 97, 3)), training=False))))  # argmax agreement is a real test
    classifier.assign(classifier * (5.0 / scale))
    path = export_model(model, "onnx", tmp_path / "deeplab.onnx")
    frames = sorted(shared_data("camvid", "val").glob("*.png"))[:1]  # a real CamVid frame (and 1 random image)
    assert frames
    report = check_parity(model, path, "onnx", images=frames, count=1)
    assert report.ok, report.summary()
    assert report.scale > 1 and [r.runtime for r in report.results] == ["onnxruntime", "opencv-dnn"]
