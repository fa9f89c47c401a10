"""Summarise a training run's log.csv into summary.json beside it: the figures the README quotes.

    python benchmarks/summarize_run.py benchmarks/results/camvid_cpu_best

Writes the total of the per-epoch training seconds (minutes), the final and best val mIoU
with their epochs, and the final per-class IoU, so a quoted sum or maximum is in a file.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path


def summarize(run: Path) -> dict:
    with open(run / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    scored = [r for r in rows if r.get("val_miou")]
    best = max(scored, key=lambda r: float(r["val_miou"]))
    last = scored[-1]
    return {"epochs": len(rows), "steps": int(rows[-1]["step"]),
            "training_minutes": sum(float(r["seconds"]) for r in rows) / 60,
            "final_epoch": int(last["epoch"]), "final_val_miou": float(last["val_miou"]),
            "best_epoch": int(best["epoch"]), "best_val_miou": float(best["val_miou"]),
            "final_iou": {k[4:]: float(v) for k, v in last.items() if k.startswith("iou_") and v}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run folder (or a copy of its log.csv in a results folder)")
    args = parser.parse_args()
    summary = summarize(args.run)
    (args.run / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
