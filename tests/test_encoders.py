"""keras.applications encoders: VGG16 weight transfer into segnet / dilated nets (features equal
to VGG16's own on caffe-preprocessed input), the offline imagenet error, feature pyramids and
the atrous rebuild. Weights are random (weights=None) and saved to files: nothing downloads."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf
from keras.src.legacy.saving import legacy_h5_format
from keras.src.utils import file_utils

from segtrain.config import load_config
from segtrain.errors import SegtrainError
from segtrain.models import build_model
from segtrain.models.encoders import (
    CAFFE_MEAN,
    ENCODERS,
    VGG16_CONVS,
    build_encoder,
    feature_pyramid,
    load_application,
    normalisation,
)
from segtrain.models.registry import stem


def _random_vgg16(seed: int = 0) -> keras.Model:
    """VGG16 without top, random kernels and (non-zero) random biases."""
    keras.utils.set_random_seed(seed)
    vgg = keras.applications.VGG16(weights=None, include_top=False, input_shape=(None, None, 3))
    rng = np.random.default_rng(seed)
    for name in VGG16_CONVS:
        kernel, bias = vgg.get_layer(name).get_weights()
        vgg.get_layer(name).set_weights([kernel, rng.normal(0, 0.1, bias.shape).astype("float32")])
    return vgg


def _save_downloaded_format(model: keras.Model, path) -> str:
    """The legacy HDF5 layout of the files keras.applications downloads."""
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    return str(path)


def _rgb_images(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, shape).astype("float32")


def _assert_close(got, want, rtol=1e-5):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape
    assert np.max(np.abs(got - want)) <= rtol * max(1.0, float(np.max(np.abs(want))))


def _features(model, names, x):
    out = keras.Model(model.input, [model.get_layer(n).output for n in names])(x, training=False)
    return out if isinstance(out, list) else [out]


def test_segnet_encoder_from_downloaded_file_format_reproduces_vgg16(tmp_path):
    vgg = _random_vgg16()
    path = _save_downloaded_format(vgg, tmp_path / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5")
    model = build_model("segnet", 3, (32, 32, 3), norm="none", encoder_weights=path)
    assert model.get_layer("normalize").mean.numpy().ravel().tolist() == pytest.approx(CAFFE_MEAN)
    x = _rgb_images((2, 32, 32, 3))
    want = _features(vgg, VGG16_CONVS, keras.applications.vgg16.preprocess_input(x.copy()))  # BGR - mean
    got = _features(model, ["enc" + v[len("block"):] for v in VGG16_CONVS], x)
    for g, w in zip(got, want):
        _assert_close(g, w)


def test_dilated_frontend_from_weights_h5_reproduces_vgg16_and_dilates_conv5(tmp_path):
    vgg = _random_vgg16(seed=1)
    path = tmp_path / "vgg16.weights.h5"
    vgg.save_weights(path)
    model = build_model("dilated_frontend", 3, (40, 40, 3), norm="none", fc_width=8, encoder_weights=str(path))
    x = _rgb_images((1, 40, 40, 3), seed=1)
    vgg_in = keras.applications.vgg16.preprocess_input(x.copy())
    names = [v for v in VGG16_CONVS if not v.startswith("block5")]
    ours = ["conv" + v[len("block"):].replace("_conv", "_") for v in names]
    for g, w in zip(_features(model, ours, x), _features(vgg, names, vgg_in)):
        _assert_close(g, w)
    # conv5_i: VGG16's block5_conv_i weights applied with dilation 2 (pool4 removed), checked with tf.nn.
    h = _features(model, ["conv4_3"], x)[0]
    for i in (1, 2, 3):
        kernel, bias = vgg.get_layer(f"block5_conv{i}").get_weights()
        h = tf.nn.relu(tf.nn.convolution(h, kernel, padding="SAME", dilations=2) + bias)
        _assert_close(_features(model, [f"conv5_{i}"], x)[0], h)


def test_norm_layers_stay_fresh_and_take_kernels_only(tmp_path):
    vgg = _random_vgg16(seed=2)
    path = tmp_path / "vgg16.weights.h5"
    vgg.save_weights(path)
    model = build_model("dilated_context", 3, (32, 32, 3), norm="batch", fc_width=8, encoder_weights=str(path))
    np.testing.assert_array_equal(model.get_layer("conv1_1").kernel.numpy(),
                                  vgg.get_layer("block1_conv1").kernel.numpy()[:, :, ::-1, :])  # RGB order
    np.testing.assert_array_equal(model.get_layer("conv5_3").kernel.numpy(), vgg.get_layer("block5_conv3").kernel.numpy())
    bn = model.get_layer("conv5_3").norm_layer
    np.testing.assert_array_equal(bn.gamma.numpy(), 1.0)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), 0.0)
    assert model.get_layer("conv5_3").bias is None


def test_offline_imagenet_is_one_line_naming_the_key(monkeypatch):
    def offline(*args, **kwargs):  # keras' get_file raises a plain Exception when the download fails
        raise Exception(  # noqa: TRY002
"URL fetch failure on https://storage.googleapis.com/x/vgg16_notop.h5: None -- "
                        "[Errno -3] Temporary failure\nin name resolution")

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(SegtrainError) as err:
        build_model("segnet", 3, (32, 32, 3), encoder_weights="imagenet")
    message = str(err.value)
    assert "\n" not in message and message.startswith("model.encoder_weights: imagenet: cannot download the VGG16")
    assert "vgg16_notop.h5" in message and message.endswith("set model.encoder_weights to its path")


def test_bad_weights_values(tmp_path):
    with pytest.raises(SegtrainError, match=r"^model.encoder_weights: 'imagnet' is neither none, imagenet nor"):
        build_model("dilated_frontend", 3, (32, 32, 3), encoder_weights="imagnet")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5")
    with pytest.raises(SegtrainError, match=r"^model.encoder_weights: .*junk.h5 does not hold VGG16 weights"):
        load_application("vgg16", str(junk))
    vgg_file = _save_downloaded_format(_random_vgg16(), junk)
    with pytest.raises(SegtrainError, match=r"^model.encoder_weights: layer enc1_conv1 has a \(3, 3, 3, 8\) kernel"):
        build_model("segnet", 3, (32, 32, 3), width=8, encoder_weights=vgg_file)
    with pytest.raises(SegtrainError, match=r"^model.encoder_weights: VGG16 weights need 2-D RGB input .* got \(32, 1\)"):
        build_model("segnet", 3, (32, 1), width=1, encoder_weights=vgg_file)


@pytest.mark.parametrize("encoder", sorted(ENCODERS))
def test_feature_pyramid_strides(encoder):
    x = keras.Input((64, 96, 3))
    features = feature_pyramid(x, encoder)
    assert [tuple(f.shape[1:3]) for f in features] == [(64 // s, 96 // s) for s in (2, 4, 8, 16, 32)]
    model = keras.Model(x, features)  # the features hang off x: the encoder's layers joined x's graph
    assert [tuple(y.shape[1:3]) for y in model(np.zeros((1, 64, 96, 3), "float32"))] == [f.shape[1:3] for f in features]


@pytest.mark.parametrize("encoder,output_stride", [
    ("mobilenetv2", 8), ("mobilenetv2", 16), pytest.param("resnet50", 8, marks=pytest.mark.slow)])
def test_atrous_rebuild_keeps_weights_and_reaches_the_stride(tmp_path, encoder, output_stride):
    keras.utils.set_random_seed(3)
    source = load_application(encoder, "none")
    path = tmp_path / f"{encoder}.weights.h5"
    source.save_weights(path)
    x = keras.Input((64, 64, 3))
    rebuilt = build_encoder(x, encoder, str(path), output_stride)
    last = rebuilt.get_layer(ENCODERS[encoder].pyramid[-1]).output
    assert tuple(last.shape[1:3]) == (64 // output_stride,) * 2
    for layer in (l for l in source.layers if l.weights):
        for w, v in zip(layer.get_weights(), rebuilt.get_layer(layer.name).get_weights()):
            if ENCODERS[encoder].bgr and layer.name == ENCODERS[encoder].first_conv and w.ndim == 4:
                w = w[:, :, ::-1, :]
            np.testing.assert_array_equal(v, w)
    dilations = {l.name: l.dilation_rate[0] for l in rebuilt.layers if hasattr(l, "dilation_rate")}
    if encoder == "mobilenetv2":  # the de-strided depthwise keeps the previous rate; the ones after double it
        assert (dilations["block_6_depthwise"], dilations["block_7_depthwise"], dilations["block_13_depthwise"],
                dilations["block_16_depthwise"]) == ((1, 2, 2, 4) if output_stride == 8 else (1, 1, 1, 2))
    else:
        assert (dilations["conv4_block1_2_conv"], dilations["conv5_block3_2_conv"]) == (2, 4)


def test_dilated_fc6_fc7_from_a_file_with_top(tmp_path):
    """The include_top file's fc1 (Flatten of 7x7x512 -> Dense) becomes fc6, a 7x7 conv; fc2 becomes fc7."""
    path = _save_downloaded_format(_random_vgg16(seed=4), tmp_path / "vgg16_weights_tf_dim_ordering_tf_kernels.h5")
    rng = np.random.default_rng(4)
    dense = {"fc1": [rng.normal(size=(7 * 7 * 512, 8)), rng.normal(size=8)],
             "fc2": [rng.normal(size=(8, 8)), rng.normal(size=8)]}
    with h5py.File(path, "a") as f:  # what the top adds, in the downloaded file's naming (keras 2: 'kernel:0')
        for layer, (kernel, bias) in dense.items():
            group = f.create_group(layer)
            group.attrs["weight_names"] = np.array([f"{layer}/kernel:0".encode(), f"{layer}/bias:0".encode()])
            group.create_dataset(f"{layer}/kernel:0", data=kernel.astype("float32"))
            group.create_dataset(f"{layer}/bias:0", data=bias.astype("float32"))
        names = [n if isinstance(n, bytes) else n.encode() for n in f.attrs["layer_names"]]
        f.attrs["layer_names"] = np.array(names + [b"fc1", b"fc2"])
    model = build_model("dilated_frontend", 3, (32, 32, 3), norm="none", fc_width=8, encoder_weights=path)
    patch = rng.normal(size=(7, 7, 512))
    fc6 = model.get_layer("fc6").kernel.numpy()
    np.testing.assert_allclose(np.einsum("hwc,hwco->o", patch, fc6), patch.reshape(-1) @ dense["fc1"][0], rtol=1e-5)
    np.testing.assert_array_equal(model.get_layer("fc6").bias.numpy(), dense["fc1"][1].astype("float32"))
    np.testing.assert_array_equal(model.get_layer("fc7").kernel.numpy()[0, 0], dense["fc2"][0].astype("float32"))
    with pytest.raises(SegtrainError, match=r"^model.encoder_weights: layer fc6 has a \(7, 7, 512, 16\) kernel"):
        build_model("dilated_frontend", 3, (32, 32, 3), norm="none", fc_width=16, encoder_weights=path)


