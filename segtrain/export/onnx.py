"""ONNX export, checked in onnxruntime and OpenCV DNN.

ONNX exports have a fixed spatial size (OpenCV DNN wants static shapes) and, by default,
a fixed batch of 1. The conversion freezes a ``tf.function`` with a fixed input signature
and converts the GraphDef with tf2onnx (Keras's own ``model.export(format="onnx")`` refuses
functional models that were never called), followed by a few graph rewrites that keep the
file portable (``segtrain.export.onnx_rewrite``). Needs the ``export`` extra.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from segtrain.errors import SegtrainError
from segtrain.export.calibration import CALIBRATION_IMAGES, calibration_inputs, check_quantize
from segtrain.export.formats import ExportFormat, Runners, register_export_format
from segtrain.export.onnx_quantize import quantize_int8
from segtrain.export.onnx_rewrite import make_portable, rename_tensor
from segtrain.export.serving import INPUT_NAME, OUTPUT_NAME, serving_fn, signature

ONNX_OPSET = 17
QUANTIZE = ("none", "int8")  # fp16 ONNX runs in float32 kernels on onnxruntime's CPU: nothing gained
EXTRA_HINT = "pip install segtrain[export]"


def _require_onnx_tools():
    """Import the export extra lazily; a missing package is a user error, not a crash."""
    try:
        import cv2  # optional dependency: opencv-python-headless (the OpenCV DNN runtime)
        import onnx  # optional dependency: onnx
        import onnxruntime  # optional dependency: onnxruntime
        import tf2onnx  # optional dependency: tf2onnx (the converter)
    except ImportError as err:
        raise SegtrainError(f"ONNX export needs the optional packages of the 'export' extra ({err.name} is missing): {EXTRA_HINT}") from err
    # tf2onnx logs the ops it cannot map; onnx_rewrite.make_portable rewrites some of those and
    # write reports the rest as a SegtrainError.
    logging.getLogger("tf2onnx").setLevel(logging.CRITICAL)
    return tf2onnx, onnx, onnxruntime, cv2


def write(model, shape: tuple, nchw: bool, output: Path, opset: int = ONNX_OPSET, quantize: str = "none",
          calibration=(), calibration_images: int = CALIBRATION_IMAGES) -> None:
    """Convert ``model`` to an ONNX file at ``output`` (opset ``opset``), rewritten to run in OpenCV DNN too;
    ``quantize="int8"`` quantizes it (QDQ) on the ``calibration`` images (files or folders)."""
    check_quantize("onnx", quantize, QUANTIZE)
    tf2onnx, onnx, _, _ = _require_onnx_tools()
    import tensorflow as tf  # optional dependency: TensorFlow
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2  # (TensorFlow)

    # Freeze first and convert the GraphDef: tf2onnx's from_function would turn captured
    # constants (keras Normalization's mean/variance) into extra graph inputs.
    concrete = tf.function(serving_fn(model, nchw), autograph=False).get_concrete_function(signature(shape, nchw))
    tf_logger, level = tf.get_logger(), tf.get_logger().level
    tf_logger.setLevel(logging.ERROR)  # tf2onnx calls TF1 APIs: deprecation notices a user cannot act on
    try:
        frozen = convert_variables_to_constants_v2(concrete, lower_control_flow=False, aggressive_inlining=True)
        proto, _ = tf2onnx.convert.from_graph_def(
            frozen.graph.as_graph_def(), input_names=[t.name for t in frozen.inputs],
            output_names=[t.name for t in frozen.outputs], opset=opset)
    finally:
        tf_logger.setLevel(level)
    proto = make_portable(proto)
    unknown = sorted({n.op_type for n in proto.graph.node if not onnx.defs.has(n.op_type, n.domain)})
    if unknown:
        layers = sorted({n.name.split("/")[1] for n in proto.graph.node if n.op_type in unknown and n.name.count("/") > 1})
        raise SegtrainError(f"ONNX export: TensorFlow ops {unknown} (in layers {layers}) have no ONNX equivalent; rewrite those layers with other keras.ops")
    rename_tensor(proto, proto.graph.input[0].name, INPUT_NAME)
    rename_tensor(proto, proto.graph.output[0].name, OUTPUT_NAME)
    classes = model.output_shape[-1]
    layout = "NCHW" if nchw else "NHWC"
    onnx.helper.set_model_props(proto, {
        "segtrain.layout": layout,
        "segtrain.input": f"{layout} float32 raw pixel values (RGB 0..255); normalisation is inside the graph",
        "segtrain.output": f"{layout} float32 logits with {classes} class channels; argmax over channels = class index",
    })
    onnx.checker.check_model(proto)
    if quantize == "int8":
        proto = quantize_int8(proto, output, calibration_inputs(calibration, shape, nchw, calibration_images))
        onnx.helper.set_model_props(proto, {**{p.key: p.value for p in proto.metadata_props}, "segtrain.quantize": "int8 QDQ"})
    onnx.save(proto, str(output))


def runners(path: Path) -> Runners:
    """The ONNX file in onnxruntime (CPU) and in OpenCV DNN, the runtime most deployments use."""
    _, _, ort, cv2 = _require_onnx_tools()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    net = cv2.dnn.readNet(str(path))

    def run_opencv(x):
        net.setInput(np.ascontiguousarray(x))
        return net.forward()

    return Runners(
        input_shape=session.get_inputs()[0].shape,
        run={
            "onnxruntime": lambda x: session.run(None, {INPUT_NAME: x})[0],
            "opencv-dnn": run_opencv,
        },
    )


ONNX = register_export_format(ExportFormat(
    "onnx", suffix=".onnx", write=write, runners=runners,
    options={"opset": ONNX_OPSET, "quantize": "none", "calibration": (), "calibration_images": CALIBRATION_IMAGES}))
