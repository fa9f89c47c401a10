"""Resize-conv, naive (nearest-resize + conv at high resolution) vs sub-pixel (phase convs
at low resolution), in one process on the same inputs and weights.

1. One ``ResizeConv`` (64 -> 64, k = 7, 180x240 -> 360x480, batch 4): forward, and
   forward + backward (gradients w.r.t. input, kernel and bias).
2. A whole SegNet-Basic training step (``decoder="resize_conv"``, 360x480): forward,
   masked cross-entropy, backward and an SGD update.

Prints medians of wall-clock and process CPU time (the CPU time is less sensitive to other
jobs on a shared machine), the naive / sub-pixel ratios and the max abs output difference.
Each timed function is traced and run once before timing.

    python benchmarks/bench_resize_conv.py [--repeats 3] [--batch 4] [--model-batch 2]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

from segtrain.losses import MaskedCrossEntropy
from segtrain.models import build_model
from segtrain.models.upsampling import ResizeConv
from results_file import write_results  # benchmarks/results_file.py

METHODS = ("naive", "subpixel")


def timed(fn, args, repeats: int) -> tuple[float, float]:
    """Median (wall seconds, process CPU seconds) of ``fn(*args)`` after one warm-up."""

    def run():
        for t in tf.nest.flatten(fn(*args)):
            t.numpy()

    run()
    walls, cpus = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        run()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return float(np.median(walls)), float(np.median(cpus))


def layer_functions(layer: ResizeConv):
    @tf.function
    def forward(x):
        return layer(x)

    @tf.function
    def forward_backward(x, cot):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x) * cot)
        return tape.gradient(loss, [x, *layer.trainable_variables])

    return forward, forward_backward


def with_method(model: keras.Model, method: str) -> keras.Model:
    """A copy of ``model`` whose ResizeConv layers use ``method``, with the same weights."""

    def clone(layer):
        config = layer.get_config()
        if isinstance(layer, ResizeConv):
            config["method"] = method
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def train_step_function(model: keras.Model):
    loss_fn = MaskedCrossEntropy()
    optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    optimizer.build(model.trainable_variables)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return step


def report(title: str, rows: dict[str, dict[str, tuple[float, float]]], max_diff: float) -> list[str]:
    """Print the rows and return them as markdown table rows (for the results file)."""
    print(f"\n{title}   (max |naive - subpixel| output: {max_diff:.2e})")
    print(f"{'':<22}{'naive wall':>11}{'sub wall':>10}{'ratio':>8}{'naive cpu':>11}{'sub cpu':>9}{'ratio':>8}")
    table = []
    for what, by_method in rows.items():
        (nw, nc), (sw, sc) = by_method["naive"], by_method["subpixel"]
        print(f"{what:<22}{nw:>10.3f}s{sw:>9.3f}s{nw / sw:>7.2f}x{nc:>10.3f}s{sc:>8.3f}s{nc / sc:>7.2f}x")
        table.append(f"| {title}: {what} | {nw:.2f} s | {sw:.2f} s | {nw / sw:.2f}x | {nc:.2f} s | {sc:.2f} s "
                     f"| {nc / sc:.2f}x | {max_diff:.1e} |")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4, help="batch of the single-layer benchmark")
    parser.add_argument("--model-batch", type=int, default=2, help="batch of the SegNet-Basic step")
    parser.add_argument("--size", type=int, nargs=2, default=[360, 480], help="output (model input) size")
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--kernel", type=int, default=7)
    parser.add_argument("--classes", type=int, default=11)
    parser.add_argument("--skip-model", action="store_true")
    args = parser.parse_args()

    devices = [d.device_type for d in tf.config.list_physical_devices()]
    device = "GPU" if "GPU" in devices else f"CPU ({os.cpu_count()} cores)"
    print(f"device: {device}, TF {tf.__version__}, Keras {keras.__version__}, median of {args.repeats}")
    rng = np.random.default_rng(0)

    # 1. one layer
    h, w = args.size[0] // 2, args.size[1] // 2
    c = args.channels
    x = tf.constant(rng.standard_normal((args.batch, h, w, c)).astype("float32"))
    cot = tf.constant(rng.standard_normal((args.batch, 2 * h, 2 * w, c)).astype("float32"))
    layers = {m: ResizeConv(c, 2, args.kernel, method=m, bias_initializer="random_normal") for m in METHODS}
    layers["naive"](x[:1])
    layers["subpixel"](x[:1])
    layers["subpixel"].set_weights(layers["naive"].get_weights())
    rows: dict[str, dict[str, tuple[float, float]]] = {"forward": {}, "forward+backward": {}}
    outputs = {}
    for m in METHODS:
        fwd, fwd_bwd = layer_functions(layers[m])
        outputs[m] = fwd(x).numpy()
        rows["forward"][m] = timed(fwd, (x,), args.repeats)
        rows["forward+backward"][m] = timed(fwd_bwd, (x, cot), args.repeats)
    diff = float(np.abs(outputs["naive"] - outputs["subpixel"]).max())
    table = report(f"ResizeConv {c}->{c}, k={args.kernel}, {h}x{w} -> {2 * h}x{2 * w}, batch {args.batch}", rows, diff)
    figures = {"layer": {what: {m: {"wall_s": t[0], "cpu_s": t[1]} for m, t in r.items()} for what, r in rows.items()}}
    del outputs

    if not args.skip_model:
        table += model_step(args, rng, figures)
    write_results("resize_conv", figures, [
        "| what | naive wall | sub-pixel wall | ratio | naive CPU | sub-pixel CPU | ratio | max abs output diff |",
        "|---|---|---|---|---|---|---|---|", *table], [f"{device}, median of {args.repeats}."])


def model_step(args, rng, figures: dict) -> list[str]:
    """A whole SegNet-Basic (resize_conv) training step, naive vs sub-pixel; adds to ``figures``."""
    # 2. a whole SegNet-Basic training step
    base = build_model("segnet_basic", args.classes, (*args.size, 3), decoder="resize_conv")
    models = {m: with_method(base, m) for m in METHODS}
    images = tf.constant(rng.uniform(0, 255, (args.model_batch, *args.size, 3)).astype("float32"))
    labels = tf.constant(rng.integers(0, args.classes, (args.model_batch, *args.size)).astype("uint8"))
    logits = {m: models[m](images, training=False).numpy() for m in METHODS}
    diff = float(np.abs(logits["naive"] - logits["subpixel"]).max())
    rows = {"train step": {}}
    for m in METHODS:
        rows["train step"][m] = timed(train_step_function(models[m]), (images, labels), args.repeats)
    figures["train_step"] = {m: {"wall_s": t[0], "cpu_s": t[1]} for m, t in rows["train step"].items()}
    return report(f"SegNet-Basic (resize_conv) training step, {args.size[0]}x{args.size[1]}, batch {args.model_batch}",
                  rows, diff)


if __name__ == "__main__":
    main()
