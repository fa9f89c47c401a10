"""The quick start as the README runs it, timed, and its BatchNorm variants (precise BN on / off).

Each variant is the README's command (`python train.py --config configs/quickstart.yaml`) in a
fresh subprocess with its own output folder; the figures are the wall time of the whole command
(start-up included), the val mIoU and training seconds of every epoch from the run's log.csv,
and the seconds of each precise-BN recompute the run printed (BatchNorm variants).

    python benchmarks/quickstart.py [--variants quickstart batchnorm_running batchnorm_precise] [--name quickstart]
"""

from __future__ import annotations

import argparse
import csv
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_file import write_results  # benchmarks/results_file.py

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {
    "quickstart": [],
    # BatchNorm's moving statistics after ~150 steps vs precise BN (float32 so the two differ only there).
    "batchnorm_running": ["model.norm=batch", "train.mixed_precision=none", "train.precise_bn.batches=0"],
    "batchnorm_precise": ["model.norm=batch", "train.mixed_precision=none"],
}


def run(variant: str, folder: Path) -> dict:
    """Run the README command with the variant's overrides; wall time and per-epoch val mIoU."""
    overrides = [f"output_dir={folder / variant}", *VARIANTS[variant]]
    command = [sys.executable, "train.py", "--config", "configs/quickstart.yaml"]
    for item in overrides:
        command += ["--set", item]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - start
    with open(folder / variant / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    miou = [float(row["val_miou"]) for row in rows if row.get("val_miou")]
    precise_bn = [float(s) for s in re.findall(r"precise BN: .* recomputed over \d+ training batches \(([\d.]+) s\)", done.stdout)]
    return {"overrides": VARIANTS[variant], "wall_s": wall, "val_miou_per_epoch": miou, "final_val_miou": miou[-1],
            "epoch_seconds": [float(row["seconds"]) for row in rows], "precise_bn_seconds": precise_bn}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--name", default="quickstart", help="results file name under benchmarks/results/")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        figures = {v: run(v, Path(tmp)) for v in args.variants}
    for v, r in figures.items():
        print(f"{v:<18} {r['wall_s']:6.1f} s  final val mIoU {r['final_val_miou']:.3f}")
    write_results(args.name, figures, [
        "| variant | overrides | wall time | final val mIoU | val mIoU per epoch |", "|---|---|---|---|---|",
        *[f"| {v} | {' '.join(r['overrides']) or '(none)'} | {r['wall_s']:.0f} s | {r['final_val_miou']:.3f} | "
          f"{', '.join(f'{m:.3f}' for m in r['val_miou_per_epoch'])} |" for v, r in figures.items()], "",
        "| variant | training s per epoch | precise-BN recompute s (each epoch end) |", "|---|---|---|",
        *[f"| {v} | {', '.join(f'{s:.1f}' for s in r['epoch_seconds'])} | "
          f"{', '.join(f'{s:.1f}' for s in r['precise_bn_seconds']) or 'none'} |" for v, r in figures.items()]],
        ["Wall time of the whole command (start-up included) on the machine below; other jobs may have run "
         "(see the load average)."])


if __name__ == "__main__":
    main()
