"""Input starvation on the running Keras backend: the trainer fed by its data layer vs by batches in memory.

On JAX and PyTorch the data layer is the TensorFlow-free ``NumpyLoader`` (decoding and
augmenting on worker threads); on TensorFlow it is tf.data. Both loops are segtrain's
``Trainer`` with the same model, loss, optimizer and batch shape; one is fed by the real
pipeline on ../shared/data/camvid (decode PNGs, augment, batch), the other by in-memory NumPy
batches of the same shape; a third row uses ``data.decode_processes`` worker processes instead
of threads. The floor printed last: the data layer's CPU time per batch, timed alone, over the
CPU time a step has when it keeps every core busy. Step time = interval between consecutive ``on_train_batch_end``
calls, warm-up steps dropped, rounds interleaved; the ratio of medians is the starvation
ratio (target <= 1.05).

    KERAS_BACKEND=jax python benchmarks/bench_backends.py [--steps 30] [--size 256] [--batch 4] [--width 16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import keras  # noqa: E402
import numpy as np  # noqa: E402

from segtrain.config import from_dict  # noqa: E402
from segtrain.data.loading.batches import build_batches  # noqa: E402
from segtrain.models import build_model  # noqa: E402
from segtrain.training import Trainer  # noqa: E402
from results_file import write_results  # noqa: E402  (benchmarks/results_file.py)

WARMUP = 5
PROCESSES = "data_layer_processes"  # the data layer with data.decode_processes (--decode-processes)
CAMVID = Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid"


class StepClock(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.stamps: list[float] = []

    def on_train_batch_end(self, batch, logs=None):
        self.stamps.append(time.perf_counter())

    def median(self) -> float:
        return statistics.median(np.diff(self.stamps[WARMUP:]))


def make_config(args, out: str):
    return from_dict({
        "data": {"format": "camvid", "root": str(args.camvid), "classes": "camvid", "num_classes": 11,
                 "ignore_index": 11, "crop": [args.size, args.size], "hflip": True},
        "model": {"name": "segnet_basic", "width": args.width, "norm": "batch"},
        "train": {"epochs": 1, "batch_size": args.batch, "optimizer": {"name": "sgd", "learning_rate": 0.01},
                  "precise_bn": {"batches": 0}},
        "output_dir": out,
    })


def time_trainer(args, training_batches) -> float:
    """Median step time of ``Trainer`` fed ``training_batches(config, epoch, skip)``."""
    rng = np.random.default_rng(1)
    val = [(rng.uniform(0, 255, (1, 64, 64, 3)).astype(np.float32), np.zeros((1, 64, 64), np.uint8))]

    def dataset_fn(config, split, training, *, epoch=0, skip_batches=0):
        return training_batches(config, epoch, skip_batches) if training else val

    def model_fn(config, input_shape):
        keras.utils.set_random_seed(0)
        return build_model("segnet_basic", 11, input_shape, norm="batch", width=args.width)

    clock = StepClock()
    with tempfile.TemporaryDirectory() as out:
        Trainer(make_config(args, out), model_fn=model_fn, dataset_fn=dataset_fn, callbacks=[clock], verbose=0).fit()
    return clock.median()


def in_memory(args):
    rng = np.random.default_rng(0)
    batches = [(rng.uniform(0, 255, (args.batch, args.size, args.size, 3)).astype(np.float32),
                rng.integers(0, 11, (args.batch, args.size, args.size)).astype(np.uint8)) for _ in range(args.steps)]
    return lambda config, epoch, skip: batches[skip:]


class FirstBatches:
    """The first ``n`` batches of a data-layer object, with its length (the trainer sizes epochs by it)."""

    def __init__(self, batches, n: int):
        self.batches, self.n = batches, n

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        iterator = iter(self.batches)
        for _ in range(self.n):
            yield next(iterator)


def data_layer(args, processes: int = 0):
    def make(config, epoch, skip):
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, cache=False,
                                                                      num_parallel_calls=args.workers,
                                                                      decode_processes=processes))
        batches = build_batches(config, "train", True, epoch=epoch, skip_batches=skip)
        if hasattr(batches, "take"):  # tf.data
            return batches.take(args.steps)
        return FirstBatches(batches, args.steps - skip)
    return make


def data_cpu_per_batch(batches: Iterable) -> float:
    """CPU seconds (every thread of this process) spent per batch of ``batches``, iterated alone
    (for ``starvation_floor``)."""
    start, count = time.process_time(), 0
    for _ in batches:
        count += 1
    return (time.process_time() - start) / count


def starvation_floor(data_cpu: float, step: float) -> float:
    """The lowest starvation ratio this machine allows: a step of ``step`` seconds that keeps every core
    busy cannot hide the data layer's ``data_cpu`` seconds of CPU per batch."""
    return 1 + data_cpu / ((os.cpu_count() or 1) * step)