@pytest.mark.parametrize("encoder,preprocess", [
    ("mobilenetv2", keras.applications.mobilenet_v2.preprocess_input),
    pytest.param("resnet50", keras.applications.resnet50.preprocess_input, marks=pytest.mark.slow)])
def test_pyramid_with_weights_normalises_like_the_application(tmp_path, encoder, preprocess):
    """Raw RGB through the zoo stem + rebuilt encoder == the keras.applications model on its preprocess_input."""
    keras.utils.set_random_seed(5)
    source = load_application(encoder, "none")
    path = tmp_path / f"{encoder}.weights.h5"
    source.save_weights(path)
    inputs, x = stem((64, 64, 3), *normalisation(encoder, str(path), (64, 64, 3), None, None), multiple=32)
    model = keras.Model(inputs, feature_pyramid(x, encoder, str(path)))
    images = _rgb_images((1, 64, 64, 3), seed=5)
    want = _features(source, ENCODERS[encoder].pyramid, preprocess(images.copy()))
    for got, ref in zip(model(images, training=False), want):
        _assert_close(got, ref)


def test_config_weights_path_is_relative_to_the_config_file(tmp_path):
    (tmp_path / "configs").mkdir()
    text = "data: {format: folders, root: data, num_classes: 3}\nmodel: {name: segnet, encoder_weights: %s}\n"
    (tmp_path / "configs" / "a.yaml").write_text(text % "../weights/vgg16.h5")
    (tmp_path / "configs" / "b.yaml").write_text(text % "imagenet")
    assert load_config(tmp_path / "configs" / "a.yaml").model.encoder_weights == str(tmp_path / "weights" / "vgg16.h5")
    assert load_config(tmp_path / "configs" / "b.yaml").model.encoder_weights == "imagenet"
