"""TFLite (LiteRT) export, float or quantized, checked in the TFLite interpreter.

``quantize``: ``none`` (float32), ``fp16`` (float16 weights, float32 compute on CPU: half
the file) or ``int8`` (full-integer post-training quantization: int8 weights and
activations, calibrated on real images; the input and output stay float32 raw pixels and
logits, so the contract of docs/export.md holds). The graph is frozen first (TFLite reads
no resource variables). A file is written only if it runs in the interpreter and, for
int8, every op between the input's Quantize and the output's Dequantize is integer: an
op left in float is an error, never a silently half-quantized file.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from segtrain.errors import SegtrainError
from segtrain.export.calibration import CALIBRATION_IMAGES, calibration_inputs, check_quantize
from segtrain.export.formats import ExportFormat, Runners, register_export_format
from segtrain.export.serving import serving_fn, signature

QUANTIZE = ("none", "fp16", "int8")
BOUNDARY_OPS = {"QUANTIZE", "DEQUANTIZE"}  # int8: float32 in and out at the graph's two ends only


def _converter(model, shape: tuple, nchw: bool):
    """A TFLite converter of the frozen serving function (raw pixels in, logits out)."""
    import tensorflow as tf  # optional dependency: TensorFlow (the converter)
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2  # (TensorFlow)

    concrete = tf.function(serving_fn(model, nchw), autograph=False).get_concrete_function(signature(shape, nchw))
    return tf.lite.TFLiteConverter.from_concrete_functions([convert_variables_to_constants_v2(concrete)], model)


def _interpreter(model_path: Path | None = None, content: bytes | None = None, delegates: bool = True):
    """A ``tf.lite.Interpreter`` (its deprecation notice points to ai_edge_litert, which has the same API)."""
    import tensorflow as tf  # optional dependency: TensorFlow (tf.lite's interpreter)

    resolver = tf.lite.experimental.OpResolverType
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return tf.lite.Interpreter(
            model_path=None if model_path is None else str(model_path), model_content=content,
            num_threads=os.cpu_count(),  # as onnxruntime: every core (tf.lite's default may use one)
            experimental_op_resolver_type=resolver.AUTO if delegates else resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES)


def float_ops(content: bytes) -> list[str]:
    """The ops of a TFLite model that compute in float32 other than the Quantize/Dequantize at its ends."""
    interpreter = _interpreter(content=content, delegates=False)  # the model's own ops, not XNNPACK's fused node
    dtypes = {t["index"]: t["dtype"].__name__ for t in interpreter.get_tensor_details()}
    found = set()
    for op in interpreter._get_ops_details():  # the only per-op listing tf.lite offers
        tensors = [i for i in (*op["inputs"], *op["outputs"]) if i >= 0]
        if op["op_name"] not in BOUNDARY_OPS and any(dtypes.get(i) == "float32" for i in tensors):
            found.add(op["op_name"])
    return sorted(found)


def _unsupported(model, err: Exception) -> SegtrainError:
    """The one-line error for a model the converter or interpreter refuses; SegNet's unpooling is the known case."""
    from segtrain.models.pooling import MaxUnpool  # imports Keras (TensorFlow, export's backend)

    reason = str(err).strip().splitlines()[0][:300]
    hint = ""
    if any(isinstance(layer, MaxUnpool) for layer in model._flatten_layers(include_self=False, recursive=True)):
        hint = ("; max-unpooling (SegNet's decoder: unpool) places values by pooling indices through 6-D strided views, "
                "which TFLite does not run (at most 5-D): export it as ONNX, or train with decoder transposed, resize_conv or bilinear")
    return SegtrainError(f"TFLite export: the converted model does not run in the TFLite interpreter ({reason}){hint}")


def write(model, shape: tuple, nchw: bool, output: Path, quantize: str = "none", calibration=(),
          calibration_images: int = CALIBRATION_IMAGES) -> None:
    """Convert ``model`` to a ``.tflite`` file at ``output``; ``calibration`` (files or folders) feeds int8."""
    import tensorflow as tf  # optional dependency: TensorFlow (the converter)

    check_quantize("tflite", quantize, QUANTIZE)
    converter = _converter(model, shape, nchw)
    if quantize != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    if quantize == "int8":
        batches = list(calibration_inputs(calibration, shape, nchw, calibration_images))
        converter.representative_dataset = lambda: ([x] for x in batches)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]  # no silent float fallback
    try:
        with warnings.catch_warnings():  # "statistics for quantized inputs": the float32 input needs none
            warnings.simplefilter("ignore", UserWarning)
            content = converter.convert()
        _interpreter(content=content).allocate_tensors()
    except Exception as err:  # the converter and interpreter raise bare RuntimeErrors / ConverterErrors
        raise _unsupported(model, err) from None
    left = float_ops(content) if quantize == "int8" else []
    if left:
        raise SegtrainError(f"TFLite int8 export: ops {left} still compute in float32, so the file would not be fully "
                            "quantized; export with --quantize fp16 or none, or as ONNX")
    output.write_bytes(content)


def runners(path: Path) -> Runners:
    """The ``.tflite`` file in the TFLite interpreter (CPU, with its default XNNPACK delegate)."""
    interpreter = _interpreter(model_path=path)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    allocated = [tuple(inp["shape"])]

    def run(x):
        if tuple(x.shape) != allocated[0]:  # a dynamic-batch export fed another batch size
            interpreter.resize_tensor_input(inp["index"], x.shape)
            interpreter.allocate_tensors()
            allocated[0] = tuple(x.shape)
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(out["index"]).copy()

    return Runners(input_shape=[int(d) for d in inp["shape_signature"]], run={"tflite": run})


TFLITE = register_export_format(ExportFormat(
    "tflite", suffix=".tflite", write=write, runners=runners,
    options={"quantize": "none", "calibration": (), "calibration_images": CALIBRATION_IMAGES}))
