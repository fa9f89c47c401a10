"""Does a ``train.time_budget`` run end on time here? Planned vs actual wall time of one real run.

Runs ``python train.py --config CONFIG --set train.time_budget.minutes=M`` as a user would, times
the whole process from outside (Python start and imports included, which the budget does not
cover: it starts when the trainer starts), reads the plan the run kept in checkpoints/state.json
and the trainer's own end-of-run line, and writes benchmarks/results/time_budget_<name>.{json,md}
with the load average before and after (these machines are shared: a load change mid-run moves
the step time the plan was made from).

    python benchmarks/time_budget_run.py --config configs/camvid/cpu_best_60min.yaml --minutes 10 \
        --set data.root=../shared/data/camvid
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_file import write_results  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--minutes", type=float, required=True)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--name", default=None, help="results name (default: time_budget_<config stem>_<M>min)")
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="time_budget_"))
    command = [sys.executable, "train.py", "--config", args.config, "--set", f"train.time_budget.minutes={args.minutes:g}",
               "--set", f"output_dir={out}", *(x for o in args.overrides for x in ("--set", o))]
    load_before = os.getloadavg()
    started = time.perf_counter()
    run = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    process_seconds = time.perf_counter() - started
    load_after = os.getloadavg()
    if run.returncode:
        sys.exit(f"error: {args.config}: the run failed (exit {run.returncode}):\n{run.stdout[-3000:]}{run.stderr[-3000:]}")
    plan = json.loads((out / "checkpoints" / "state.json").read_text())["time_budget"]
    history = json.loads((out / "checkpoints" / "state.json").read_text())["history"]
    trainer_seconds = float(re.search(r"train.time_budget: ended at (\d+) s", run.stdout).group(1))
    budget = args.minutes * 60
    figures = {"budget_seconds": budget, "plan": plan, "trainer_seconds": trainer_seconds,
               "process_seconds": round(process_seconds, 1), "trainer_vs_budget": round(trainer_seconds / budget, 4),
               "process_vs_budget": round(process_seconds / budget, 4), "load_before": load_before,
               "load_after": load_after, "epochs": [{k: r.get(k) for k in ("epoch", "step", "seconds", "val_miou")}
                                                    for r in history]}
    table = ["| budget | planned steps | planned end | trainer's wall time | process wall time (with imports) | val mIoU |",
             "|---|---|---|---|---|---|",
             f"| {budget:.0f} s | {plan['steps']} (at step {plan['planned_at_step']}; {plan['step_seconds']:.3f} s/step, "
             f"{plan['epoch_end_seconds']:.1f} s/epoch end, {plan['validation_seconds']:.1f} s/validation) | "
             f"{plan['planned_seconds']:.0f} s | {trainer_seconds:.0f} s ({100 * trainer_seconds / budget:.1f} %) | "
             f"{process_seconds:.0f} s ({100 * process_seconds / budget:.1f} %) | "
             f"{next((r['val_miou'] for r in reversed(history) if 'val_miou' in r), float('nan')):.3f} |"]
    notes = [f"Load average (1, 5, 15 min) before: {load_before}, after: {load_after} (shared machine).",
             "Trainer's wall time: from Trainer.fit's start to its end-of-run line (what the budget covers); "
             "process: python start to exit."]
    write_results(args.name or f"time_budget_{Path(args.config).stem}_{args.minutes:g}min", figures, table, notes)


if __name__ == "__main__":
    main()
