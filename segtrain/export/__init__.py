"""Export a Keras model for deployment (SavedModel, ONNX, ...) and check it against Keras.

One idea per module:

- ``formats``: the table ``EXPORT_FORMATS`` (``ExportFormat``: how to write, how to run);
- ``savedmodel``, ``onnx`` (+ ``onnx_rewrite``, ``onnx_quantize``), ``tflite``, ``openvino``: one format each, registering itself;
- ``calibration``: the real images int8 quantization is calibrated on (shared by the formats);
- ``images``: real images (files, folders, a config's split) at the export size;
- ``serving``: the TensorFlow function the TensorFlow-based formats export;
- ``shapes``: the export's input shape (size from the run config, NCHW layout);
- ``writing``: ``export_model``; ``parity``: ``check_parity`` and ``ParityReport`` (float exports);
- ``quality``: ``check_quantized``: a quantized export's val mIoU and speed next to Keras and the float export;
- ``report``: the JSON report written beside a checked export (command, CPU, versions, findings);
- ``cli``: the ``segtrain export`` command.

The exported graph takes raw pixels (float32, 0..255 RGB; the normalisation is inside)
and returns logits at the input's size. How to add a format: docs/extending_export.md.
"""

from __future__ import annotations

# The built-in formats register themselves on import, in the order --format lists them.
from segtrain.export import savedmodel  # noqa: F401  (first: the format that needs only TensorFlow)
from segtrain.export import onnx  # noqa: F401
from segtrain.export import tflite  # noqa: F401
from segtrain.export import openvino  # noqa: F401
from segtrain.export.formats import (
    EXPORT_FORMATS,
    ExportFormat,
    Runners,
    export_format,
    register_export_format,
    unregister_export_format,
)
from segtrain.export.calibration import calibration_paths
from segtrain.export.images import split_images
from segtrain.export.parity import ParityReport, RuntimeParity, check_parity
from segtrain.export.quality import QualityReport, check_quantized
from segtrain.export.shapes import default_size
from segtrain.export.writing import export_model

__all__ = [
    "EXPORT_FORMATS", "ExportFormat", "ParityReport", "QualityReport", "Runners", "RuntimeParity", "calibration_paths",
    "check_parity", "check_quantized", "default_size",
    "export_format", "export_model", "register_export_format", "split_images", "unregister_export_format",
]
