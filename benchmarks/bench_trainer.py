"""Trainer overhead and input starvation, project vs baseline in one process.

(a) overhead: median step time of segtrain's loop (``Trainer``) vs a plain Keras
    ``model.fit`` on the same model, loss, optimizer, batch, in-memory data and precision (what
    segtrain's ``mixed_precision: auto`` picks on this machine; before 2026-12-04, fit ran float32).
(b) starvation: median step time of the same ``Trainer`` fed by the real pipeline
    (``build_dataset`` on ../shared/data/camvid: decode PNGs, augment, batch) vs fed by
    in-memory tensors of the same shape; also with ``data.cache: true`` (decoded pairs kept
    in memory after their first read, warmed before timing; crop/flip still run per step), and
    the floor of (b) on this machine: the pipeline's own CPU time per batch, timed alone, over the
    CPU time of a step that keeps every core busy.

Step time = interval between consecutive ``on_train_batch_end`` calls (the same Keras
callback hook in both loops), first WARMUP steps dropped. Ratios <= 1.05 are the target.

    python benchmarks/bench_trainer.py [--steps 30] [--size 256] [--batch 4] [--width 16] [--rounds 2]
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from segtrain.config import from_dict  # noqa: E402
from segtrain.data.loading.tf_batches import build_dataset  # noqa: E402
from segtrain.losses import MaskedCrossEntropy  # noqa: E402
from segtrain.models import build_model  # noqa: E402
from segtrain.precision import resolve_policy  # noqa: E402
from segtrain.training import Trainer  # noqa: E402
from bench_backends import (WARMUP, StepClock, data_cpu_per_batch, interleaved_rounds, starvation_floor,  # noqa: E402
                            step_arguments)  # the same clock, options, rounds and floor
from results_file import write_results  # noqa: E402
from segtrain.engines import thread_settings  # noqa: E402


def make_config(args, out: str):
    return from_dict({
        "data": {"format": "camvid", "root": str(args.camvid), "classes": "camvid", "num_classes": 11,
                 "ignore_index": 11, "crop": [args.size, args.size], "hflip": True},
        "model": {"name": "segnet_basic", "width": args.width, "norm": "batch"},
        "train": {"epochs": 1, "batch_size": args.batch, "optimizer": {"name": "sgd", "learning_rate": 0.01}},
        "output_dir": out,
    })


def in_memory(args):
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (args.steps * args.batch, args.size, args.size, 3)).astype(np.float32)
    masks = rng.integers(0, 11, images.shape[:3]).astype(np.uint8)
    return images, masks


def model_fn(args):
    def build(config, input_shape):
        keras.utils.set_random_seed(0)
        return build_model("segnet_basic", 11, input_shape, norm="batch", width=args.width)
    return build


def segtrain_loop(args, train_ds_fn) -> float:
    """Median step time of ``Trainer`` with ``train_ds_fn(config, epoch, skip)`` as its training data."""
    images, masks = in_memory(args)
    val = tf.data.Dataset.from_tensor_slices((images[:1], masks[:1])).batch(1)

    def dataset_fn(config, split, training, *, epoch=0, skip_batches=0):
        return train_ds_fn(config, epoch, skip_batches) if training else val

    clock = StepClock()
    with tempfile.TemporaryDirectory() as out:
        Trainer(make_config(args, out), model_fn=model_fn(args), dataset_fn=dataset_fn, callbacks=[clock],
                verbose=0).fit()
    return clock.median()


def memory_ds(args):
    images, masks = in_memory(args)
    return lambda config, epoch, skip: tf.data.Dataset.from_tensor_slices((images, masks)).batch(
        args.batch, drop_remainder=True).skip(skip).prefetch(2)


def pipeline_ds(args, cache: bool = False):
    def make(config, epoch, skip):
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, cache=cache))
        return build_dataset(config, "train", True, epoch=epoch, skip_batches=skip).take(args.steps)
    return make


def warm_cache(args) -> None:
    """Decode the benchmark's samples once, as the first epoch of a ``data.cache`` run would."""
    with tempfile.TemporaryDirectory() as out:
        for _ in pipeline_ds(args, cache=True)(make_config(args, out), 0, 0):
            pass


