"""SegNet-Basic decoders compared: parameters, forward+backward time, checkerboard score.

Baseline is the paper's decoder (``unpool``); every other row prints its time ratio to
it. All decoders run in one process on the same inputs; times are medians over
``--repeats`` steps after one warm-up step (graph tracing). The checkerboard score is
that of one decoder stage (x2 upsampling + the stage's 7x7 conv, random init, constant
probe), see ``segtrain/models/checkerboard.py``.

    python benchmarks/bench_decoders.py [--size 360 480] [--batch 4] [--repeats 3] [--width 64]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # the figures are for CPU

import numpy as np
import tensorflow as tf

from segtrain.models import DECODERS, build_model
from segtrain.models.checkerboard import block_score
from results_file import write_results  # benchmarks/results_file.py


def step_seconds(model, images, labels, repeats: int) -> float:
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        return tape.gradient(loss, model.trainable_variables)

    step(images, labels)  # trace + warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        grads = step(images, labels)
        _ = [g.numpy() for g in grads[:1]]
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=2, default=[360, 480])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--classes", type=int, default=11)
    parser.add_argument("--trials", type=int, default=8, help="random inits for the checkerboard score")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(0, 255, (args.batch, *args.size, 3)).astype("float32"))
    labels = tf.constant(rng.integers(0, args.classes, (args.batch, *args.size)).astype("int32"))
    rows = []
    for decoder in DECODERS:
        model = build_model("segnet_basic", args.classes, (*args.size, 3), decoder=decoder, width=args.width)
        seconds = step_seconds(model, images, labels, args.repeats) / args.batch
        score = block_score(decoder, kernel_size=7, channels=16, size=32, trials=args.trials)
        rows.append((decoder, model.count_params(), seconds, score))
    base = rows[0][2]
    print(f"segnet_basic width {args.width}, {args.size[0]}x{args.size[1]}, batch {args.batch}, "
          f"CPU ({os.cpu_count()} cores), median of {args.repeats}")
    print(f"{'decoder':<13}{'params':>11}{'fwd+bwd s/img':>15}{'vs unpool':>11}{'checkerboard':>14}")
    for decoder, params, seconds, score in rows:
        print(f"{decoder:<13}{params:>11,}{seconds:>15.3f}{seconds / base:>10.2f}x{score:>14.2e}")
    write_results("decoders", {d: {"params": p, "fwd_bwd_s_per_image": t, "vs_unpool": t / base, "checkerboard": c}
                               for d, p, t, c in rows},
                  ["| decoder | parameters | fwd+bwd s/image | vs unpool | checkerboard score |", "|---|---|---|---|---|",
                   *[f"| `{d}` | {p:,} | {t:.2f} | {t / base:.2f}x | {c:.2g} |" for d, p, t, c in rows]],
                  [f"SegNet-Basic width {args.width}, {args.size[0]}x{args.size[1]}, batch {args.batch}, median of "
                   f"{args.repeats}; checkerboard score over {args.trials} random initialisations (x2, k=7 stage)."])


if __name__ == "__main__":
    main()
