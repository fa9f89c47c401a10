"""float32 vs the ``auto`` dtype policy on the SegNet-Basic training step, one process, a ratio.

The step is the trainer's: forward in training mode, masked float32 cross-entropy,
gradients, SGD with momentum (loss-scaled under mixed_float16), as one ``tf.function``.
Each (decoder, policy) pair gets its own model and optimizer; rounds are interleaved
(every pair runs ``--steps`` steps per round, in turn) so a change in machine load hits
all pairs alike. Prints each pair's median seconds per step over the rounds, images/s,
and the policy's speed-up over float32 per decoder.

    python benchmarks/bench_precision.py [--policy auto|mixed_bfloat16|mixed_float16]
        [--size 96 128] [--batch 12] [--rounds 5] [--steps 3] [--decoders unpool resize_conv]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

from results_file import write_results
from segtrain.config import OptimizerConfig, TrainConfig
from segtrain.engines import thread_settings
from segtrain.losses import masked_cross_entropy_terms
from segtrain.models import build_model
from segtrain.precision import resolve_policy
from segtrain.training import build_optimizer


def make_step(decoder: str, policy: str, size: tuple[int, int], classes: int, width: int):
    """A compiled training step of a fresh SegNet-Basic built under ``policy``."""
    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(0)
    model = build_model("segnet_basic", classes, (*size, 3), decoder=decoder, width=width)
    train = TrainConfig(optimizer=OptimizerConfig(name="sgd", learning_rate=0.01, momentum=0.9))
    optimizer = build_optimizer(train, 0.01)
    optimizer.build(model.trainable_variables)

    @tf.function
    def step(images, masks):
        with tf.GradientTape() as tape:
            total, count = masked_cross_entropy_terms(masks, model(images, training=True))
            loss = total / tf.maximum(count, 1.0)
            scaled = optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="auto", help="the policy compared with float32 (default: auto)")
    parser.add_argument("--size", type=int, nargs=2, default=[96, 128])
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per pair per round")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--classes", type=int, default=12)
    parser.add_argument("--decoders", nargs="+", default=["unpool", "resize_conv"])
    args = parser.parse_args()

    policy, why = resolve_policy(args.policy)
    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(0, 255, (args.batch, *args.size, 3)).astype("float32"))
    masks = tf.constant(rng.integers(0, args.classes, (args.batch, *args.size)).astype("uint8"))
    pairs = [(d, p) for d in args.decoders for p in ("float32", policy)]
    previous = keras.mixed_precision.global_policy()
    try:
        steps = {pair: make_step(*pair, tuple(args.size), args.classes, args.width) for pair in pairs}
    finally:
        keras.mixed_precision.set_global_policy(previous)
    for step in steps.values():  # trace and warm up
        float(step(images, masks))
    times: dict = {pair: [] for pair in pairs}
    for _ in range(args.rounds):
        for pair in pairs:
            start = time.perf_counter()
            for _ in range(args.steps):
                loss = steps[pair](images, masks)
            float(loss)
            times[pair].append((time.perf_counter() - start) / args.steps)

    device = "GPU" if tf.config.list_physical_devices("GPU") else f"CPU ({os.cpu_count()} cores)"
    print(f"segnet_basic width {args.width}, {args.size[0]}x{args.size[1]}, batch {args.batch}, {device}; "
          f"policy {args.policy} -> {policy} ({why}); median of {args.rounds} interleaved rounds x {args.steps} steps")
    print(f"{'decoder':<13}{'policy':<16}{'s/step':>9}{'img/s':>9}{'vs float32':>12}")
    rows, figures = [], {}
    for decoder in args.decoders:
        base = float(np.median(times[(decoder, "float32")]))
        for p in dict.fromkeys(("float32", policy)):
            seconds = float(np.median(times[(decoder, p)]))
            print(f"{decoder:<13}{p:<16}{seconds:>9.3f}{args.batch / seconds:>9.2f}{base / seconds:>11.2f}x")
            rows.append(f"| {decoder} | {p} | {seconds:.3f} | {args.batch / seconds:.2f} | {base / seconds:.2f}x |")
            figures[f"{decoder} {p}"] = {"seconds_per_step": seconds, "rounds": times[(decoder, p)], "vs_float32": base / seconds}
    write_results("precision_segnet", {"args": vars(args), "policy": policy, "why": why, "device": device,
                                       "steps": figures, "threads": thread_settings()},
                  [f"segnet_basic width {args.width}, {args.size[0]}x{args.size[1]}, batch {args.batch}, {device}; policy "
                   f"{args.policy} -> {policy} ({why}); median of {args.rounds} interleaved rounds x {args.steps} steps", "",
                   "| decoder | policy | s/step | img/s | vs float32 |", "|---|---|---|---|---|", *rows])


if __name__ == "__main__":
    main()
