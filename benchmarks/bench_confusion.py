"""Confusion-matrix accumulation speed: segtrain vs sklearn vs keras.metrics.MeanIoU.

100 random CamVid-sized (360x480) uint8 label maps, 12 classes, ~5 % void (255) ground
truth; each tool accumulates one matrix over all 100 maps, void excluded. The whole pass is
repeated ``--repeats`` times; the median time is reported in megapixels per second, and
the three matrices are checked to agree. Tools run interleaved within each
repeat so that load from other processes affects them alike.

    python benchmarks/bench_confusion.py [--repeats 3]   (after `pip install -e .`, or with PYTHONPATH=.)
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from results_file import write_results  # benchmarks/results_file.py (sets up the segtrain import path)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

NUM_CLASSES, COUNT, HEIGHT, WIDTH = 12, 100, 360, 480


def make_labels(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    gt = rng.integers(0, NUM_CLASSES, (COUNT, HEIGHT, WIDTH), dtype=np.uint8)
    pred = np.where(rng.random(gt.shape) < 0.7, gt, rng.integers(0, NUM_CLASSES, gt.shape)).astype(np.uint8)
    gt[rng.random(gt.shape) < 0.05] = 255
    return gt, pred


def run_segtrain(gt, pred):
    from segtrain.metrics import ConfusionMatrix

    acc = ConfusionMatrix(NUM_CLASSES)
    for g, p in zip(gt, pred):
        acc.update(g, p)
    return acc.result()


def run_sklearn(gt, pred):
    from sklearn.metrics import confusion_matrix

    labels = np.arange(NUM_CLASSES)
    cm = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    for g, p in zip(gt, pred):
        cm += confusion_matrix(g.ravel(), p.ravel(), labels=labels)  # drops gt 255 (not in labels)
    return cm


def run_keras(gt, pred):
    import keras

    metric = keras.metrics.MeanIoU(num_classes=NUM_CLASSES, ignore_class=255)
    for g, p in zip(gt, pred):
        metric.update_state(g, p)
    return keras.ops.convert_to_numpy(metric.total_cm).astype(np.int64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    gt, pred = make_labels()
    megapixels = gt.size / 1e6
    tools = {"segtrain": run_segtrain, "sklearn": run_sklearn, "keras MeanIoU": run_keras}
    matrices = {name: fn(gt[:2], pred[:2]) for name, fn in tools.items()}  # warm-up (imports, tracing)
    times: dict[str, list[float]] = {name: [] for name in tools}
    for _ in range(args.repeats):  # interleaved, so load from other processes hits every tool alike
        for name, fn in tools.items():
            start = time.perf_counter()
            matrices[name] = fn(gt, pred)
            times[name].append(time.perf_counter() - start)
    results = {name: float(np.median(t)) for name, t in times.items()}
    reference = matrices["segtrain"]
    for name, cm in matrices.items():
        assert np.array_equal(cm, reference), f"{name} disagrees with segtrain"
    print(f"{COUNT} label maps {HEIGHT}x{WIDTH}, {NUM_CLASSES} classes, {megapixels:.1f} MP, median of {args.repeats}")
    print(f"{'tool':<15} {'median s':>9} {'MP/s':>9} {'segtrain speed-up':>18}")
    for name, seconds in results.items():
        print(f"{name:<15} {seconds:>9.3f} {megapixels / seconds:>9.1f} {seconds / results['segtrain']:>17.1f}x")
    mps = {name: megapixels / seconds for name, seconds in results.items()}
    speedup = {name: seconds / results["segtrain"] for name, seconds in results.items()}
    write_results("confusion", {"megapixels": megapixels, "median_s": results, "mp_per_s": mps,
                                "segtrain_speedup": speedup, "runs_s": times},
                  ["| tool | median s | MP/s | segtrain speed-up |", "|---|---|---|---|",
                   *[f"| {n} | {results[n]:.3f} | {mps[n]:.1f} | {speedup[n]:.1f}x |" for n in results]],
                  [f"{COUNT} label maps {HEIGHT}x{WIDTH}, {NUM_CLASSES} classes, median of {args.repeats} interleaved runs; "
                   "all three confusion matrices equal."])


if __name__ == "__main__":
    main()
