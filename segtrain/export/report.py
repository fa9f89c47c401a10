"""The JSON report written beside every checked export: what was run, on which machine, and what the check found.

Speeds and quantized accuracy depend on the CPU (int8 kernels need AVX-512 VNNI or AVX-VNNI to
pay off) and on the converter and runtime versions, so the report records them with the
numbers (segtrain.machine.environment).
"""

from __future__ import annotations

from pathlib import Path

from segtrain.io_utils import write_json
from segtrain.machine import environment

PACKAGES = ("segtrain", "keras", "tensorflow", "numpy", "tf2onnx", "onnx", "onnxruntime", "opencv-python-headless", "openvino")


def report_path(exported: Path) -> Path:
    """``best-int8.tflite`` -> ``best-int8.tflite.report.json`` (beside it; a SavedModel folder gets a sibling file)."""
    exported = Path(exported)
    return exported.with_name(exported.name + ".report.json")


def write_export_report(exported: Path, command: str, export: dict, check: dict) -> Path:
    """Write ``<exported>.report.json``: environment, what was exported (``export``) and the check's findings."""
    path = report_path(exported)
    write_json(path, {**environment(command, PACKAGES), "export": export, "check": check})
    return path
