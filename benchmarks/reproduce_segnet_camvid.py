"""Reproduce the SegNet paper's CamVid decoder comparison (TPAMI 2017, Table 1) with segtrain.

For each decoder (unpool, transposed, resize_conv, bilinear) this loads
``configs/camvid/segnet_basic_<decoder>.yaml`` (the paper's recipe), applies the budget's
overrides, trains with ``segtrain.training.train``, scores the *best* checkpoint with
``segtrain.evaluation.evaluate`` on the chosen split at the labels' native resolution, and
writes one markdown table next to the paper's rows. It holds no training logic: dataset
checks, class weights, seeds and the loop all come from segtrain.

    python benchmarks/reproduce_segnet_camvid.py --root ../shared/data/camvid --budget cpu \
        --out benchmarks/results/segnet_camvid_cpu.md

Budgets: ``full`` is the paper's recipe (360x480, batch 12, SGD 0.1/0.9, median-frequency
weights) for a GPU, in mixed_bfloat16; ``cpu`` is the same recipe at quarter resolution and
few epochs for 2 CPU cores; ``recipe`` trains the best CPU recipe
(configs/camvid/cpu_best_60min.yaml) once per ``--seeds`` value instead of the decoders;
``smoke`` is a few steps of a tiny model on the built-in sample dataset, for the test suite.
``--include TABLE.md`` adds the segtrain rows of earlier tables of this script (e.g. the
``cpu`` budget's) with their file named, so one table holds the paper's rows, the paper
recipe's CPU budget and the CPU recipe's seeds:

    python benchmarks/reproduce_segnet_camvid.py --root ../shared/data/camvid --budget recipe --seeds 0,1 \
        --include benchmarks/results/segnet_camvid_cpu.md --out benchmarks/results/segnet_camvid_recipe.md

The table is the script's output and is never edited by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from segtrain.config import Config, apply_overrides, from_dict, load_raw  # noqa: E402
from segtrain.errors import SegtrainError  # noqa: E402

DECODERS = ("unpool", "transposed", "resize_conv", "bilinear")
CONFIGS = REPO / "configs" / "camvid"
SAMPLE_BASE = REPO / "configs" / "_base_" / "datasets" / "sample.yaml"

# SegNet paper, Table 1 (CamVid test, 11 classes, 360x480, median-frequency balancing):
# global accuracy, class-average accuracy, mIoU in %. resize_conv has no paper row.
PAPER = {
    "unpool": ("SegNet-Basic (max-unpooling)", 82.7, 62.0, 47.7),
    "transposed": ("FCN-Basic (learned deconvolution)", 81.7, 62.4, 47.3),
    "bilinear": ("Bilinear upsampling (fixed)", 77.9, 61.1, 43.3),
}


@dataclass(frozen=True)
class Budget:
    """Overrides on top of the paper-recipe configs, and what the table says about them."""

    description: str
    overrides: list[str] = field(default_factory=list)
    sample_data: bool = False  # replace the data section by configs/_base_/datasets/sample.yaml
    config: str | None = None  # a config under configs/camvid trained once per seed instead of the decoders' configs


BUDGETS = {
    "full": Budget(
        "paper recipe: 360x480 whole frames, batch 12, SGD lr 0.1 momentum 0.9, median-frequency "
        "weights, hflip, 150 epochs (validation every 5), mixed_bfloat16 (a GPU of compute capability 8.0 or newer)",
        ["train.mixed_precision=mixed_bfloat16"],
    ),
    "cpu": Budget(
        "reduced recipe for 2 shared CPU cores: quarter resolution (data.resize 90x120) and 4 epochs "
        "(120 steps), otherwise the paper's recipe (width 64, batch 12, SGD lr 0.1 momentum 0.9, "
        "median-frequency weights, hflip), float32",
        ["data.resize=[90, 120]", "train.epochs=4", "train.val_every=1", "train.mixed_precision=none"],
    ),
    "recipe": Budget(
        "the best CPU recipe, configs/camvid/cpu_best_60min.yaml as it is (U-Net width 32, 128x160 crops of "
        "180x240 frames, CE + Dice, precise BN, poly over a 60-minute train.time_budget), one row per seed",
        config="cpu_best_60min",
    ),
    "smoke": Budget(
        "smoke test: built-in sample dataset resized to 32x32, width 8, 3 steps, batch 4",
        ["data.resize=[32, 32]", "data.crop=null", "data.scale=[1.0, 1.0]", "data.color_jitter=0.0",
         "model.width=8", "train.epochs=1", "train.steps=3", "train.batch_size=4", "train.val_every=1"],
        sample_data=True,
    ),
}


def build_config(decoder: str, budget: Budget, root: str, work_dir: Path, extra: list[str], seed: int | None = None) -> Config:
    """The decoder's paper config (or the budget's own config, with ``train.seed``) + budget overrides +
    data.root/output_dir (+ the user's --set)."""
    config_path = CONFIGS / (f"{budget.config}.yaml" if budget.config else f"segnet_basic_{decoder}.yaml")
    raw = load_raw(config_path)
    if budget.sample_data:
        raw["data"] = {**load_raw(SAMPLE_BASE)["data"], "sample": True}
    seeded = [] if seed is None else [f"train.seed={seed}"]
    overrides = [*budget.overrides, *seeded, f"data.root={root}", f"output_dir={work_dir / decoder}", *extra]
    return from_dict(apply_overrides(raw, overrides), source=str(config_path))


def check_data(config: Config, splits: list[str]) -> None:
    """segtrain's dataset scan on every split used; one problem stops the run before training."""
    from segtrain.data.check import check_dataset

    for split in splits:
        report = check_dataset(config, split)
        if not report.ok:
            raise SegtrainError(f"{config.data.root}: dataset check failed on split '{report.split}': "
                                f"{report.problems[0]} ({len(report.problems)} problem(s); run `segtrain check-dataset`)")
        print(f"dataset check: split '{report.split}' {report.num_ok} samples ok", flush=True)


def count_params(config: Config) -> int:
    from segtrain.models import build_model_from_config

    return int(build_model_from_config(config, (None, None, 3)).count_params())


def run_decoder(decoder: str, config: Config, split: str) -> dict:
    """Train one decoder, evaluate its best checkpoint; returns the row of the table."""
    from segtrain.evaluation import evaluate
    from segtrain.training import train

    started = time.perf_counter()
    summary = train(config)
    seconds = time.perf_counter() - started
    run_dir = Path(config.output_dir)
    best = run_dir / "checkpoints" / "best.keras"
    # evaluate() feeds images at data.resize (the training size) and scores native labels.
    metrics = evaluate(config, split, checkpoint=best, output_dir=run_dir / f"eval_{split}",
                       verbose=False)
    history = json.loads((run_dir / "checkpoints" / "state.json").read_text())["history"]
    timed = [r for r in history[1:] if "images_per_second" in r] or history  # the first epoch also compiles
    row = {"decoder": decoder, "global_acc": 100 * metrics["pixel_accuracy"],
           "class_avg_acc": 100 * metrics["mean_accuracy"], "miou": 100 * metrics["miou"],
           "params": count_params(config), "train_seconds": seconds, "best_epoch": summary["best_epoch"],
           "epochs": summary["epochs"], "steps": summary["steps"], "split": metrics["split"],
           "num_images": metrics["num_images"],
           "images_per_second": statistics.median(r.get("images_per_second", float("nan")) for r in timed),
           "data_wait": statistics.median(r.get("data_wait", float("nan")) for r in timed)}
    (run_dir / "reproduce_row.json").write_text(json.dumps(row, indent=2) + "\n", encoding="utf-8")
    print(f"{decoder}: global {row['global_acc']:.1f}  class-avg {row['class_avg_acc']:.1f}  "
          f"mIoU {row['miou']:.1f}  ({seconds / 60:.1f} min)", flush=True)
    return row


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def included_rows(path: Path) -> list[str]:
    """The segtrain rows of an earlier table of this script, each ending with the file it came from."""
    if not path.is_file():
        raise SegtrainError(f"--include {path}: no such file; name a table this script wrote (benchmarks/results/*.md)")
    found = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("| segtrain "):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rate = cells[6] if len(cells) == 8 else "n/a"  # tables from before the img/s column have 7 cells
            found.append(f"| {' | '.join(cells[:6])} | {rate} | {cells[-1]}, from `{_shown(path)}` |")
    if not found:
        raise SegtrainError(f"--include {path}: no '| segtrain ...' rows in it; name a table this script wrote")
    return found


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def render_table(rows: list[dict], budget_name: str, config: Config, split: str, command: str,
                 included: list[str] = ()) -> str:
    """The markdown report: setup lines, then our rows and the paper's rows in one table."""
    data, train = config.data, config.train
    resolution = f"{data.resize[0]}x{data.resize[1]}" if data.resize else "native (360x480 for CamVid)"
    length = (f"a {train.time_budget.minutes:g}-minute time budget" if train.time_budget
              else f"{train.steps} steps" if train.steps else f"{train.epochs} epochs")
    done = ", ".join(r["decoder"] for r in rows) or "none yet"
    lines = [
        f"# SegNet-Basic decoders on CamVid: segtrain ({budget_name} budget) vs the SegNet paper",
        "",
        f"- Budget `{budget_name}`: {BUDGETS[budget_name].description}.",
        f"- Training: {length} at {resolution}, batch {train.batch_size}, {train.optimizer.name} lr "
        f"{train.optimizer.learning_rate} momentum {train.optimizer.momentum}, schedule {train.schedule.name}, "
        f"class weights {train.class_weights}, seed {train.seed}, precision "
        f"{'float32' if train.mixed_precision == 'none' else train.mixed_precision}, model width {config.model.width}, "
        f"norm {config.model.norm}, precise BN over {train.precise_bn.batches} training batches before each validation.",
        f"- Checkpoint: the best validation mIoU (validated every {train.val_every} epoch(s) on split "
        f"'{data.val_split}' by evaluate's own path), then evaluated on split '{split}' at the labels' native "
        "resolution (images resized to the training size, probabilities resized back).",
        f"- Dataset: `{data.root}`; void (label {data.ignore_index}) ignored; global acc = pixel accuracy, "
        "class-avg acc = mean per-class recall, mIoU over the classes, all from one split-wide confusion matrix.",
        f"- Machine: {platform.machine()}, {os.cpu_count()} CPU(s) visible, Python {platform.python_version()}; "
        f"finished {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; decoders done: {done}.",
        f"- Command: `{command}`",
        "",
        "| decoder | global acc | class-avg acc | mIoU | params | training time | img/s (waiting for data) | budget / split |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| segtrain {r['decoder']} | {r['global_acc']:.1f} | {r['class_avg_acc']:.1f} | {r['miou']:.1f} | "
            f"{r['params']:,} | {_minutes(r['train_seconds'])} (best epoch {r['best_epoch']}/{r['epochs']}) | "
            f"{r['images_per_second']:.1f} ({100 * r['data_wait']:.0f}%) | {budget_name} / {r['split']} ({r['num_images']} images) |"
        )
    lines.extend(included)
    for decoder, (name, acc, mean_acc, miou) in PAPER.items():
        lines.append(f"| paper: {name} [{decoder}] | {acc:.1f} | {mean_acc:.1f} | {miou:.1f} | n/a | n/a | n/a | "
                     "paper recipe / CamVid test (233 images) |")
    lines.append("| paper: resize_conv | no paper row | | | | | | |")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="dataset root (CamVid as prepared for SegNet; "
                        "for --budget smoke the built-in sample dataset is generated there if missing)")
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="cpu")
    parser.add_argument("--decoders", default=",".join(DECODERS), help="comma-separated subset of " + ",".join(DECODERS))
    parser.add_argument("--split", default="val", help="split to evaluate the best checkpoints on (val, test, ...)")
    parser.add_argument("--epochs", type=int, default=None, help="override the budget's epoch count")
    parser.add_argument("--seeds", default="0", help="--budget recipe: comma-separated train.seed values, one row each")
    parser.add_argument("--include", nargs="+", type=Path, default=[], metavar="TABLE.md",
                        help="add the segtrain rows of earlier tables of this script (e.g. the cpu budget's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="extra config override applied last (repeatable); shown in the command line of the table")
    parser.add_argument("--out", default=None, help="markdown file for the table (default: <work-dir>/results.md)")
    parser.add_argument("--work-dir", default=None, help="run folders go here (default: runs/reproduce_segnet/<budget>)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    decoders = [d.strip() for d in args.decoders.split(",") if d.strip()]
    unknown = [d for d in decoders if d not in DECODERS]
    if unknown or not decoders:
        raise SegtrainError(f"--decoders {args.decoders!r}: choose from {', '.join(DECODERS)}")
    budget = BUDGETS[args.budget]
    work_dir = Path(args.work_dir or REPO / "runs" / "reproduce_segnet" / args.budget).resolve()
    out = Path(args.out).resolve() if args.out else work_dir / "results.md"
    extra = ([f"train.epochs={args.epochs}"] if args.epochs else []) + args.overrides
    root = str(Path(args.root).expanduser().resolve())
    command = "python benchmarks/reproduce_segnet_camvid.py " + shlex.join(argv)
    if budget.config:  # one row per seed of the budget's own config
        seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
        configs = {f"recipe seed {s}": build_config(f"seed{s}", budget, root, work_dir, extra, seed=s) for s in seeds}
    else:
        configs = {d: build_config(d, budget, root, work_dir, extra) for d in decoders}
    decoders = list(configs)
    first = configs[decoders[0]]
    included = [row for path in args.include for row in included_rows(path.resolve())]
    check_data(first, sorted({first.data.train_split, first.data.val_split, args.split}))
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for decoder in decoders:
        print(f"=== {decoder}: training in {configs[decoder].output_dir}", flush=True)
        rows.append(run_decoder(decoder, configs[decoder], args.split))
        out.write_text(render_table(rows, args.budget, first, args.split, command, included), encoding="utf-8")
    print(out.read_text(encoding="utf-8"))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SegtrainError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
