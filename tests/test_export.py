"""Export: every zoo family x decoder to ONNX, run in onnxruntime and OpenCV DNN next to Keras.

The oracle is the Keras model itself: the tests run the exported files in the runtimes
directly (not through ``check_parity``) and compare logits and argmax with Keras's.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from conftest import need_module

cv2 = need_module("cv2", "export")
ort = need_module("onnxruntime", "export")
need_module("onnx", "export")
need_module("tf2onnx", "export")

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
    mask = example.segment(net, photo, (32, 48))  # the export's height x width
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
        export_model(model, "coreml", tmp_path / "m.mlmodel", size=(32, 32))


# --------------------------------------------------------------------------- a quick-start run folder


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory):
    """<tmp>/runs/quickstart/{config.yaml, checkpoints/best.keras} as `train.py --config configs/quickstart.yaml`
    leaves them (narrower model, untrained), with the sample dataset at <tmp>/datasets/sample."""
    from pathlib import Path

    from segtrain.config import load_config, save_config
    from segtrain.data.formats.sample_dataset import ensure_sample_dataset

    root = tmp_path_factory.mktemp("qs")
    repo = Path(__file__).resolve().parents[1]
    ensure_sample_dataset(root / "datasets" / "sample")
    config = load_config(repo / "configs" / "quickstart.yaml",
                         [f"data.root={root / 'datasets' / 'sample'}", f"output_dir={root / 'runs' / 'quickstart'}", "model.width=4"])
    run = root / "runs" / "quickstart"
    save_config(config, run / "config.yaml")
    keras.utils.set_random_seed(0)
    model = build_model("segnet_basic", config.data.num_classes, (None, None, 3), decoder="unpool", norm="group", width=4)
    (run / "checkpoints").mkdir(parents=True)
    model.save(run / "checkpoints" / "best.keras")
    return root, model


def _readme_section(title):
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    return text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


@pytest.mark.slow
def test_readme_export_command_and_opencv_snippet_run_as_written(quickstart_run, monkeypatch, capsys):
    import shlex

    root, model = quickstart_run
    section = _readme_section("Deployment in OpenCV DNN")
    command = section.split("```bash\n", 1)[1].split("```", 1)[0].strip()
    snippet = section.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(root)
    argv = shlex.split(command)
    assert argv[:2] == ["segtrain", "export"]
    assert cli.main(argv[1:]) == 0  # the dynamic-size model gets the run's data.crop, 64x64
    out = capsys.readouterr().out
    assert "size 64x64" in out and "of the val split of" in out  # parity ran on real images
    namespace = {}
    exec(compile(snippet, "README.md", "exec"), namespace)  # noqa: S102 - the README's own code
    image = cv2.imread("datasets/sample/JPEGImages/sample_0060.jpg")[..., ::-1].astype("float32")
    want = np.argmax(model.predict(image[None], verbose=0)[0], -1)
    assert namespace["mask"].shape == (64, 64)
    assert (namespace["mask"] == want).mean() >= 0.9999

    # examples/deploy_opencv.py: --size HxW like export, --palette takes a colour-table file
    table = root / "shapes.yaml"
    table.write_text("classes:\n  background: [0, 0, 0]\n  circle: [200, 0, 0]\n  square: [0, 200, 0]\n  triangle: [0, 0, 200]\nvoid: [255, 255, 255]\n")
    example = _load_example()
    assert example.main(["--model", "runs/quickstart/checkpoints/best-nchw.onnx", "--image", "datasets/sample/JPEGImages/sample_0060.jpg",
                         "--output", "mask.png", "--size", "64x64", "--palette", str(table)]) == 0
    from PIL import Image

    png = Image.open("mask.png")
    assert png.mode == "P" and png.getpalette()[:12] == [0, 0, 0, 200, 0, 0, 0, 200, 0, 0, 0, 200]
    np.testing.assert_array_equal(np.asarray(png), namespace["mask"])
    assert example.main(["--model", "x.onnx", "--image", "y.jpg", "--output", "m.png", "--size", "64x", "--palette", "voc"]) == 1
    assert "--size '64x'" in capsys.readouterr().err


@pytest.mark.slow
def test_readme_int8_command_runs_as_written_and_tflite_names_the_unpooling(quickstart_run, monkeypatch, capsys):
    import json
    import shlex

    root, _ = quickstart_run
    command = _readme_section("Deployment in OpenCV DNN").split("```bash\n")[2].split("```", 1)[0].strip()
    monkeypatch.chdir(root)
    argv = shlex.split(command)
    assert argv[:2] == ["segtrain", "export"] and "int8" in argv
    assert cli.main(argv[1:]) == 0
    out = capsys.readouterr().out
    assert "of the val split of" in out and "int8 onnxruntime" in out and "FAIL" not in out
    report = json.loads(Path("runs/quickstart/checkpoints/best-int8.onnx.report.json").read_text())
    assert report["check"]["kind"] == "quantized" and report["check"]["ok"]
    # The same SegNet-Basic (max-unpooling) in TFLite: one error line, no file.
    assert cli.main(["export", "--checkpoint", "runs/quickstart/checkpoints/best.keras", "--format", "tflite"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: TFLite export:") and "max-unpooling" in err[0]
    assert not Path("runs/quickstart/checkpoints/best.tflite").exists()


def test_parity_check_takes_the_config_val_images(quickstart_run, tmp_path):
    from segtrain.config import load_config
    from segtrain.export import split_images

    root, model = quickstart_run
    config = root / "runs" / "quickstart" / "config.yaml"
    paths, text = split_images(config, limit=4)
    val = (root / "datasets/sample/ImageSets/Segmentation/val.txt").read_text().split()
    assert [p.stem for p in paths] == [val[0], val[6], val[13], val[19]]  # spread over the split, ends included
    assert "4 images of the val split" in text
    assert load_config(config).data.val_split == "val"

    path = export_model(model, "onnx", tmp_path / "m.onnx", size=(64, 64))
    report = check_parity(model, path, "onnx", config=config)
    assert report.ok, report.summary()
    assert report.images == 4 and report.results[0].pixels == 4 * 64 * 64  # no random images mixed in
    assert "val split" in report.summary() and "random" not in report.summary()
    report = check_parity(model, path, "onnx")  # nothing real at hand: random images, said so
    assert report.images == 3 and "no real images" in report.inputs


def test_dynamic_size_comes_from_the_run_config_or_is_asked_for(quickstart_run, tmp_path):
    import shutil

    from segtrain.export import default_size
    from segtrain.export.shapes import export_shape

    root, model = quickstart_run
    ckpt = root / "runs" / "quickstart" / "checkpoints" / "best.keras"
    assert default_size(ckpt) == ((64, 64), "")  # data.crop of configs/_base_/datasets/sample.yaml
    lone = tmp_path / "lone" / "best.keras"  # no config.yaml two folders up
    lone.parent.mkdir()
    shutil.copy(ckpt, lone)
    size, hint = default_size(lone)
    assert size is None
    with pytest.raises(SegtrainError, match=r"pass --size .*no run config at .*config.yaml"):
        export_shape(model, size, 1, hint)
    (tmp_path / "config.yaml").write_text((root / "runs/quickstart/config.yaml").read_text().replace("crop:\n  - 64\n  - 64", "crop: null"))
    size, hint = default_size(lone)
    assert size is None and "sets neither data.resize nor data.crop" in hint


def test_export_of_a_corrupt_checkpoint_says_so(tmp_path, capsys):
    bad = tmp_path / "best.keras"
    bad.write_bytes(b"PK\x03\x04 truncated")
    assert cli.main(["export", "--checkpoint", str(bad), "--format", "onnx"]) == 1
    assert "corrupt or unreadable" in capsys.readouterr().err


def test_a_bf16_trained_checkpoint_exports_in_float32_and_matches(tmp_path, capsys):
    """`mixed_precision: auto` trains in bf16 on a CPU with avx512_bf16; its checkpoint must still export."""
    onnxruntime = need_module("onnxruntime")
    from segtrain.precision import float32_copy

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        keras.utils.set_random_seed(0)
        model = build_model("segnet_basic", 3, (None, None, 3), decoder="resize_conv", norm="group", width=4)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    assert model.layers[-1].compute_dtype == "bfloat16"
    model.save(tmp_path / "best.keras")
    assert cli.main(["export", "--checkpoint", str(tmp_path / "best.keras"), "--format", "onnx", "--size", "32x32"]) == 0
    assert "ok" in capsys.readouterr().out  # the parity check ran against the float32 twin
    x = np.random.default_rng(0).uniform(0, 255, (1, 32, 32, 3)).astype("float32")
    session = onnxruntime.InferenceSession(str(tmp_path / "best.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, np.asarray(float32_copy(model)(x)), atol=1e-4)


def test_parity_fails_on_real_images_where_random_ones_pass(quickstart_run, tmp_path):
    # An export that differs from the Keras model only on smooth images (local variance below
    # ~1000 in a 5x5 window: real photos, never uniform noise) passes a check on random
    # images and must fail the check on the config's val images.
    root, _ = quickstart_run
    keras.utils.set_random_seed(0)
    x = keras.Input((64, 64, 3))
    base = keras.layers.Conv2D(4, 3, padding="same")(keras.layers.Rescaling(1 / 255)(x))
    mean = keras.layers.AveragePooling2D(5, strides=1, padding="same")(x)
    mean_sq = keras.layers.AveragePooling2D(5, strides=1, padding="same")(keras.layers.Multiply()([x, x]))
    variance = keras.layers.Subtract()([mean_sq, keras.layers.Multiply()([mean, mean])])
    smooth = keras.layers.Conv2D(1, 1, activation="relu", kernel_initializer=keras.initializers.Constant(-1.0),
                                 bias_initializer=keras.initializers.Constant(3000.0))(variance)
    shift = keras.layers.Conv2D(4, 1, use_bias=False, kernel_initializer=keras.initializers.Constant([[[[1.0, 0, 0, 0]]]]))(smooth)
    keras_model = keras.Model(x, base)
    path = export_model(keras.Model(x, keras.layers.Add()([base, shift])), "onnx", tmp_path / "m.onnx")

    assert check_parity(keras_model, path, "onnx").ok  # easy inputs: fooled
    report = check_parity(keras_model, path, "onnx", config=root / "runs" / "quickstart" / "config.yaml")
    assert not report.ok and report.images == 4
    assert all(r.agreement < 0.5 for r in report.results), report.summary()


def test_parity_rule_for_max_unpooling_judges_the_masks_only():
    from segtrain.export import ParityReport, RuntimeParity

    def report(r, unpool):
        return ParityReport(Path("m.onnx"), "onnx", [r], atol=1e-4, min_agreement=0.9999, images=4, scale=1.0,
                            index_unpooling=unpool)

    # Near-tie flips displace values across a share of the logits that depends on the images
    # (0.0 % to 1.9 % in benchmarks/results/*export_parity*.md), so only the masks are judged.
    flipped = RuntimeParity("onnxruntime", max_abs_diff=0.6, agreement=0.99998, pixels=10**6, share_over=2e-2)
    assert report(flipped, unpool=True).ok
    assert not report(flipped, unpool=False).ok  # a continuous decoder must match everywhere
    disagreeing = RuntimeParity("opencv", max_abs_diff=0.6, agreement=0.9998, pixels=10**6, share_over=1e-5)
    assert not report(disagreeing, unpool=True).ok  # masks differ on more than 0.01 % of the pixels
    assert "max-unpooling model" in report(flipped, unpool=True).summary()


# --------------------------------------------------------------------------- a format registered from outside


def _write_npz(model, shape, nchw, output, compressed=False):
    """The toy format: the model's architecture (JSON) and weights in one .npz file."""
    layout = [shape[0], shape[-1], *shape[1:-1]] if nchw else list(shape)
    save = np.savez_compressed if compressed else np.savez
    with open(output, "wb") as f:  # a file object: np.savez would append .npz to any other suffix
        save(f, *model.get_weights(), config=np.array(model.to_json()), nchw=np.array(nchw),
             input_shape=np.array([-1 if d is None else d for d in layout]))


