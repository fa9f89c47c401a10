"""VGG16 encoder transfer, offline: random ``VGG16(weights=None)`` weights saved to a file,
loaded through ``encoder_weights``, give VGG16's own feature maps at every conv layer."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest

from segtrain.config import from_dict
from segtrain.errors import SegtrainError
from segtrain.models import build_model, build_model_from_config
from segtrain.models.pretrained import VGG16_CONVS

SEGNET_CONVS = [f"enc{s}_conv{i}" for s, n in enumerate((2, 2, 3, 3, 3), start=1) for i in range(1, n + 1)]
DILATED_CONVS = [f"conv{s}_{i}" for s, n in enumerate((2, 2, 3, 3, 3), start=1) for i in range(1, n + 1)]


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    keras.utils.set_random_seed(3)
    vgg = keras.applications.VGG16(include_top=False, weights=None, input_shape=(None, None, 3))
    rng = np.random.default_rng(0)
    for layer in vgg.layers:  # non-zero biases, so a dropped bias would show
        if layer.weights:
            layer.weights[1].assign(rng.normal(0, 0.1, layer.weights[1].shape).astype("float32"))
    path = tmp_path_factory.mktemp("vgg") / "vgg16.weights.h5"
    vgg.save_weights(path)
    return vgg, path


def _features(model, names, x):
    return keras.Model(model.input, [model.get_layer(n).output for n in names])(x, training=False)


def _assert_close(ours, theirs):
    for a, b in zip(ours, theirs):
        a, b = np.asarray(a), np.asarray(b)
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * max(1.0, np.abs(b).max()))


def test_segnet_encoder_equals_vgg16_at_every_conv(vgg_file):
    vgg, path = vgg_file
    x = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype("float32")  # RGB photo
    caffe = keras.applications.vgg16.preprocess_input(x.copy())  # BGR, mean subtracted
    want = _features(vgg, VGG16_CONVS, caffe)
    model = build_model("segnet", 4, (32, 32, 3), norm="none", encoder_weights=str(path))
    _assert_close(_features(model, SEGNET_CONVS, x), want)
    np.testing.assert_allclose(np.ravel(model.get_layer("normalize").mean), [123.68, 116.779, 103.939])
    np.testing.assert_allclose(np.ravel(model.get_layer("normalize").variance), [1.0, 1.0, 1.0])
    # under batch norm (inference, initial statistics) the bias moves into beta: same maps
    batch = build_model("segnet", 4, (32, 32, 3), norm="batch", encoder_weights=str(path))
    _assert_close(_features(batch, SEGNET_CONVS, x), want)


def test_dilated_frontend_takes_the_13_convs(vgg_file):
    vgg, path = vgg_file
    x = np.random.default_rng(2).uniform(0, 255, (1, 32, 32, 3)).astype("float32")
    model = build_model("dilated_frontend", 4, (32, 32, 3), norm="none", fc_width=8,
                        encoder_weights=str(path))
    # up to conv4 the front-end is VGG16; conv5 is dilated instead of pooled, so compare kernels
    _assert_close(_features(model, DILATED_CONVS[:10], x),
                  _features(vgg, VGG16_CONVS[:10], keras.applications.vgg16.preprocess_input(x.copy())))
    for ours, theirs in zip(DILATED_CONVS[10:], VGG16_CONVS[10:]):
        np.testing.assert_array_equal(np.asarray(model.get_layer(ours).kernel), vgg.get_layer(theirs).get_weights()[0])


def test_encoder_weights_errors(monkeypatch, tmp_path):
    from keras.src.utils import file_utils

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure: no internet")

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(SegtrainError, match=r"model.encoder_weights: imagenet: could not download .*pass its path"):
        build_model("segnet", 4, (32, 32, 3), encoder_weights="imagenet")
    with pytest.raises(SegtrainError, match="model.encoder_weights: .* neither none, imagenet nor an existing"):
        build_model("dilated_context", 4, (32, 32, 3), encoder_weights=str(tmp_path / "missing.h5"))
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(SegtrainError, match="model.encoder_weights: .*junk.h5: not a vgg16 weights file"):
        build_model("segnet", 4, (32, 32, 3), encoder_weights=str(tmp_path / "junk.h5"))
    with pytest.raises(SegtrainError, match="2-D RGB input with model.width 64"):
        build_model("segnet", 4, (32, 32, 3), width=8, encoder_weights="imagenet")
    config = from_dict({"data": {"format": "voc", "root": "/nonexistent", "num_classes": 5},
                        "model": {"name": "segnet_basic", "encoder_weights": "imagenet"}})
    with pytest.raises(SegtrainError, match="model.encoder_weights: segnet_basic has no pretrained encoder"):
        build_model_from_config(config, (32, 32, 3))
