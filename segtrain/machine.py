"""The machine a figure was measured on: CPU model and flags, load, package versions.

Speeds depend on the CPU (AVX2 only, AVX-512 with VNNI, avx512_bf16 / AMX all differ several
fold on the same code) and on the runtime versions, so every results file, export report and
run log records them next to its numbers.
"""

from __future__ import annotations

import datetime
import os
import platform
import sys
from importlib import metadata
from pathlib import Path

#: The flags that decide which CPU kernels run (oneDNN, XNNPACK, onnxruntime, OpenVINO).
RELEVANT_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16",
                  "amx_tile", "amx_bf16", "amx_int8")

#: Packages whose versions change the numbers segtrain measures.
PACKAGES = ("segtrain", "keras", "tensorflow", "jax", "jaxlib", "torch", "numpy", "pillow", "albumentations",
            "tf2onnx", "onnx", "onnxruntime", "opencv-python-headless", "openvino")


def cpu_info() -> dict:
    """CPU model, logical cores, all flags and the relevant ones (the platform's processor string off Linux)."""
    info = {"model": platform.processor() or platform.machine(), "logical_cores": os.cpu_count(), "flags": [],
            "relevant_flags": []}
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return info
    fields = dict(line.split(":", 1) for line in text.split("\n\n")[0].splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = sorted(fields.get("flags", "").split())
    return {"model": fields.get("model name", info["model"]), "logical_cores": text.count("processor\t:"),
            "flags": flags, "relevant_flags": [f for f in RELEVANT_FLAGS if f in flags]}


def cpu_summary() -> str:
    """One line for logs: ``AMD EPYC 9B14, 2 cores, avx2 avx512f ... avx512_bf16``."""
    cpu = cpu_info()
    return f"{cpu['model']}, {cpu['logical_cores']} cores, {' '.join(cpu['relevant_flags']) or 'no AVX2'}"


def versions(packages: tuple[str, ...] = PACKAGES) -> dict:
    """Installed versions (None: not installed) and Python's."""
    found = {"python": sys.version.split()[0]}
    for name in packages:
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


def environment(command: str, packages: tuple[str, ...] = PACKAGES) -> dict:
    """The header of a results file or report: command, date (UTC), CPU, load and versions."""
    return {"command": command, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "cpu": cpu_info(), "load_average": load_average(), "versions": versions(packages)}