def _npz_runners(path):
    """The toy format's one runtime: the Keras model rebuilt from the file."""
    from segtrain.export import Runners

    data = np.load(path)
    model = keras.models.model_from_json(str(data["config"]))
    model.set_weights([data[f"arr_{i}"] for i in range(len(model.weights))])
    nchw = bool(data["nchw"])

    def run(x):
        x = x.transpose(0, 2, 3, 1) if nchw else x
        y = np.asarray(model(x, training=False))
        return y.transpose(0, 3, 1, 2) if nchw else y

    return Runners(input_shape=data["input_shape"].tolist(), run={"keras-reloaded": run})


def test_a_format_registered_from_outside_exports_and_checks_end_to_end(tmp_path, capsys):
    from segtrain.export import EXPORT_FORMATS, ExportFormat, register_export_format, unregister_export_format

    model = _tiny("segnet_basic", "transposed", "batch")
    ckpt = tmp_path / "best.keras"
    model.save(ckpt)
    register_export_format(ExportFormat("npz", suffix=".npz", write=_write_npz, runners=_npz_runners,
                                        options={"compressed": False}))
    try:
        with pytest.raises(SystemExit):
            cli.main(["export", "--help"])
        assert "{savedmodel,onnx,tflite,openvino,npz}" in capsys.readouterr().out
        assert cli.main(["export", "--checkpoint", str(ckpt), "--format", "npz", "--nchw"]) == 0
        out = capsys.readouterr().out
        assert f"wrote {tmp_path / 'best-nchw.npz'}: input (1, 3, 32, 32) NCHW" in out
        assert "(npz) vs Keras on 3 random 0..255 image(s)" in out and "keras-reloaded" in out and "FAIL" not in out

        path = export_model(model, "npz", tmp_path / "small.npz", compressed=True)  # the format's own option
        report = check_parity(model, path, "npz", count=1)
        assert report.ok and [r.runtime for r in report.results] == ["keras-reloaded"]
        with pytest.raises(SegtrainError, match="format 'onnx' takes no option 'compressed'"):
            export_model(model, "onnx", tmp_path / "m.onnx", compressed=True)
    finally:
        unregister_export_format("npz")
    assert list(EXPORT_FORMATS) == ["savedmodel", "onnx", "tflite", "openvino"]
    with pytest.raises(SegtrainError, match="--format 'npz': use one of savedmodel, onnx, tflite, openvino"):
        export_model(model, "npz", tmp_path / "gone.npz")
    assert cli.main(["export", "--checkpoint", str(ckpt), "--format", "npz"]) == 1  # one error line (segtrain.cli)
    assert "invalid choice: 'npz'" in capsys.readouterr().err


def test_importing_export_loads_no_optional_dependency():
    # The table and its formats import their converters and runtimes when first used, so
    # `segtrain export --help` and `import segtrain.export` stay cheap and circle-free (OpenCV is
    # not among them: the image decoder, a core dependency, imports it).
    import subprocess

    code = ("import sys, segtrain.export.formats, segtrain.export; "
            "print(sorted(m for m in ('tensorflow', 'tf2onnx', 'onnx', 'onnxruntime', 'keras', 'openvino') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
