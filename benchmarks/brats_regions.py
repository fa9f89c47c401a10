"""BRATS whole-volume Dice of finished runs, side by side: region-based (sigmoid) vs softmax at the same budget.

Trains nothing: each run is trained first with its config (one at a time, on the same machine):

    nice -n 10 python -m segtrain.cli train --config configs/brats/unet3d_softmax.yaml
    nice -n 10 python -m segtrain.cli train --config configs/brats/unet3d_regions.yaml
    python benchmarks/brats_regions.py configs/brats/unet3d_softmax.yaml configs/brats/unet3d_regions.yaml

then this script evaluates each run's last.keras on the validation case as `segtrain evaluate` does
(Gaussian-blended windows of data.patch, background outside the brain mask) with the groups whole /
core / enhancing, and writes benchmarks/results/brats_regions.{json,md} with each run's training
time (the epochs' own seconds, from its state.json) and its steps.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from results_file import write_results

from segtrain.config import load_config
from segtrain.evaluation import evaluate

GROUPS = {"whole": [1, 2, 3, 4], "core": [1, 3, 4], "enhancing": [4]}


def score(config_path: str, split: str) -> dict:
    """One run's whole-volume scores and training facts."""
    config = load_config(config_path)
    run = Path(config.output_dir)
    state = json.loads((run / "checkpoints" / "state.json").read_text())
    started = time.perf_counter()
    metrics = evaluate(config, split, checkpoint=run / "checkpoints" / "last.keras", groups=GROUPS, verbose=False)
    return {"config": config_path, "head": config.model.head, "steps": state["step"],
            "train_seconds": round(sum(row["seconds"] for row in state["history"]), 1),
            "evaluate_seconds": round(time.perf_counter() - started, 1),
            "dice": {name: group["dice"] for name, group in metrics["groups"].items()},
            "per_class_dice": dict(zip(metrics["class_names"], metrics["per_class_dice"])),
            "last_val_patch_miou": state["history"][-1].get("val_miou")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="+", help="configs of finished runs")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--name", default="brats_regions", help="results file name under benchmarks/results/")
    args = parser.parse_args()
    rows = [score(path, args.split) for path in args.configs]
    table = ["| config | head | steps | training min | whole | core | enhancing |", "|---|---|---|---|---|---|---|"]
    table += [f"| `{r['config']}` | {r['head']} | {r['steps']} | {r['train_seconds'] / 60:.1f} | "
              f"{r['dice']['whole']:.3f} | {r['dice']['core']:.3f} | {r['dice']['enhancing']:.3f} |" for r in rows]
    notes = ["Whole-volume Dice on the validation case (`segtrain evaluate`: Gaussian-blended windows of data.patch, "
             "background outside data.mask). Training minutes are the epochs' own seconds from state.json "
             "(validation and checkpoint writing excluded); the machine is shared, so its load moves them."]
    write_results(args.name, {"runs": rows}, table, notes)


if __name__ == "__main__":
    main()
