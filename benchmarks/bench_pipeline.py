"""Training-pipeline throughput on CamVid vs raw decoding and a naive tutorial loader.

Measured in one process, each a few times (median reported):
  pipeline  segtrain build_dataset (the tf.data path, TensorFlow): decode (OpenCV for these PNGs) + albumentations
            (320x320 crop, flip) + collate in one numpy_function call per batch, data.num_parallel_calls
            batches at once (default one per core), + prefetch; one dataset for the run with
            repeat=True, as the trainer keeps it: built each round, its first epoch untimed (the
            start-up the trainer pays once per run), the second timed
  numpy     segtrain NumpyLoader (the JAX/PyTorch path): the same batches from a thread pool, one
            loader per epoch as the trainer builds them (start-up included)
  pipeline procs, numpy procs
            the same two with data.decode_processes = the CPU count (worker processes instead of
            threads); the pool's start-up is in the warm-up epoch, as it is paid once per run
  raw x1    Pillow decode of image + mask only, one core (the floor cost of reading the files)
  raw x2    the same on two worker processes
  raw x2 opencv
            the same with cv2.imread, the decoder segtrain uses for 8-bit RGB and grey PNGs
            (segtrain/data/formats/png_decode.py): the floor for the loaders on these files
  naive     the Keras-tutorial loader: Python generator, cv2.imread, per-class loop building one-hot masks
  pipeline per-sample
            the baseline of the tf.data path's design: one numpy_function call per sample (4 per
            core in flight), TensorFlow casting and batching, as segtrain did before (timed as the
            pipeline row is: its second epoch)
  pipeline per-epoch
            the pipeline row built for each epoch, as the trainer built it before it kept one for
            the run (start-up included: tracing, the iterator, the fill, a batch decoding alone at
            the end)
  pipeline calls=N, numpy calls=N
            with --parallel-calls N,...: the two loaders at data.num_parallel_calls N (tf.data: batches
            at once; NumpyLoader: threads)

All rows run round-robin, one epoch each per round, after one warm-up epoch of each loader, so a
burst of load on the machine hits all alike. Every row inflates PNGs with the same zlib: cv2 is
imported here before TensorFlow, so OpenCV's and Pillow's libpng bind the system's libz (in the
worker processes too); where TensorFlow loads first (train.py on TensorFlow) they bind the zlib
built into TensorFlow instead, which is faster on these files.

Target (issue 31): pipeline and numpy (or their procs rows) >= 0.95x raw x2 (Pillow, the bare
decode the issue names); the ratios to raw x2 opencv say how close they come to their own decoder.  Usage:
  python benchmarks/bench_pipeline.py [--root ../shared/data/camvid] [--images 367] [--repeats 5] [--parallel-calls 4,8]
"""

from __future__ import annotations

import argparse
import functools
import gc
import multiprocessing
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2
import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout without installing

from segtrain.config import from_dict
from segtrain.data.formats.splits import list_samples
from results_file import write_results

BATCH, CROP, NUM_CLASSES = 8, 320, 11


def raw_decode(pair: tuple[str, str]) -> int:
    image = np.asarray(Image.open(pair[0]).convert("RGB"))
    mask = np.asarray(Image.open(pair[1]))
    return image.shape[0] + mask.shape[0]


def raw_decode_opencv(pair: tuple[str, str]) -> int:
    image = cv2.cvtColor(cv2.imread(pair[0], cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB)
    mask = cv2.imread(pair[1], cv2.IMREAD_UNCHANGED)
    return image.shape[0] + mask.shape[0]


def time_raw(pairs, workers: int, decode=raw_decode) -> float:
    if workers == 1:
        start = time.perf_counter()
        for pair in pairs:
            decode(pair)
        return len(pairs) / (time.perf_counter() - start)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(decode, pairs[:workers]))  # start the workers outside the timing
        start = time.perf_counter()
        list(pool.map(decode, pairs, chunksize=4))
        return len(pairs) / (time.perf_counter() - start)


