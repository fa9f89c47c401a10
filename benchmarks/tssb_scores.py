"""TSSB scored as the benchmark scores it: a checkpoint's segment covering and change-point F1 per
held-out series, next to the published covering of the benchmark's own methods on the same series.

Published figures: ermshaua/time-series-segmentation-benchmark, tssb/notebooks/
segmentation_covering_unknown.csv (commit 5668c44d0f9e83876674aa9ca70e5f31faa95f7a; the number
of segments not given to the methods, as it is not given to segtrain), the rows of the 15 series
in configs/tssb/val.txt. ClaSP: Ermshaus, Schäfer & Leser, "ClaSP: parameter-free time series
segmentation", Data Mining and Knowledge Discovery 2023. The benchmark's methods are
unsupervised, one series at a time; the segtrain model is trained on the other 60 series with
their change points, which is another task: the comparison says where a supervised 1-D
segmenter of segment indices stands on the benchmark's own score, nothing more.

    python benchmarks/tssb_scores.py --checkpoint RUN/checkpoints/best.keras [--config configs/tssb/segnet_basic_1d_cpu.yaml]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_file import write_results  # noqa: E402

from segtrain.config import load_config  # noqa: E402
from segtrain.evaluation import evaluate  # noqa: E402
from segtrain.series_scores import covering  # noqa: E402

METHODS = ("ESPRESSO", "BOCD", "Window", "PELT", "BinSeg", "FLOSS", "ClaSP")
# Published segment covering per series (see the module docstring for the source), in METHODS order.
PUBLISHED = {
    "BirdChicken": (0.459, 0.366, 0.500, 0.500, 0.500, 0.500, 0.500),
    "CinCECGTorso": (0.496, 0.551, 0.337, 0.337, 0.337, 0.337, 0.828),
    "CricketZ": (0.240, 0.201, 0.202, 0.740, 0.740, 0.202, 0.935),
    "DodgerLoopDay": (0.773, 0.254, 1.000, 1.000, 1.000, 1.000, 1.000),
    "FaceAll": (0.177, 0.266, 0.143, 0.760, 0.797, 0.394, 0.994),
    "FreezerRegularTrain": (0.299, 0.764, 0.260, 0.260, 0.260, 0.260, 0.916),
    "InlineSkate": (0.312, 0.376, 0.358, 0.358, 0.358, 0.358, 0.358),
    "Lightning7": (0.358, 0.446, 0.215, 0.377, 0.388, 0.215, 0.626),
    "MiddlePhalanxOutlineAgeGroup": (0.361, 0.387, 0.250, 0.250, 0.250, 0.250, 0.818),
    "NonInvasiveFetalECGThorax2": (0.177, 0.257, 0.145, 0.705, 0.419, 0.412, 0.990),
    "ProximalPhalanxOutlineCorrect": (0.408, 0.292, 0.292, 0.550, 0.550, 0.538, 0.739),
    "SonyAIBORobotSurface2": (0.690, 0.623, 0.517, 1.000, 1.000, 0.517, 0.979),
    "ToeSegmentation1": (0.458, 0.813, 0.500, 0.947, 0.947, 0.500, 1.000),
    "UWaveGestureLibraryAll": (0.219, 0.372, 0.201, 0.884, 0.887, 0.564, 0.992),
    "Yoga": (0.439, 0.589, 0.504, 0.504, 0.504, 0.504, 0.995),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--config", default="configs/tssb/segnet_basic_1d_cpu.yaml")
    parser.add_argument("--name", default="tssb_scores")
    args = parser.parse_args()
    config = load_config(args.config)
    metrics = evaluate(config, "val", checkpoint=args.checkpoint, verbose=False)
    cases = {c["name"]: c for c in metrics["per_case"]}
    missing = sorted(set(cases) - set(PUBLISHED))
    if missing:
        sys.exit(f"error: {args.config}: no published figures for series {', '.join(missing)}; use configs/tssb/val.txt")
    mean = {m: sum(PUBLISHED[n][i] for n in cases) / len(cases) for i, m in enumerate(METHODS)}
    # The floor any method should clear: no change point predicted (one segment over the whole series).
    unsplit = {n: covering(c["true_change_points"], [], c["steps"]) for n, c in cases.items()}
    table = ["| series | segtrain covering | segtrain F1 (1 %) | no change point | " + " | ".join(METHODS) + " |",
             "|---|---|---|---|" + "---|" * len(METHODS)]
    for name, case in cases.items():
        table.append(f"| {name} | {case['covering']:.3f} | {case['change_point_f1']:.3f} | {unsplit[name]:.3f} | "
                     + " | ".join(f"{v:.3f}" for v in PUBLISHED[name]) + " |")
    table.append(f"| **mean of {len(cases)}** | **{metrics['series']['covering']:.3f}** | "
                 f"**{metrics['series']['change_point_f1']:.3f}** | **{sum(unsplit.values()) / len(unsplit):.3f}** | "
                 + " | ".join(f"**{mean[m]:.3f}**" for m in METHODS) + " |")
    notes = [f"segtrain: {args.checkpoint} ({args.config}), whole series predicted by sliding windows; val mIoU "
             f"{metrics['miou']:.3f} on the same series.",
             "Published: covering of the benchmark's methods, number of segments unknown, from "
             "ermshaua/time-series-segmentation-benchmark tssb/notebooks/segmentation_covering_unknown.csv "
             "(commit 5668c44); no F1 per series is published there, so the F1 column has no comparison."]
    figures = {"segtrain": metrics["series"], "per_series": {n: {k: c[k] for k in ("covering", "change_point_f1",
               "true_change_points", "predicted_change_points", "steps")} for n, c in cases.items()},
               "no_change_point_covering": unsplit, "published_mean_covering": mean, "val_miou": metrics["miou"], "checkpoint": args.checkpoint}
    print("\n".join(table))
    write_results(args.name, figures, table, notes)


if __name__ == "__main__":
    main()
