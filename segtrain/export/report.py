"""The JSON report written beside every checked export: what was run, on which machine, and what the check found.

Speeds and quantized accuracy depend on the CPU (int8 kernels need AVX-512 VNNI or AVX-VNNI to
pay off) and on the converter and runtime versions, so the report records them with the
numbers: the command, the date, the CPU model and flags from /proc/cpuinfo, the load average
while it ran, and the versions.
"""

from __future__ import annotations

import datetime
import platform
import sys
from importlib import metadata
from pathlib import Path

from segtrain.io_utils import write_json

PACKAGES = ("segtrain", "keras", "tensorflow", "numpy", "tf2onnx", "onnx", "onnxruntime", "opencv-python-headless", "openvino")


def report_path(exported: Path) -> Path:
    """``best-int8.tflite`` -> ``best-int8.tflite.report.json`` (beside it; a SavedModel folder gets a sibling file)."""
    exported = Path(exported)
    return exported.with_name(exported.name + ".report.json")


def cpu_info() -> dict:
    """CPU model, logical cores and flags from /proc/cpuinfo (the platform's processor string elsewhere)."""
    info = {"model": platform.processor() or platform.machine(), "flags": []}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    fields = dict(line.split(":", 1) for line in text.split("\n\n")[0].splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    return {"model": fields.get("model name", info["model"]), "logical_cores": text.count("processor\t:"),
            "flags": sorted(fields.get("flags", "").split())}


def versions() -> dict:
    """Installed versions of the packages an export's numbers depend on (None: not installed)."""
    found = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (/proc/loadavg): timings on a busy shared CPU read differently."""
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except (OSError, ValueError):
        return None


def environment(command: str) -> dict:
    """The header of a report: the command, the date (UTC), the CPU, its load and the versions."""
    return {"command": command, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "cpu": cpu_info(), "load_average": load_average(), "versions": versions()}


def write_export_report(exported: Path, command: str, export: dict, check: dict) -> Path:
    """Write ``<exported>.report.json``: environment, what was exported (``export``) and the check's findings."""
    path = report_path(exported)
    write_json(path, {**environment(command), "export": export, "check": check})
    return path
