"""Export: every zoo family x decoder to ONNX, run in onnxruntime and OpenCV DNN next to Keras.

The oracle is the Keras model itself: the tests run the exported files in the runtimes
directly (not through ``check_parity``) and compare logits and argmax with Keras's.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import sys

import keras
import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
pytest.importorskip("tf2onnx")

from segtrain import cli
from segtrain.errors import SegtrainError
from segtrain.export import check_parity, export_model
from segtrain.models import build_model

ATOL = 1e-4
CLASSES = 5


def _tiny(name, decoder, norm, shape=(32, 32, 3)):
    kwargs = {"width": 2 if name == "segnet" else 4, **({"depth": 3} if name == "unet" else {})}
    if name.startswith("dilated"):
        kwargs.update(fc_width=8, dropout=0.0)
    model = build_model(name, CLASSES, shape, decoder=decoder, norm=norm, **kwargs)
    rng = np.random.default_rng(1)
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):  # non-trivial statistics to fold
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.3, n).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, n).astype("float32"))
    return model


def _images(shape, n=2, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, *shape)).astype("float32")


def _ort(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {"image": x[i : i + 1]})[0] for i in range(len(x))])


def _opencv(path, x):
    net = cv2.dnn.readNet(str(path))
    outs = []
    for i in range(len(x)):
        net.setInput(np.ascontiguousarray(x[i : i + 1]))
        outs.append(net.forward())
    return np.concatenate(outs)


def _assert_matches(out, ref):
    assert out.shape == ref.shape
    # fp32: 1e-4 absolute for logits within +-1, relative to the largest logit beyond
    np.testing.assert_allclose(out, ref, rtol=0, atol=ATOL * max(1.0, np.abs(ref).max()))
    assert (np.argmax(out, -1) == np.argmax(ref, -1)).mean() >= 0.9999


ZOO = [
    ("segnet_basic", "unpool", "batch", (32, 32, 3)),
    ("segnet_basic", "resize_conv", "layer", (32, 32, 3)),
    ("segnet_basic", "transposed", "group", (32, 32, 3)),
    ("segnet_basic", "bilinear", "instance", (32, 32, 3)),
    ("segnet", "unpool", "batch", (32, 32, 3)),
    ("dilated_frontend", "bilinear", "batch", (36, 28, 3)),  # not a multiple of the stride
    ("dilated_context", "transposed", "batch", (32, 32, 3)),
    ("segnet_basic", "unpool", "batch", (48, 2)),  # 1-D signal
    ("segnet_basic", "unpool", "batch", (8, 16, 16, 1)),  # 3-D volume
    ("unet", "resize_conv", "batch", (36, 28, 3)),
    ("unet", "transposed", "group", (8, 16, 16, 1)),  # 3-D U-Net
]


@pytest.mark.parametrize("name,decoder,norm,shape", ZOO, ids=["-".join(c[:3]) + f"-{len(c[3]) - 1}d" for c in ZOO])
def test_zoo_exports_to_onnx_and_matches_in_both_runtimes(tmp_path, name, decoder, norm, shape):
    model = _tiny(name, decoder, norm, shape)
    path = export_model(model, "onnx", tmp_path / "m.onnx")
    x = _images(shape)
    ref = model.predict(x, verbose=0)
    _assert_matches(_ort(path, x), ref)
    _assert_matches(_opencv(path, x), ref)
    report = check_parity(model, path, "onnx", count=2)
    assert report.ok, report.summary()
    assert [r.runtime for r in report.results] == ["onnxruntime", "opencv-dnn"]


def test_cli_nchw_export_takes_a_blob_from_image(tmp_path, capsys):
    model = _tiny("segnet_basic", "unpool", "batch", (32, 48, 3))
    ckpt = tmp_path / "best.keras"
    model.save(ckpt)
    assert cli.main(["export", "--checkpoint", str(ckpt), "--format", "onnx", "--nchw"]) == 0
    path = tmp_path / "best-nchw.onnx"
    assert "opencv-dnn" in capsys.readouterr().out
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [1, 3, 32, 48]
    assert session.get_outputs()[0].shape == [1, CLASSES, 32, 48]

    # The documented deployment call: a BGR uint8 photo, blobFromImage with no scaling or
    # mean and swapRB=True, gives exactly the Keras model's RGB input.
    rgb = np.random.default_rng(3).integers(0, 256, (32, 48, 3)).astype("uint8")
    blob = cv2.dnn.blobFromImage(rgb[..., ::-1].copy(), scalefactor=1.0, size=(48, 32), mean=(0, 0, 0), swapRB=True)
    ref = model.predict(rgb[None].astype("float32"), verbose=0)  # (1, H, W, C)
    net = cv2.dnn.readNet(str(path))
    net.setInput(blob)
    out = net.forward()
    assert out.shape == (1, CLASSES, 32, 48)
    _assert_matches(out.transpose(0, 2, 3, 1), ref)
    _assert_matches(session.run(None, {"image": blob})[0].transpose(0, 2, 3, 1), ref)

    # examples/deploy_opencv.py end to end on a photo twice the export size.
    example = _load_example()
    photo = np.repeat(np.repeat(rgb, 2, axis=0), 2, axis=1)[..., ::-1].copy()  # BGR, 64x96
    mask = example.segment(net, photo, (48, 32))
    assert mask.shape == (64, 96) and mask.dtype == np.uint8
    expected = np.argmax(model.predict(cv2.resize(photo, (48, 32))[None, ..., ::-1].astype("float32"), verbose=0)[0], -1)
    np.testing.assert_array_equal(mask[::2, ::2], expected)


def _load_example():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "deploy_opencv.py"
    spec = importlib.util.spec_from_file_location("deploy_opencv", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_savedmodel_reloads_and_matches(tmp_path):
    import tensorflow as tf

    model = _tiny("segnet_basic", "transposed", "batch")
    path = export_model(model, "savedmodel", tmp_path / "sm", nchw=True)
    x = _images((32, 32, 3), n=1)
    loaded = tf.saved_model.load(str(path))  # keep a reference: it owns the variables
    out = loaded.serve(tf.constant(x.transpose(0, 3, 1, 2)))["logits"].numpy()
    _assert_matches(out.transpose(0, 2, 3, 1), model.predict(x, verbose=0))
    from PIL import Image

    Image.fromarray(np.random.default_rng(5).integers(0, 256, (20, 40, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    report = check_parity(model, path, "savedmodel", nchw=True, images=[tmp_path], count=1)  # a folder of images
    assert report.ok and report.images == 2 and report.results[0].pixels == 2 * 32 * 32


def test_pointwise_conv_after_padding_runs_in_opencv(tmp_path):
    # tf2onnx fuses the padding into the 1x1 Conv, which OpenCV 5 computes wrongly
    # unless the export splits it back out.
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.ZeroPadding2D(((1, 2), (3, 0)))(inputs)
    model = keras.Model(inputs, keras.layers.Conv2D(4, 1)(x))
    path = export_model(model, "onnx", tmp_path / "p.onnx")
    x = _images((8, 8, 3))
    ref = model.predict(x, verbose=0)
    _assert_matches(_opencv(path, x), ref)
    _assert_matches(_ort(path, x), ref)


def test_parity_check_catches_a_different_model(tmp_path):
    model = _tiny("segnet_basic", "transposed", "none")
    path = export_model(model, "onnx", tmp_path / "m.onnx")
    other = _tiny("segnet_basic", "transposed", "none")  # fresh random weights
    report = check_parity(other, path, "onnx", count=1)
    assert not report.ok
    assert all(r.max_abs_diff > report.limit for r in report.results)
    assert "FAIL" in report.summary()


def test_missing_extra_names_the_pip_command(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # import now raises ImportError
    model = _tiny("segnet_basic", "transposed", "none")
    with pytest.raises(SegtrainError, match=r"pip install segtrain\[export\]"):
        export_model(model, "onnx", tmp_path / "m.onnx")


def test_dynamic_size_needs_size(tmp_path):
    model = _tiny("segnet_basic", "transposed", "none", (None, None, 3))
    with pytest.raises(SegtrainError, match="--size"):
        export_model(model, "onnx", tmp_path / "m.onnx")
    with pytest.raises(SegtrainError, match="--format"):
        export_model(model, "tflite", tmp_path / "m.tflite", size=(32, 32))