def keras_fit(args, policy: str) -> float:
    """``model.fit`` at ``policy``, the precision segtrain's ``mixed_precision: auto`` picks on this
    machine, so that (a) compares the loops, not float32 against bf16."""
    images, masks = in_memory(args)
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = model_fn(args)(None, (None, None, 3))
        # jit_compile=False: Keras's default "auto" would XLA-compile, segtrain's default does not.
        model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss=MaskedCrossEntropy(), jit_compile=False)
        ds = tf.data.Dataset.from_tensor_slices((images, masks)).batch(args.batch, drop_remainder=True).prefetch(2)
        clock = StepClock()
        model.fit(ds, epochs=1, verbose=0, callbacks=[clock])
        return clock.median()
    finally:
        keras.mixed_precision.set_global_policy(previous)


def main() -> None:
    args = step_arguments(__doc__.splitlines()[0], rounds=2).parse_args()
    policy = resolve_policy("auto")[0]  # what the Trainer picks too
    print(f"SegNet-Basic width {args.width}, batch {args.batch} x {args.size}x{args.size}, "
          f"{args.steps} steps ({WARMUP} warm-up dropped), {args.rounds} rounds, "
          f"{os.cpu_count()} CPUs, TF {tf.__version__}, Keras {keras.__version__}; precision (both loops): {policy}")
    warm_cache(args)
    med, times = interleaved_rounds({
        "keras_fit": lambda: keras_fit(args, policy),
        "segtrain_memory": lambda: segtrain_loop(args, memory_ds(args)),
        "segtrain_pipeline": lambda: segtrain_loop(args, pipeline_ds(args)),
        "segtrain_pipeline_cached": lambda: segtrain_loop(args, pipeline_ds(args, cache=True)),
    }, args.rounds)
    print(f"(a) overhead   segtrain loop / keras fit          = {med['segtrain_memory'] / med['keras_fit']:.3f}  (target <= 1.05)")
    print(f"(b) starvation camvid pipeline / in-memory tensors = {med['segtrain_pipeline'] / med['segtrain_memory']:.3f}  (target <= 1.05)")
    print(f"    with data.cache (decoded pairs in memory, augmentation still per step) "
          f"= {med['segtrain_pipeline_cached'] / med['segtrain_memory']:.3f}")
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as out:
        data_cpu = data_cpu_per_batch(pipeline_ds(args)(make_config(args, out), 0, 0))
    floor = starvation_floor(data_cpu, med["segtrain_memory"])
    floor_text = (f"Floor of the starvation without the cache: the pipeline alone spends {1000 * data_cpu:.1f} ms of CPU "
                  f"per batch, which a step that keeps all {cores} cores busy cannot hide, so it cannot go below "
                  f"1 + {1000 * data_cpu:.1f} / ({cores} x {1000 * med['segtrain_memory']:.1f}) = **{floor:.3f}** on this machine.")
    print(floor_text)
    ratios = {"overhead segtrain / keras fit": med["segtrain_memory"] / med["keras_fit"],
              "starvation pipeline / in-memory": med["segtrain_pipeline"] / med["segtrain_memory"],
              "starvation cached pipeline / in-memory": med["segtrain_pipeline_cached"] / med["segtrain_memory"]}
    write_results("trainer_overhead", {"args": vars(args), "precision": policy, "median_step_seconds": med, "rounds": times, "ratios": ratios,
                                       "threads": thread_settings(), "data_cpu_seconds_per_batch": data_cpu,
                                       "starvation_floor": floor},
                  [f"SegNet-Basic width {args.width}, batch {args.batch} x {args.size}x{args.size}, {args.steps} steps "
                   f"({WARMUP} warm-up dropped), {args.rounds} interleaved rounds; precision of both loops "
                   f"(segtrain's mixed_precision: auto here): {policy}", "", "| loop | ms/step (median) |", "|---|---|",
                   *(f"| {k} | {1000 * v:.1f} |" for k, v in med.items()), "",
                   *(f"Ratio {k}: **{v:.3f}** (target <= 1.05)  " for k, v in ratios.items()),
                   "", floor_text])


if __name__ == "__main__":
    main()
