"""TFLite (float, fp16, int8), int8 ONNX and OpenVINO exports of a trained tiny U-Net, checked against Keras.

Float exports are held to the parity rule (logits to 1e-4 x max |logit|); quantized ones to
what a user cares about: their mIoU on the sample dataset's val split within ``MIOU_MARGIN``
of Keras's, scored by segtrain's own evaluation, and the report JSON beside the file.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json

import numpy as np
import pytest

from conftest import fit_tiny_unet, need_module, sample_config

tf = need_module("tensorflow", "export")
ort = need_module("onnxruntime", "export")
need_module("onnx", "export")
need_module("tf2onnx", "export")

from segtrain import cli
from segtrain.data.formats import get_format
from segtrain.data.formats.splits import list_samples
from segtrain.errors import SegtrainError
from segtrain.export import calibration_paths, check_parity, export_model
from segtrain.export.images import read_resized
from segtrain.export.onnx_quantize import float_compute_nodes
from segtrain.export.tflite import float_ops
from segtrain.models import build_model

MIOU_MARGIN = 0.02  # stated: an int8 export scores at most 2 mIoU points below Keras on the val split
SIZE = 64


@pytest.fixture(scope="module")
def trained_run(sample_root, tmp_path_factory):
    """<tmp>/run/{config.yaml, checkpoints/best.keras}: a tiny U-Net fitted for a few seconds on the sample train split."""
    run = tmp_path_factory.mktemp("quantize") / "run"
    config = sample_config(sample_root, crop=[SIZE, SIZE], output_dir=run,
                           model={"name": "unet", "width": 8, "depth": 2, "decoder": "transposed", "norm": "batch"})
    fmt = get_format("voc")
    decoded = [fmt.read(s, config.data) for s in list_samples(config.data, "train")]
    x = np.stack([d.image for d in decoded]).astype("float32")
    y = np.stack([d.label for d in decoded]).astype("int32")
    model = fit_tiny_unet(config, x, y, width=8, learning_rate=0.01, epochs=8)
    return run, model, config


def _val_images(config, n=4):
    paths, _ = calibration_paths("val", config, n)
    return np.stack([read_resized(p, (SIZE, SIZE), "test") for p in paths]).astype("float32")


def _tflite(path, x):
    interpreter = tf.lite.Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    outs = []
    for i in range(len(x)):
        interpreter.set_tensor(inp["index"], x[i : i + 1])
        interpreter.invoke()
        outs.append(interpreter.get_tensor(out["index"]).copy())
    return np.concatenate(outs)


def test_tflite_float_matches_keras_and_fp16_is_close(trained_run, tmp_path):
    _, model, config = trained_run
    x = _val_images(config)
    ref = model.predict(x, verbose=0)
    scale = max(1.0, float(np.abs(ref).max()))

    path = export_model(model, "tflite", tmp_path / "m.tflite", size=(SIZE, SIZE))
    out = _tflite(path, x)  # the interpreter directly, not through check_parity
    assert np.abs(out - ref).max() <= 1e-4 * scale
    assert (out.argmax(-1) == ref.argmax(-1)).mean() >= 0.9999
    report = check_parity(model, path, "tflite", config=config)
    assert report.ok and [r.runtime for r in report.results] == ["tflite"] and report.results[0].ms_per_image > 0

    nchw = export_model(model, "tflite", tmp_path / "m-nchw.tflite", size=(SIZE, SIZE), nchw=True)
    assert check_parity(model, nchw, "tflite", nchw=True, config=config).ok

    half = export_model(model, "tflite", tmp_path / "m-fp16.tflite", size=(SIZE, SIZE), quantize="fp16")
    assert half.stat().st_size < 0.6 * path.stat().st_size  # float16 weights: half the file
    out16 = _tflite(half, x)
    assert np.abs(out16 - ref).max() <= 1e-2 * scale  # stated: fp16 weights keep logits within 1 % of their range
    assert (out16.argmax(-1) == ref.argmax(-1)).mean() >= 0.99


def test_int8_needs_real_calibration_images_and_is_fully_integer(trained_run, tmp_path):
    _, model, config = trained_run
    with pytest.raises(SegtrainError, match="--quantize int8 needs calibration images"):
        export_model(model, "tflite", tmp_path / "q.tflite", size=(SIZE, SIZE), quantize="int8")
    with pytest.raises(SegtrainError, match="--quantize fp16: onnx exports take none or int8"):
        export_model(model, "onnx", tmp_path / "q.onnx", size=(SIZE, SIZE), quantize="fp16")
    with pytest.raises(SegtrainError, match="format 'savedmodel' takes no option 'quantize'"):
        export_model(model, "savedmodel", tmp_path / "q", size=(SIZE, SIZE), quantize="int8")
    with pytest.raises(SegtrainError, match="--calibration nosuch: no such folder, and no experiment config"):
        calibration_paths("nosuch")

    paths, described = calibration_paths("val", config, 8)
    assert len(paths) == 8 and described.startswith("8 images of the val split")
    path = export_model(model, "tflite", tmp_path / "q.tflite", size=(SIZE, SIZE), quantize="int8", calibration=paths)
    assert float_ops(path.read_bytes()) == []  # every op between the float32 ends is integer
    half = export_model(model, "tflite", tmp_path / "h.tflite", size=(SIZE, SIZE), quantize="fp16")
    assert "CONV_2D" in float_ops(half.read_bytes())  # the detector does see float compute

    onnx = need_module("onnx", "export")
    q = export_model(model, "onnx", tmp_path / "q.onnx", size=(SIZE, SIZE), quantize="int8", calibration=[paths[0].parent])
    assert float_compute_nodes(onnx.load(str(q))) == []
    f = export_model(model, "onnx", tmp_path / "f.onnx", size=(SIZE, SIZE))
    assert len(float_compute_nodes(onnx.load(str(f)))) >= 5  # every Conv / ConvTranspose of the float file


def test_openvino_ir_matches_keras_in_the_cpu_runtime(trained_run, tmp_path):
    ov = need_module("openvino", "export")
    _, model, config = trained_run
    x = _val_images(config, 2)
    ref = model.predict(x, verbose=0)
    path = export_model(model, "openvino", tmp_path / "m.xml", size=(SIZE, SIZE), nchw=True)
    assert path.with_suffix(".bin").stat().st_size > 4 * model.count_params() * 0.9  # float32 weights, not fp16
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})  # directly, not check_parity
    out = np.concatenate([compiled({"image": x[i : i + 1].transpose(0, 3, 1, 2)})["logits"] for i in range(len(x))])
    np.testing.assert_allclose(out.transpose(0, 2, 3, 1), ref, rtol=0, atol=1e-4 * max(1.0, np.abs(ref).max()))
    report = check_parity(model, path, "openvino", nchw=True, config=config)
    assert report.ok and [r.runtime for r in report.results] == ["openvino-cpu"]


def test_segnet_unpooling_does_not_convert_to_tflite_and_says_why(tmp_path):
    model = build_model("segnet_basic", 4, (32, 32, 3), decoder="unpool", norm="batch", width=2)
    with pytest.raises(SegtrainError, match=r"TFLite export: .*max-unpooling .*at most 5-D.*decoder transposed") as err:
        export_model(model, "tflite", tmp_path / "s.tflite")
    assert "\n" not in str(err.value) and not (tmp_path / "s.tflite").exists()


@pytest.mark.slow
@pytest.mark.parametrize("format,runtimes", [("tflite", ["tflite"]), ("onnx", ["onnxruntime", "opencv-dnn"])])
def test_int8_export_scores_near_keras_on_val_and_writes_its_report(trained_run, format, runtimes, capsys):
    run, _, _ = trained_run
    ckpt = run / "checkpoints" / "best.keras"
    assert cli.main(["export", "--checkpoint", str(ckpt), "--format", format, "--quantize", "int8",
                     "--calibration-images", "12"]) == 0
    out = capsys.readouterr().out
    path = run / "checkpoints" / f"best-int8.{format}"
    assert f"wrote {path}: input (1, {SIZE}, {SIZE}, 3) NHWC" in out and "int8" in out and "FAIL" not in out
    report = json.loads((run / "checkpoints" / f"best-int8.{format}.report.json").read_text())
    assert report["command"].startswith("segtrain export --checkpoint") and report["date"][:2] == "20"
    assert report["cpu"]["model"] and isinstance(report["cpu"]["flags"], list)
    assert report["versions"]["tensorflow"] and report["versions"]["onnxruntime"]
    assert report["export"]["quantize"] == "int8" and len(report["export"]["calibration"]) == 12
    check = report["check"]
    assert check["kind"] == "quantized" and check["ok"] and check["split"].startswith("20 images of the val split")
    keras_miou = check["keras"]["miou"]
    assert keras_miou > 0.3  # a model that learned something, so the margin means something
    assert [r["name"] for r in check["quantized"]] == runtimes == [r["name"] for r in check["float_export"]]
    for r, f in zip(check["quantized"], check["float_export"]):
        assert r["miou"] >= keras_miou - MIOU_MARGIN and r["ms_per_image"] > 0
        assert f["miou"] == pytest.approx(keras_miou, abs=1e-3)  # the float export scores as Keras does


@pytest.mark.slow
def test_cli_float_tflite_checks_parity_and_a_failing_int8_limit_is_one_error_line(trained_run, capsys):
    run, _, _ = trained_run
    ckpt = run / "checkpoints" / "best.keras"
    assert cli.main(["export", "--checkpoint", str(ckpt), "--format", "tflite"]) == 0
    assert "(tflite) vs Keras on 4 images of the val split" in capsys.readouterr().out
    report = json.loads((run / "checkpoints" / "best.tflite.report.json").read_text())
    assert report["check"]["kind"] == "parity" and report["check"]["ok"]
    assert report["check"]["runtimes"][0]["runtime"] == "tflite"

    # An impossible limit (the export must beat Keras by a point) fails with one error line.
    assert cli.main(["export", "--checkpoint", str(ckpt), "--format", "tflite", "--quantize", "fp16",
                     "--max-miou-drop", "-0.01"]) == 1
    captured = capsys.readouterr()
    assert "FAIL" in captured.out
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "val mIoU is more than -0.01 below Keras's" in errors[0]
    assert cli.main(["export", "--checkpoint", str(ckpt), "--format", "savedmodel", "--quantize", "int8"]) == 1
    assert "error: --quantize int8: savedmodel exports are not quantized; use --format onnx, tflite" in capsys.readouterr().err