def step_arguments(description: str, rounds: int) -> argparse.ArgumentParser:
    """The options of every trainer step benchmark here (``bench_trainer.py`` too)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--camvid", type=Path, default=CAMVID)
    return parser


def interleaved_rounds(measurements: dict[str, Callable[[], float]], rounds: int) -> tuple[dict, dict]:
    """Median step time of each measurement over ``rounds`` rounds, each round running every measurement
    once, in order, so that drifting machine load hits all alike; prints each round and the medians.
    Returns (median per measurement, every round's time per measurement)."""
    times = {name: [] for name in measurements}
    for _ in range(rounds):
        for name, measure in measurements.items():
            times[name].append(measure())
        print("round:", ", ".join(f"{k} {1000 * v[-1]:.1f} ms" for k, v in times.items()), flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    width = max(map(len, times))
    for k, v in med.items():
        print(f"{k:{width}s} median step {1000 * v:8.1f} ms   (rounds: {', '.join(f'{1000 * t:.1f}' for t in times[k])})")
    return med, times


def main() -> None:
    parser = step_arguments(__doc__.splitlines()[0], rounds=3)
    parser.add_argument("--workers", type=int, default=0, help="data.num_parallel_calls (0: the default)")
    parser.add_argument("--decode-processes", type=int, default=os.cpu_count() or 1,
                        help="data.decode_processes of the third row (0: no third row)")
    args = parser.parse_args()
    print(f"backend {keras.backend.backend()}, SegNet-Basic width {args.width}, batch {args.batch} x "
          f"{args.size}x{args.size}, {args.steps} steps ({WARMUP} warm-up dropped), {args.rounds} rounds, "
          f"{os.cpu_count()} CPUs, Keras {keras.__version__}")
    measurements = {"memory": lambda: time_trainer(args, in_memory(args)),
                    "data_layer": lambda: time_trainer(args, data_layer(args))}
    if args.decode_processes:
        measurements[PROCESSES] = lambda: time_trainer(args, data_layer(args, args.decode_processes))
    med, times = interleaved_rounds(measurements, args.rounds)
    # neighbours in time share the machine's state: the median of each round's ratio
    paired = {k: [d / m for m, d in zip(times["memory"], times[k])] for k in times if k != "memory"}
    for k, ratios in paired.items():
        print(f"starvation  {k} / in-memory batches = {statistics.median(ratios):.3f} median of the rounds' ratios "
              f"({', '.join(f'{r:.3f}' for r in ratios)}); ratio of medians {med[k] / med['memory']:.3f}  (target <= 1.05)")
    # The floor: a training step that keeps every core busy cannot hide the data layer's CPU time.
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as out:
        data_cpu = data_cpu_per_batch(data_layer(args)(make_config(args, out), 0, 0))
    floor = starvation_floor(data_cpu, med["memory"])
    print(f"data layer alone: {1000 * data_cpu:.1f} ms CPU per batch; floor on {cores} busy cores 1 + "
          f"{1000 * data_cpu:.1f} / ({cores} x {1000 * med['memory']:.1f}) = {floor:.3f}")
    backend = keras.backend.backend()
    write_results(f"starvation_{backend}", {"args": {k: str(v) for k, v in vars(args).items()}, "backend": backend,
                                            "median_step_seconds": med, "rounds": times, "paired_ratios": paired,
                                            "median_paired_ratio": {k: statistics.median(r) for k, r in paired.items()},
                                            "data_cpu_seconds_per_batch": data_cpu, "starvation_floor": floor},
                  ["| fed by | median ms/step | rounds (ms) |", "|---|---|---|",
                   *[f"| {k} | {1000 * v:.1f} | {', '.join(f'{1000 * t:.1f}' for t in times[k])} |" for k, v in med.items()],
                   "", *(f"Starvation ({k} / in-memory, median of the rounds' ratios): **{statistics.median(r):.3f}** "
                         f"({', '.join(f'{x:.3f}' for x in r)})  " for k, r in paired.items()),
                   "", f"Floor: the data layer alone spends {1000 * data_cpu:.1f} ms of CPU per batch (decode, augment, "
                   f"collate, on its threads); a training step that keeps all {cores} cores busy cannot hide it, so "
                   f"starvation cannot go below 1 + {1000 * data_cpu:.1f} / ({cores} x {1000 * med['memory']:.1f}) = "
                   f"**{floor:.3f}** on this machine."],
                  [f"backend {backend}, SegNet-Basic width {args.width}, batch {args.batch} x {args.size}x{args.size}, "
                   f"{args.steps} steps ({WARMUP} warm-up dropped), {args.rounds} interleaved rounds."])

if __name__ == "__main__":
    main()
