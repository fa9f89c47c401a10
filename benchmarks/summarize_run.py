"""Summarise a training run's log.csv into summary.json beside it: the figures the README quotes.

    python benchmarks/summarize_run.py benchmarks/results/camvid_cpu_best

Writes the total of the per-epoch training seconds (minutes) and of the time in them spent waiting
for data (log.csv's data_wait share), the final and best val mIoU
with their epochs, the learning curve (every validated epoch), the per-class IoU of the final
and of the best epoch, and, for a ``train.time_budget`` run, the plan from state.json (its
planned seconds) next to the wall time run.log (or a saved console.log) reports, so a quoted figure is in a file.
A run folder holds state.json under checkpoints/; a results folder may hold a copy beside log.csv.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from pathlib import Path

_ENDED = re.compile(r"train\.time_budget: ended at (\d+) s of this process \(planned (\d+) s\)")


def _iou(row: dict) -> dict:
    return {k[4:]: float(v) for k, v in row.items() if k.startswith("iou_") and v}


def time_budget(run: Path) -> dict | None:
    """The committed budget plan (state.json) and the wall time the run logged at its end (run.log)."""
    state = next((p for p in (run / "checkpoints" / "state.json", run / "state.json") if p.is_file()), None)
    plan = json.loads(state.read_text())["time_budget"] if state else None
    if plan is None:
        return None
    logs = [run / name for name in ("run.log", "console.log")]  # runs before the line reached run.log: the console's
    ended = [found for log in logs if log.is_file() for found in _ENDED.findall(log.read_text(encoding="utf-8"))]
    if ended:
        plan = {**plan, "ended_seconds": float(ended[-1][0])}
        plan["ended_over_budget"] = plan["ended_seconds"] / (60 * plan["minutes"])
    return plan


def summarize(run: Path) -> dict:
    with open(run / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    scored = [r for r in rows if r.get("val_miou")]
    best = max(scored, key=lambda r: float(r["val_miou"]))
    last = scored[-1]
    summary = {"epochs": len(rows), "steps": int(rows[-1]["step"]),
               "training_minutes": sum(float(r["seconds"]) for r in rows) / 60,
               "final_epoch": int(last["epoch"]), "final_val_miou": float(last["val_miou"]),
               "best_epoch": int(best["epoch"]), "best_val_miou": float(best["val_miou"]),
               "final_iou": _iou(last), "best_iou": _iou(best),
               "curve": [{"epoch": int(r["epoch"]), "step": int(r["step"]), "val_miou": float(r["val_miou"]),
                          "val_pixel_accuracy": float(r["val_pixel_accuracy"])} for r in scored]}
    if "data_wait" in rows[0]:  # logs from before the column have none
        summary["data_wait_minutes"] = sum(float(r["seconds"]) * float(r["data_wait"] or 0) for r in rows) / 60
    budget = time_budget(run)
    if budget is not None:
        summary["time_budget"] = budget
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run folder (or a copy of its log.csv in a results folder)")
    args = parser.parse_args()
    summary = summarize(args.run)
    (args.run / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
