"""How long the end of an epoch waits for tf.data: autotuning on (tf.data's default) vs off (segtrain's).

The trainer builds one tf.data pipeline per epoch, so each epoch ends by destroying an iterator.
With autotuning on, that waits for the tuning thread's current sleep, whose period doubles from
10 ms up to 20.48 s; an epoch whose data runs out between about 20.5 and 41 s after the pipeline
started then waits until about 41 s, with the machine idle. Here one CamVid training epoch (45
batches of 8 crops, segtrain's ``build_dataset`` as the trainer iterates it through
``BatchIterator``) is read with a simulated step between batches (a sleep, so the figures do not
depend on the model or the machine's load), for a few epoch lengths, with autotuning as
segtrain sets it and turned back on. Prints and records the wall time of each epoch and of its
last ``next()`` (the one that destroys the iterator), and the ratio of the totals.

    python benchmarks/bench_epoch_end.py [--root ../shared/data/camvid] [--epochs-seconds 10 25 28 35]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout without installing

from results_file import write_results  # noqa: E402
from segtrain.config import from_dict  # noqa: E402
from segtrain.data.loading.tf_batches import BatchIterator, build_dataset  # noqa: E402

BATCHES = 45


def one_epoch(dataset: tf.data.Dataset, step_seconds: float) -> tuple[float, float]:
    """(epoch seconds, seconds of its last next()) for BATCHES batches read as the trainer reads them."""
    started = time.perf_counter()
    batches = BatchIterator(tf.distribute.get_strategy().experimental_distribute_dataset(dataset.take(BATCHES)))
    while True:
        asked = time.perf_counter()
        batch = next(batches, None)
        if batch is None:
            ended = time.perf_counter()
            return ended - started, ended - asked
        time.sleep(step_seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid"))
    parser.add_argument("--epochs-seconds", nargs="+", type=float, default=[10.0, 25.0, 28.0, 35.0],
                        help="simulated epoch lengths (steps only)")
    args = parser.parse_args()
    data = {"format": "camvid", "root": args.root, "classes": "camvid", "num_classes": 11, "ignore_index": 11,
            "resize": [180, 240], "crop": [128, 160], "hflip": True}  # configs/camvid/cpu_best.yaml's crops
    config = from_dict({"data": data, "train": {"batch_size": 8, "seed": 0}})
    autotuned = tf.data.Options()
    autotuned.autotune.enabled = True
    rows, totals = [], {"segtrain (autotune off)": 0.0, "autotune on": 0.0}
    for seconds in args.epochs_seconds:
        for name in totals:
            dataset = build_dataset(config, "train", True, epoch=1)
            if name == "autotune on":
                dataset = dataset.with_options(autotuned)
            epoch, last = one_epoch(dataset, seconds / BATCHES)
            totals[name] += epoch
            rows.append({"steps_seconds": seconds, "pipeline": name, "epoch_seconds": epoch, "last_next_seconds": last})
            print(f"  steps {seconds:5.1f} s  {name:<24} epoch {epoch:6.2f} s, last next() {last:6.2f} s", flush=True)
    ratio = totals["autotune on"] / totals["segtrain (autotune off)"]
    print(f"  ratio of total epoch time, autotune on / off = {ratio:.2f}")
    write_results("epoch_end_camvid", {"args": vars(args), "rows": rows, "totals": totals, "ratio": ratio},
                  [f"CamVid train, {BATCHES} batches of 8 crops 128x160 per epoch, read through BatchIterator as the "
                   "trainer reads them; each step simulated by a sleep", "",
                   "| steps (s) | pipeline | epoch (s) | last next() (s) |", "|---|---|---|---|",
                   *(f"| {r['steps_seconds']:.1f} | {r['pipeline']} | {r['epoch_seconds']:.2f} | {r['last_next_seconds']:.2f} |"
                     for r in rows), "",
                   f"Ratio of total epoch time, autotune on / off: **{ratio:.2f}**"])


if __name__ == "__main__":
    main()
