"""Every benchmark writes its figures the same way: benchmarks/results/<name>.json and .md.

The JSON holds the machine (segtrain.machine.environment: command, date, CPU model and flags,
cores, load, versions) and the figures (medians, ratios, raw repeats); the markdown is the same
for people. README and docs figures cite these files, and tests/test_results_files.py checks
that the figures they quote match.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout without installing

from segtrain.machine import environment  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def command_line() -> str:
    """The command as a user would retype it: ``python benchmarks/<script> <args>``."""
    script = Path(sys.argv[0])
    shown = f"benchmarks/{script.name}" if script.resolve().parent.name == "benchmarks" else str(script)
    return " ".join(["python", shown, *sys.argv[1:]])


def _plain(value):
    """JSON for what json does not know: NumPy numbers as floats, paths and the rest as text."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def write_results(name: str, figures: dict, table: list[str], notes: list[str] = ()) -> Path:
    """Write ``results/<name>.json`` (environment + figures) and ``results/<name>.md`` (table + notes)."""
    record = {**environment(command_line()), "figures": figures}
    RESULTS.mkdir(exist_ok=True)
    json_path = RESULTS / f"{name}.json"
    json_path.write_text(json.dumps(record, indent=1, default=_plain) + "\n")
    cpu = record["cpu"]
    header = [f"# {name}", "", f"Command: `{record['command']}`  ", f"Date: {record['date']}  ",
              f"CPU: {cpu['model']}, {cpu['logical_cores']} logical cores, flags: {' '.join(cpu['relevant_flags'])}  ",
              f"Load average (1, 5, 15 min) at the end: {record['load_average']}  ",
              "Versions: " + ", ".join(f"{k} {v}" for k, v in record["versions"].items() if v), ""]
    (RESULTS / f"{name}.md").write_text("\n".join([*header, *table, "", *notes]).rstrip() + "\n")
    print(f"wrote {json_path} and {name}.md")
    return json_path
