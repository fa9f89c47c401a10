"""Training-data throughput: the TensorFlow-free NumpyLoader vs the tf.data pipeline, on CamVid.

Both decode + augment (320x320 crop, flip) the first N CamVid training pairs into batches of
8 with the same per-sample code (data/loading/plans.py); they differ in what runs it: a Python
thread pool with bounded prefetch vs tf.data's parallel map + prefetch. Each round times one
epoch of each, from building it to its last batch, as the trainer builds one per epoch; the
rounds alternate the two in one process after one warm-up epoch each, so load on the
machine hits both alike. Prints samples/s (median of the rounds) and the ratio.

  python benchmarks/bench_loader.py [--root ../shared/data/camvid] [--images 160] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout without installing

from segtrain.config import from_dict  # noqa: E402
from segtrain.data.loading.numpy_batches import NumpyLoader  # noqa: E402
from segtrain.data.formats.splits import list_samples  # noqa: E402
from results_file import write_results  # noqa: E402

BATCH, CROP, NUM_CLASSES = 8, 320, 11


def time_epoch(make_batches) -> float:
    """Samples/s of one epoch, building the loader included."""
    start = time.perf_counter()
    count = sum(int(images.shape[0]) for images, _ in make_batches())
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid"))
    parser.add_argument("--images", type=int, default=160, help="first N training pairs (keeps the run short)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    data = {"format": "camvid", "root": args.root, "classes": "camvid", "num_classes": NUM_CLASSES,
            "ignore_index": 11, "crop": [CROP, CROP], "hflip": True}
    config = from_dict({"data": data, "train": {"batch_size": BATCH, "seed": 0}})
    samples = list_samples(config.data, "train")[: args.images]

    from segtrain.data.loading.tf_batches import build_dataset
    from segtrain.engines import thread_settings  # (TensorFlow's thread pools)

    loaders = {
        "numpy": lambda epoch: NumpyLoader(config, "train", True, epoch=epoch, samples=samples),
        "tf.data": lambda epoch: (
            (i.numpy(), m.numpy()) for i, m in build_dataset(config, "train", True, epoch=epoch, samples=samples)
        ),
    }
    for make in loaders.values():  # warm-up: TensorFlow start-up and tracing, thread pools, file cache
        time_epoch(lambda: make(0))
    results = {name: [] for name in loaders}
    for epoch in range(1, args.repeats + 1):
        for name, make in loaders.items():
            results[name].append(time_epoch(lambda: make(epoch)))
    med = {name: statistics.median(values) for name, values in results.items()}
    print(f"CamVid train, first {len(samples)} pairs (480x360), batch {BATCH}, crop {CROP}x{CROP} + hflip, "
          f"{os.cpu_count()} CPUs, one epoch per round, median of {args.repeats} interleaved rounds")
    for name, value in med.items():
        runs = ", ".join(f"{v:.1f}" for v in results[name])
        print(f"  {name:<8} {value:7.1f} samples/s   ({runs})")
    print(f"  ratio numpy / tf.data = {med['numpy'] / med['tf.data']:.2f}")
    write_results("loader_camvid", {"args": vars(args), "samples_per_second": results, "medians": med,
                                    "ratio_numpy_over_tf_data": med["numpy"] / med["tf.data"], "threads": thread_settings()},
                  [f"CamVid train, first {len(samples)} pairs, batch {BATCH}, crop {CROP}x{CROP} + hflip, "
                   f"median of {args.repeats} interleaved rounds", "", "| loader | samples/s (median) | rounds |", "|---|---|---|",
                   *(f"| {k} | {v:.1f} | {', '.join(f'{x:.1f}' for x in results[k])} |" for k, v in med.items()), "",
                   f"Ratio numpy / tf.data: **{med['numpy'] / med['tf.data']:.2f}**"])


if __name__ == "__main__":
    main()
