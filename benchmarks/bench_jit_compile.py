"""TensorFlow training step with and without XLA (``train.jit_compile``) on the CPU, interleaved.

``train.jit_compile`` is off by default because XLA was found slower on CPU; this script is
the measurement behind that default. One process builds segtrain's TensorFlow engine twice
(``TensorFlowEngine("none", jit_compile=False / True)``, the same step the trainer runs) over the
same SegNet-Basic (float32, BatchNorm) and the same random batch, times each step's first
call (tracing, and for XLA compiling), then alternates rounds of ``--steps`` timed steps so
the shared machine's load hits both alike, and prints the medians and the ratio.

    python benchmarks/bench_jit_compile.py [--rounds 3] [--steps 15] [--size 128] [--batch 4] [--width 16] [--decoder unpool]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["KERAS_BACKEND"] = "tensorflow"

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from results_file import write_results  # noqa: E402  (benchmarks/results_file.py)
from segtrain.engines.tensorflow_engine import TensorFlowEngine  # noqa: E402
from segtrain.losses import build_loss  # noqa: E402
from segtrain.models import build_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=15, help="timed steps per setting and round")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--decoder", default="unpool")
    parser.add_argument("--name", default="jit_compile_tensorflow", help="results file stem under benchmarks/results/")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    data = (tf.constant(rng.uniform(0, 255, (args.batch, args.size, args.size, 3)).astype("float32")),
            tf.constant(rng.integers(0, 11, (args.batch, args.size, args.size)).astype("uint8")))
    steps, first = {}, {}
    for jit in (False, True):
        keras.utils.set_random_seed(0)
        model = build_model("segnet_basic", 11, (None, None, 3), decoder=args.decoder, norm="batch", width=args.width)
        step = TensorFlowEngine("none", jit_compile=jit).make_train_step(
            model, keras.optimizers.SGD(0.01), build_loss([{"name": "ce"}], None, 255))
        start = time.perf_counter()
        step(data)
        first[jit] = time.perf_counter() - start
        step(data)  # a second warm-up call
        steps[jit] = step
    medians = {False: [], True: []}
    for round_ in range(args.rounds):
        for jit in (False, True):
            times = []
            for _ in range(args.steps):
                start = time.perf_counter()
                steps[jit](data)  # returns the loss as a float: the step has finished
                times.append(time.perf_counter() - start)
            medians[jit].append(statistics.median(times))
            print(f"round {round_ + 1} jit_compile={jit}: {1000 * medians[jit][-1]:.1f} ms/step", flush=True)
    plain, xla = statistics.median(medians[False]), statistics.median(medians[True])
    figures = {"args": vars(args), "median_step_seconds": {"plain": medians[False], "xla": medians[True]},
               "first_call_seconds": {"plain": first[False], "xla": first[True]},
               "plain_ms": 1000 * plain, "xla_ms": 1000 * xla, "xla_speed_vs_plain": plain / xla}
    print(figures)
    table = ["| step | ms/step (median of the rounds' medians) | rounds | first call (s) |", "|---|---|---|---|",
             f"| plain `tf.function` (default) | {1000 * plain:.1f} | {', '.join(f'{1000 * m:.1f}' for m in medians[False])} "
             f"| {first[False]:.1f} |",
             f"| `jit_compile: true` (XLA) | {1000 * xla:.1f} | {', '.join(f'{1000 * m:.1f}' for m in medians[True])} "
             f"| {first[True]:.1f} |",
             "", f"XLA speed vs plain: {plain / xla:.2f}x (above 1: XLA faster)."]
    notes = [f"segnet_basic `{args.decoder}`, width {args.width}, BatchNorm, {args.size}x{args.size}, batch {args.batch}, "
             f"float32, SGD, cross-entropy; {args.steps} timed steps per setting and round, {args.rounds} interleaved rounds, "
             "one process; the first call traces (and under XLA compiles) the step."]
    write_results(args.name, figures, table, notes)


if __name__ == "__main__":
    main()
