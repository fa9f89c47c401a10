"""OpenVINO IR export (``.xml`` + ``.bin``), checked in OpenVINO's CPU runtime.

``openvino.convert_model`` converts the serving ``tf.function`` directly (no ONNX in between)
and the IR keeps float32 weights (``save_model`` would halve them to float16 by default).
The check compiles it with ``INFERENCE_PRECISION_HINT: f32``: on CPUs with bf16 or AMX
units OpenVINO otherwise computes in bfloat16 by default (logits off by ~1e-2), which is a
deployment choice, not the export's. Needs ``pip install openvino``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segtrain.errors import SegtrainError
from segtrain.export.formats import ExportFormat, Runners, register_export_format
from segtrain.export.serving import INPUT_NAME, OUTPUT_NAME, serving_fn, signature

CPU_CONFIG = {"INFERENCE_PRECISION_HINT": "f32"}  # float32 as exported, not the CPU's bf16 default


def _require_openvino():
    """Import OpenVINO lazily; a missing package is a user error naming the install."""
    try:
        import openvino  # optional dependency: openvino (converter and CPU runtime)
    except ImportError as err:
        raise SegtrainError(f"OpenVINO export needs the optional package openvino ({err.name} is missing): "
                            "pip install openvino (or pip install segtrain[export])") from err
    return openvino


def write(model, shape: tuple, nchw: bool, output: Path) -> None:
    """Convert ``model`` to an OpenVINO IR at ``output`` (``.xml``; the weights go to the ``.bin`` beside it)."""
    ov = _require_openvino()
    import tensorflow as tf  # optional dependency: TensorFlow

    concrete = tf.function(serving_fn(model, nchw), autograph=False).get_concrete_function(signature(shape, nchw))
    converted = ov.convert_model(concrete)
    converted.outputs[0].get_tensor().set_names({OUTPUT_NAME})
    ov.save_model(converted, str(output), compress_to_fp16=False)


def runners(path: Path) -> Runners:
    """The IR compiled for OpenVINO's CPU plugin (float32 inference)."""
    ov = _require_openvino()
    compiled = ov.Core().compile_model(str(path), "CPU", CPU_CONFIG)
    request = compiled.create_infer_request()

    def run(x):
        return np.array(request.infer({INPUT_NAME: x})[compiled.outputs[0]])

    shape = compiled.inputs[0].get_partial_shape()
    return Runners(input_shape=[d.get_length() if d.is_static else None for d in shape], run={"openvino-cpu": run})


OPENVINO = register_export_format(ExportFormat("openvino", suffix=".xml", write=write, runners=runners))
