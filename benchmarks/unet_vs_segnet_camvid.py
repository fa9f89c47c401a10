"""U-Net vs SegNet-Basic on CamVid at a small CPU budget: one table, one run per model.

The SegNet-Basic CamVid paper-recipe config with overrides, the same for every row: 96x128
frames, width 32, 400 steps of batch 8, SGD 0.1 / 0.9, median-frequency weights, seed 0, from
scratch, float32; each best checkpoint evaluated on CamVid val at the labels' native size.

    python benchmarks/unet_vs_segnet_camvid.py [--root ../shared/data/camvid] [--rows unet_transposed ...] [--name STEM]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from results_file import write_results  # benchmarks/results_file.py (sets up the segtrain import path)

from segtrain.config import load_config
from segtrain.evaluation import evaluate
from segtrain.models import build_model_from_config
from segtrain.training import train

REPO = Path(__file__).resolve().parents[1]
COMMON = ["data.resize=[96,128]", "model.width=32", "train.steps=400", "train.batch_size=8", "train.seed=0",
          "train.mixed_precision=none"]
ROWS = {
    "segnet_basic_unpool": [],
    "unet_resize_conv": ["model.name=unet", "model.decoder=resize_conv"],
    "unet_transposed": ["model.name=unet", "model.decoder=transposed"],
    "unet_bilinear": ["model.name=unet", "model.decoder=bilinear"],
    # train.ema at the same budget (issue 26): the averaged weights are validated, saved and evaluated
    "unet_transposed_ema": ["model.name=unet", "model.decoder=transposed", "train.ema={momentum: 0.99}"],
}


def run(name: str, root: str, work: Path) -> dict:
    overrides = [f"data.root={root}", f"output_dir={work / name}", *COMMON, *ROWS[name]]
    config = load_config(REPO / "configs/camvid/segnet_basic_unpool.yaml", overrides)
    started = time.perf_counter()
    train(config)
    seconds = time.perf_counter() - started
    metrics = evaluate(config, "val", checkpoint=work / name / "checkpoints" / "best.keras", verbose=False)
    params = int(build_model_from_config(config, (None, None, 3)).count_params())
    return {"overrides": ROWS[name], "params": params, "val_miou": metrics["miou"],
            "pixel_accuracy": metrics["pixel_accuracy"], "wall_s": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(REPO.parent / "shared" / "data" / "camvid"))
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--name", default="unet_vs_segnet_camvid", help="results file stem under benchmarks/results/")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        figures = {name: run(name, args.root, Path(tmp)) for name in args.rows}
    write_results(args.name, {"common_overrides": COMMON, "rows": figures}, [
        "| model | overrides | parameters | val mIoU | pixel acc | wall s |", "|---|---|---|---|---|---|",
        *[f"| {n} | {' '.join(r['overrides']) or '(config as is)'} | {r['params']:,} | {r['val_miou']:.3f} | "
          f"{r['pixel_accuracy']:.3f} | {r['wall_s']:.0f} |" for n, r in figures.items()]],
        ["Overrides common to every row: " + " ".join(COMMON) + ". Wall times on a shared machine are not a speed "
         "comparison (benchmarks/bench_decoders.py is)."])


if __name__ == "__main__":
    main()
