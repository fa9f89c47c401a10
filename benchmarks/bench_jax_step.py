"""JAX training steps/s with the loss read one step late vs at once (issue 31.4), in one process.

The loop reads a step's loss after the next step is queued unless a callback has per-batch
hooks (``segtrain.training.Trainer._finish_step``); a no-op ``on_train_batch_end`` callback
therefore gives the old behaviour, a host sync after every step, on the same model and data.
Each round trains two epochs per mode, in turn; the figure is the second epoch's training
time (``seconds`` of the epoch's log row: the steps only, no validation, no compile).

    python benchmarks/bench_jax_step.py [--steps 40] [--size 64] [--batch 4] [--width 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ["KERAS_BACKEND"] = "jax"  # the JAX engine's step is what is measured
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import keras  # noqa: E402
import numpy as np  # noqa: E402

from results_file import write_results  # noqa: E402
from segtrain.config import from_dict  # noqa: E402
from segtrain.engines import engine_module  # noqa: E402
from segtrain.models import build_model  # noqa: E402
from segtrain.training import Trainer  # noqa: E402


def epoch_seconds(args, at_once: bool) -> float:
    """Training seconds of the second epoch; ``at_once``: a per-batch callback makes the loop read every loss at once."""
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (args.steps * args.batch, args.size, args.size, 3)).astype(np.float32)
    masks = rng.integers(0, 11, images.shape[:3]).astype(np.uint8)
    batches = [(images[i:i + args.batch], masks[i:i + args.batch]) for i in range(0, len(images), args.batch)]

    def dataset_fn(config, split, training, *, epoch=0, skip_batches=0):
        return batches[skip_batches:] if training else batches[:1]

    def model_fn(config, input_shape):
        keras.utils.set_random_seed(0)
        return build_model("segnet_basic", 11, input_shape, norm="batch", width=args.width)

    hooks = [keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: None)] if at_once else []
    with tempfile.TemporaryDirectory() as out:
        config = from_dict({"data": {"format": "folders", "root": out, "num_classes": 11, "classes": [str(i) for i in range(11)]},
                            "model": {"name": "segnet_basic"},
                            "train": {"epochs": 2, "batch_size": args.batch, "mixed_precision": "none",
                                      "optimizer": {"name": "sgd", "learning_rate": 0.01}},
                            "output_dir": out})
        trainer = Trainer(config, model_fn=model_fn, dataset_fn=dataset_fn, callbacks=hooks, verbose=0)
        trainer.fit()
        return trainer.store.load_state().history[-1]["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    times = {"late": [], "at_once": []}
    for round_ in range(args.rounds):  # in turn, so a burst of load on the shared machine hits both alike
        for mode in times:
            times[mode].append(epoch_seconds(args, at_once=mode == "at_once"))
            print(f"round {round_ + 1} {mode}: {args.steps / times[mode][-1]:.2f} steps/s", flush=True)
    rate = {mode: args.steps / statistics.median(t) for mode, t in times.items()}
    ratio = rate["late"] / rate["at_once"]
    print(f"steps/s: loss read one step late {rate['late']:.2f}, at once {rate['at_once']:.2f} -> {ratio:.3f}x")
    write_results("jax_step_queue", {"args": vars(args), "steps_per_second": rate, "ratio_late_over_at_once": ratio,
                                     "epoch_seconds": times, "threads": engine_module().thread_settings()},
                  ["| loss read | steps/s (median) |", "|---|---|",
                   f"| at once (a host sync per step, as before) | {rate['at_once']:.2f} |",
                   f"| one step late (next step queued) | {rate['late']:.2f} |", "",
                   f"Ratio late / at once: **{ratio:.3f}x** (segnet_basic width {args.width}, {args.size}x{args.size}, "
                   f"batch {args.batch}, {args.steps} steps an epoch, {args.rounds} rounds; JAX on CPU)"],
                  ["On CPU, XLA runs the step on the host's own threads, so the gain is only the Python work that "
                   "overlaps the queued step; on a GPU the whole host side of a step hides behind the device."])


if __name__ == "__main__":
    main()