def naive_generator(pairs, batch_size: int):
    """What many Keras tutorials do: cv2 in a Python loop, one-hot masks built class by class."""
    while True:
        for i in range(0, len(pairs) - batch_size + 1, batch_size):
            images, labels = [], []
            for image_path, mask_path in pairs[i : i + batch_size]:
                image = cv2.resize(cv2.imread(image_path), (CROP, CROP)).astype(np.float32) / 255.0
                mask = cv2.resize(cv2.imread(mask_path)[:, :, 0], (CROP, CROP), interpolation=cv2.INTER_NEAREST)
                one_hot = np.zeros((CROP, CROP, NUM_CLASSES), dtype=np.float32)
                for c in range(NUM_CLASSES):
                    one_hot[:, :, c] = (mask == c).astype(np.float32)
                images.append(image)
                labels.append(one_hot)
            yield np.array(images), np.array(labels)


def time_naive(pairs) -> float:
    gen = naive_generator(pairs, BATCH)
    steps = len(pairs) // BATCH
    start = time.perf_counter()
    for _ in range(steps):
        next(gen)
    return steps * BATCH / (time.perf_counter() - start)


def per_sample_dataset(config, samples, epoch: int, calls: int, repeat: bool = False):
    """The tf.data pipeline as it was before decoding moved to one call per batch (the baseline
    for that change): one ``numpy_function`` call per sample, ``calls`` in flight, TensorFlow
    casting to float32 and batching."""
    import tensorflow as tf
    from segtrain.data.loading.plans import split_plan

    plan, batch_size = split_plan(config, "train", True, None, samples)
    used = (plan.total // batch_size) * batch_size

    def load(index, seed):
        image, mask = tf.numpy_function(plan.load, [index, seed], [tf.uint8, tf.uint8], stateful=False)
        image.set_shape([CROP, CROP, 3])
        mask.set_shape([CROP, CROP])
        return tf.cast(image, tf.float32), mask

    options = tf.data.Options()
    options.autotune.enabled = False
    ds = tf.data.Dataset.from_tensor_slices(plan.arrays(epoch, 0, used))
    if repeat:  # the same epoch again (the cost of decoding is the same)
        ds = ds.repeat()
    ds = ds.map(load, num_parallel_calls=calls, deterministic=True).batch(batch_size, drop_remainder=True)
    return ds.with_options(options).prefetch(2)


def time_pipeline(batches, steps: int) -> float:
    """Samples per second over ``steps`` batches of ``batches``."""
    start = time.perf_counter()
    count = 0
    for _ in range(steps):
        images, _ = next(batches)
        count += int(images.shape[0])
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid"))
    parser.add_argument("--images", type=int, default=367, help="first N training pairs (fewer keep the run short)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--parallel-calls", default="", help="comma-separated data.num_parallel_calls values: "
                        "one more tf.data row and NumpyLoader row each (the defaults' rows are always run)")
    args = parser.parse_args()

    data = {"format": "camvid", "root": args.root, "classes": "camvid", "num_classes": NUM_CLASSES,
            "ignore_index": 11, "crop": [CROP, CROP], "hflip": True}
    config = from_dict({"data": data, "train": {"batch_size": BATCH, "seed": 0}})
    processes = os.cpu_count() or 1
    procs_config = from_dict({"data": {**data, "decode_processes": processes}, "train": {"batch_size": BATCH, "seed": 0}})
    samples = list_samples(config.data, "train")[: args.images]
    pairs = [(str(s.image), str(s.mask)) for s in samples]

    from segtrain.data.loading.tf_batches import build_dataset, default_parallel_calls  # here, so spawned raw-decode workers skip TensorFlow
    from segtrain.data.loading.numpy_batches import NumpyLoader
    from segtrain.engines import thread_settings  # (TensorFlow's thread pools)

    steps = len(samples) // BATCH
    calls = [int(n) for n in args.parallel_calls.split(",") if n]
    call_configs = {n: from_dict({"data": {**data, "num_parallel_calls": n}, "train": {"batch_size": BATCH, "seed": 0}})
                    for n in calls}
    variants = {"": config, " procs": procs_config, **{f" calls={n}": cfg for n, cfg in call_configs.items()}}

    def second_epoch(batches):
        for _ in range(steps):  # the first epoch, with the start-up, is not timed
            next(batches)
        return batches

    def tf_data(cfg, epoch: int):
        return second_epoch(iter(build_dataset(cfg, "train", True, epoch=epoch, samples=samples, repeat=True)))

    def per_epoch(epoch: int):
        return iter(build_dataset(config, "train", True, epoch=epoch, samples=samples))

    def numpy_loader(cfg, epoch: int):
        return iter(NumpyLoader(cfg, "train", True, epoch=epoch, samples=samples))

    def per_sample(epoch: int):
        return second_epoch(iter(per_sample_dataset(config, samples, epoch, 4 * processes, repeat=True)))

    # Each loader row: epoch -> a fresh iterator over that epoch's batches.
    makers = {**{f"pipeline{suffix}": functools.partial(tf_data, cfg) for suffix, cfg in variants.items()},
              "pipeline per-epoch": per_epoch, "pipeline per-sample": per_sample,
              **{f"numpy{suffix}": functools.partial(numpy_loader, cfg) for suffix, cfg in variants.items()}}
    for make in makers.values():  # warm-up: TensorFlow start-up, tracing, thread pools, worker processes
        time_pipeline(make(0), steps)
        gc.collect()
    results = {name: [] for name in [*makers, "raw x1", "raw x2", "raw x2 opencv", "naive"]}
    for epoch in range(1, args.repeats + 1):  # round-robin, so a burst of load on the machine hits all alike
        for name, make in makers.items():  # one loader per epoch, as the trainer builds them (start-up included)
            results[name].append(time_pipeline(make(epoch), steps))
            gc.collect()  # a finished tf.data iterator is destroyed here, outside the timing
        results["raw x1"].append(time_raw(pairs, 1))
        results["raw x2"].append(time_raw(pairs, 2))
        results["raw x2 opencv"].append(time_raw(pairs, 2, raw_decode_opencv))
        results["naive"].append(time_naive(pairs))
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"CamVid train, first {len(pairs)} pairs (480x360), batch {BATCH}, crop {CROP}x{CROP}, "
          f"{os.cpu_count()} CPUs, median of {args.repeats}")
    for name, value in med.items():
        runs = ", ".join(f"{v:.1f}" for v in results[name])
        print(f"  {name:<20} {value:8.1f} samples/s   ({runs})")
    loaders = [name for name in med if name.startswith(("pipeline", "numpy"))]
    ratios = {f"{a} / {b}": med[a] / med[b] for a in loaders for b in ("raw x2", "raw x2 opencv", "raw x1", "naive")}
    ratios["pipeline / pipeline per-sample"] = med["pipeline"] / med["pipeline per-sample"]
    ratios["pipeline per-epoch / pipeline"] = med["pipeline per-epoch"] / med["pipeline"]
    for name, value in ratios.items():
        print(f"  ratio {name:<23} = {value:.2f}" + ("  (target >= 0.95)" if name.endswith("/ raw x2") else ""))
    write_results("pipeline_camvid", {"args": vars(args), "samples_per_second": results, "medians": med, "ratios": ratios,
                                      "threads": thread_settings(),
                                      "num_parallel_calls": default_parallel_calls(), "decode_processes": processes},
                  [f"CamVid train, first {len(pairs)} pairs, batch {BATCH}, crop {CROP}x{CROP}, median of {args.repeats}; "
                   f"tf.data num_parallel_calls {default_parallel_calls()}; procs: decode_processes {processes}", "",
                   "| loader | samples/s (median) | rounds |", "|---|---|---|",
                   *(f"| {k} | {v:.1f} | {', '.join(f'{x:.1f}' for x in results[k])} |" for k, v in med.items()), "",
                   *(f"Ratio {k}: **{v:.2f}**  " for k, v in ratios.items())])


if __name__ == "__main__":
    main()
