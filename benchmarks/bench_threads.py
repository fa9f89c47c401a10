"""TensorFlow training step time under thread and oneDNN settings, interleaved (issue 31.3).

Thread pools and oneDNN are fixed when TensorFlow starts, so each setting runs in its own
subprocess; the settings take turns round by round, so load on the shared machine hits all
alike. Each subprocess times ``--steps`` steps of ``segtrain``'s TensorFlow engine
(segnet_basic, float32) after ``--warmup`` steps and prints the median step time. The
default (``intra_op`` and ``inter_op`` = 0: one thread per core, oneDNN on) is the baseline;
a setting that is faster by more than the rounds' spread would become the default.

    python benchmarks/bench_threads.py [--rounds 3] [--steps 30] [--size 128] [--batch 4] [--width 16]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from results_file import write_results  # noqa: E402

SETTINGS = {  # name -> (environment, tf.config.threading calls)
    "default": ({}, {}),
    "inter_op 1": ({}, {"inter_op": 1}),
    "intra_op 1, inter_op 2": ({}, {"intra_op": 1, "inter_op": 2}),
    "oneDNN off": ({"TF_ENABLE_ONEDNN_OPTS": "0"}, {}),
}

STEP = """
import json, os, sys, time
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tensorflow as tf
threads, steps, warmup, size, batch, width = json.loads(sys.argv[1])
if "intra_op" in threads: tf.config.threading.set_intra_op_parallelism_threads(threads["intra_op"])
if "inter_op" in threads: tf.config.threading.set_inter_op_parallelism_threads(threads["inter_op"])
import keras, numpy as np
from segtrain.engines.tensorflow_engine import TensorFlowEngine, thread_settings
from segtrain.losses import build_loss
from segtrain.models import build_model
keras.utils.set_random_seed(0)
engine = TensorFlowEngine("none")
model = build_model("segnet_basic", 11, (None, None, 3), norm="batch", width=width)
optimizer = keras.optimizers.SGD(0.01)
step = engine.make_train_step(model, optimizer, build_loss([{"name": "ce"}], None, 255))
rng = np.random.default_rng(0)
data = (tf.constant(rng.uniform(0, 255, (batch, size, size, 3)).astype("float32")),
        tf.constant(rng.integers(0, 11, (batch, size, size)).astype("uint8")))
times = []
for i in range(warmup + steps):
    start = time.perf_counter(); step(data); times.append(time.perf_counter() - start)
print("RESULT" + json.dumps({"times": times[warmup:], "threads": thread_settings()}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--width", type=int, default=16)
    args = parser.parse_args()
    medians = {name: [] for name in SETTINGS}
    seen = {}
    for round_ in range(args.rounds):
        for name, (env, threads) in SETTINGS.items():
            argv = json.dumps([threads, args.steps, args.warmup, args.size, args.batch, args.width])
            done = subprocess.run([sys.executable, "-c", STEP, argv], env={**os.environ, "PYTHONPATH": str(REPO),
                                  "KERAS_BACKEND": "tensorflow", **env}, capture_output=True, text=True, check=True)
            result = json.loads(next(x for x in done.stdout.splitlines() if x.startswith("RESULT"))[6:])
            medians[name].append(statistics.median(result["times"]))
            seen[name] = result["threads"]
            print(f"round {round_ + 1} {name}: {1000 * medians[name][-1]:.1f} ms/step", flush=True)
    base = statistics.median(medians["default"])
    ratio = {name: base / statistics.median(m) for name, m in medians.items()}  # > 1: faster than the default
    for name in SETTINGS:
        print(f"{name}: {1000 * statistics.median(medians[name]):.1f} ms/step, speed vs default {ratio[name]:.3f}x")
    write_results("threads_tensorflow", {"args": vars(args), "median_step_seconds": medians, "speed_vs_default": ratio,
                                         "threads_seen": seen},
                  ["| setting | ms/step (median of rounds) | speed vs default |", "|---|---|---|",
                   *(f"| {name} | {1000 * statistics.median(medians[name]):.1f} | {ratio[name]:.3f}x |" for name in SETTINGS),
                   "", f"segnet_basic width {args.width}, {args.size}x{args.size}, batch {args.batch}, float32, "
                   f"{args.steps} timed steps a run, {args.rounds} rounds; each setting in its own process"])


if __name__ == "__main__":
    main()
