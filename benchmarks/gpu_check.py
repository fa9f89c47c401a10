"""GPU check of the model zoo: training throughput per decoder and precision, one run.

Runs on any Keras 3 backend. The lent GPU machines carry JAX but no TensorFlow (its wheel
is too large to bring), so this is how segtrain's models, loss and mixed precision were
checked on a GPU: ``KERAS_BACKEND=jax python benchmarks/gpu_check.py``. For every
decoder of SegNet-Basic at 360x480, batch 12 (the paper's recipe), it times compiled
training steps (SGD, masked cross-entropy with void pixels) in float32, mixed_bfloat16
and mixed_float16, and reports images/s, the ratio to float32, whether the loss stayed
finite, and how far mixed-precision logits are from float32 logits on the same weights.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from segtrain.losses import MaskedCrossEntropy  # noqa: E402
from segtrain.models import build_model  # noqa: E402

CASES = [("unpool", "subpixel"), ("resize_conv", "subpixel"), ("resize_conv", "naive"), ("transposed", None), ("bilinear", None)]


def with_resize_method(model: keras.Model, method: str | None) -> keras.Model:
    """A clone whose ResizeConv layers use ``method`` (same weights)."""
    if method is None:
        return model

    def clone(layer):
        config = layer.get_config()
        if "method" in config:
            config["method"] = method
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def time_steps(model, x, y, steps: int) -> tuple[float, float, float]:
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss=MaskedCrossEntropy(), jit_compile=True)
    t0 = time.perf_counter()
    loss = model.train_on_batch(x, y)  # compile + first step
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        loss = model.train_on_batch(x, y)  # returns a host float: the step has finished
        times.append(time.perf_counter() - t0)
    return statistics.median(times), compile_s, float(loss)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="360,480")
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--policies", default="float32,mixed_bfloat16,mixed_float16")
    args = parser.parse_args(argv)
    h, w = (int(v) for v in args.size.split(","))
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (args.batch, h, w, 3)).astype("float32")
    y = rng.integers(0, 11, (args.batch, h, w)).astype("int32")
    y[:, :4] = 255  # void rows
    print(f"backend={keras.backend.backend()} devices={keras.distribution.list_devices()}")
    print(f"SegNet-Basic width {args.width}, {h}x{w}, batch {args.batch}, {args.steps} timed steps (median)")
    print(f"{'decoder':<22}{'policy':<16}{'img/s':>8}{'vs fp32':>9}{'compile s':>11}{'loss':>9}{'max|dlogit|':>13}")
    for decoder, method in CASES:
        base = {}
        for policy in args.policies.split(","):
            keras.mixed_precision.set_global_policy(policy)
            keras.utils.set_random_seed(0)
            model = with_resize_method(build_model("segnet_basic", 11, (h, w, 3), decoder=decoder, width=args.width), method)
            logits = np.asarray(keras.ops.convert_to_numpy(model(x[:2], training=False)), dtype="float32")
            step, compile_s, loss = time_steps(model, x, y, args.steps)
            ips = args.batch / step
            if policy == "float32":
                base = {"fp32": ips, "logits": logits}  # same seed -> same initial weights
            diff = float(np.abs(logits - base["logits"]).max())
            name = decoder + (f" ({method})" if decoder == "resize_conv" else "")
            print(f"{name:<22}{policy:<16}{ips:>8.1f}{ips / base['fp32']:>9.2f}{compile_s:>11.1f}"
                  f"{loss:>9.3f}{diff:>13.2e}" + ("" if np.isfinite(loss) else "  NON-FINITE LOSS"), flush=True)
        keras.mixed_precision.set_global_policy("float32")


if __name__ == "__main__":
    main()
