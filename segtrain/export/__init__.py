"""Export a Keras model for deployment (SavedModel, ONNX, ...) and check it against Keras.

One idea per module:

- ``formats``: the table ``EXPORT_FORMATS`` (``ExportFormat``: how to write, how to run);
- ``savedmodel``, ``onnx`` (+ ``onnx_rewrite``): one format each, registering itself;
- ``serving``: the TensorFlow function the TensorFlow-based formats export;
- ``shapes``: the export's input shape (size from the run config, NCHW layout);
- ``writing``: ``export_model``; ``parity``: ``check_parity`` and ``ParityReport``;
- ``cli``: the ``segtrain export`` command.

The exported graph takes raw pixels (float32, 0..255 RGB; the normalisation is inside)
and returns logits at the input's size. How to add a format: docs/extending_export.md.
"""

from __future__ import annotations

# The built-in formats register themselves on import, in the order --format lists them.
from segtrain.export import savedmodel  # noqa: F401  (first: the format that needs only TensorFlow)
from segtrain.export import onnx  # noqa: F401
from segtrain.export.formats import (
    EXPORT_FORMATS,
    ExportFormat,
    Runners,
    export_format,
    register_export_format,
    unregister_export_format,
)
from segtrain.export.parity import ParityReport, RuntimeParity, check_parity, split_images
from segtrain.export.shapes import default_size
from segtrain.export.writing import export_model

__all__ = [
    "EXPORT_FORMATS", "ExportFormat", "ParityReport", "Runners", "RuntimeParity", "check_parity", "default_size",
    "export_format", "export_model", "register_export_format", "split_images", "unregister_export_format",
]
