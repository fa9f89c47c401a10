"""tf.data pipeline: (index, seed) stream -> batches of them -> parallel decode + augment + collate -> prefetch.

What flows through TensorFlow before decoding is only a sample index and a seed, so the
dataset is streamed from disk and never held in memory (unless ``data.cache`` asks to keep
the decoded pairs, for datasets that fit in RAM: decoding is then paid once, not per epoch). Decoding and augmentation run in
Python (Pillow decodes palette PNGs correctly, albumentations augments) through
``tf.numpy_function``, one call per batch, ``num_parallel_calls`` batches at once; Pillow and
OpenCV release the GIL while they work, so several samples decode at once, and
``deterministic=True`` keeps the order. With ``data.decode_processes``, each call hands its
batch's samples to the worker processes (``worker_pool.py``) and waits with the GIL released.

Exact resume: the order and the per-sample seeds come from ``plans.py`` and ``seeds.py`` (NumPy, shared
with the TensorFlow-free ``numpy_batches.py``): in training, epoch ``e`` is a permutation seeded by
``(train.seed, e)`` and the sample at position ``p`` is augmented with a seed from
``(train.seed, e, p)``, so ``skip_batches=k`` (which skips whole batches before anything is
decoded) gives exactly the tail of the full epoch.
The last incomplete training batch is dropped, so every training batch has the same size.

Output: ``(image float32 [B, H, W, C] in 0..255 (C = data.channels, 3 by default), mask uint8 [B, H, W])``; 255 = void.
Volumes and signals (``data.format: nifti``/``series``): ``(image float32 [B, *data.patch, C]``
z-scored, ``label uint8 [B, *data.patch])``, patches drawn as ``patch_plans.py`` describes;
``plans.sample_plan`` says which sample sits at each position for every format.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Iterable, Iterator

import numpy as np
import tensorflow as tf

from segtrain.config import Config
from segtrain.data.formats import Sample, input_channels
from segtrain.data.formats.splits import list_samples
from segtrain.data.loading.plans import PREFETCH_BATCHES, collate, sample_plan, split_plan
from segtrain.data.loading.worker_pool import ProcessLoader
from segtrain.errors import SegtrainError

_ERROR_TAG = "SegtrainError: "


class _BatchLoader:
    """One batch for ``tf.numpy_function``: its samples decoded one after another on this call's
    thread (several calls run at once), or all handed to the worker processes at once, then
    collated; a ``SegtrainError`` travels as a tagged ValueError."""

    def __init__(self, load, processes: ProcessLoader | None, fixed_shape: bool):
        self.load, self.processes, self.fixed_shape = load, processes, fixed_shape

    def __call__(self, indices: np.ndarray, seeds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        try:
            if self.processes is None:
                pairs = [self.load(i, s) for i, s in zip(indices, seeds)]
            else:
                futures = [self.processes.submit(i, s) for i, s in zip(indices, seeds)]
                pairs = [self.processes.result(f) for f in futures]
            return collate(pairs, self.fixed_shape)
        except SegtrainError as err:
            raise ValueError(_ERROR_TAG + str(err)) from None  # tf keeps the message; see data_error()


def data_error(err: BaseException) -> SegtrainError | None:
    """The ``SegtrainError`` raised while decoding inside tf.data, recovered from TensorFlow's wrapper."""
    text = str(getattr(err, "message", err))
    if _ERROR_TAG not in text:
        return None
    return SegtrainError(text.split(_ERROR_TAG, 1)[1].splitlines()[0])


class BatchIterator:
    """Iterates a tf.data (or distributed) dataset and destroys its iterator the moment it stops.

    A tf.data iterator still alive at interpreter shutdown, with parallel map workers inside
    ``tf.numpy_function``, hangs the process (the workers wait for the GIL, the iterator's
    destructor waits for them) or aborts it (``terminate called without an active
    exception``). An exception raised by ``next()`` carries TensorFlow frames that reference
    the iterator, so after a bad data file the iterator used to live until shutdown. Here the
    iterator is deleted while the process runs (its destructor releases the GIL, so the
    workers finish), the frames of a TensorFlow error are cleared, and a data error
    surfaces as its ``SegtrainError``. Use it as a context manager so that an error in the
    loop body closes it too::

        with BatchIterator(dataset) as batches:
            for batch in batches:
                ...
    """

    def __init__(self, dataset: Iterable):
        self._iterator: Iterator | None = iter(dataset)

    def __enter__(self) -> "BatchIterator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __iter__(self) -> "BatchIterator":
        return self

    def __next__(self):
        if self._iterator is None:
            raise StopIteration
        try:
            return next(self._iterator)
        except StopIteration:
            self.close()
            raise
        except tf.errors.OpError as err:
            traceback.clear_frames(err.__traceback__)
            user = data_error(err)
            self.close()
            if user is None:
                raise
        raise user from None  # outside the except block: no reference to TensorFlow's error is kept

    def close(self) -> None:
        """Destroy the iterator now (waits for its in-flight map workers)."""
        self._iterator = None


def _index_stream(arrays, total: int, batch_size: int, training: bool, epoch: int, skip_batches: int, repeat: bool):
    """(index, seed) pairs; ``arrays(epoch, start, stop)`` gives those of positions start..stop-1."""
    start = skip_batches * batch_size
    if not training:
        stream = tf.data.Dataset.from_tensor_slices(arrays(epoch, 0, total))
        if repeat:
            stream = stream.repeat()
        return stream.skip(start)
    used = (total // batch_size) * batch_size  # drop the incomplete last batch before decoding it
    stream = tf.data.Dataset.from_tensor_slices(arrays(epoch, min(start, used), used))
    if repeat:

        def one_epoch(e):
            idx, seeds = tf.numpy_function(lambda e: arrays(int(e), 0, used), [e], [tf.int64, tf.int64], stateful=False)
            return tf.data.Dataset.from_tensor_slices((idx, seeds))

        stream = stream.concatenate(tf.data.Dataset.range(epoch + 1, 2**62).flat_map(one_epoch))
    return stream


def default_parallel_calls() -> int:
    """Batches decoded at once when ``data.num_parallel_calls`` is 0: one per core.

    A call decodes its batch's samples one after another; OpenCV decodes these PNGs with the GIL
    released, and what holds it in between (the mask check, albumentations, the collate) is
    small, so one call per core keeps the cores busy; more calls did not help (4 on 2 cores: the
    same speed; 8: slower, from GIL hand-offs).
    Measured on CamVid 320x320 crops, batch 8, 2 cores (``benchmarks/bench_pipeline.py
    --parallel-calls``): see docs/data.md, "Benchmark".

    Calls do not share decode threads: a tf.data iterator destroyed by the garbage collector
    waits for its calls in flight on whatever thread collected it, so a lock or worker that
    its calls and a newer pipeline's calls shared could deadlock (seen with a shared pool).
    """
    return os.cpu_count() or 1


def build_dataset(
    config: Config,
    split: str,
    training: bool,
    *,
    epoch: int = 0,
    skip_batches: int = 0,
    batch_size: int | None = None,
    repeat: bool = False,
    samples: list[Sample] | None = None,
) -> tf.data.Dataset:
    """Batches of ``(image float32 0..255, mask uint8)`` for a split (``train``/``val`` or a split name).

    Training: shuffled by (train.seed, epoch), augmented with per-sample seeds, fixed-size
    batches (``train.batch_size`` unless ``batch_size``), incomplete last batch dropped;
    ``repeat`` continues with epochs ``epoch+1, ...``. Validation: file order, deterministic
    resize/pad only, batches of 1 by default (larger batches are padded with image 0 /
    mask 255 when sizes differ). ``skip_batches`` skips whole batches before decoding.
    ``samples`` replaces the split's list (a subset, or files from elsewhere).
    """
    data_cfg = config.data
    plan, batch_size = split_plan(config, split, training, batch_size, samples)
    processes = ProcessLoader(plan.load, plan.processes) if plan.processes else None
    loader = _BatchLoader(plan.load, processes, None not in plan.shape)
    # training batches all have batch_size samples (the incomplete last one is dropped)
    batch_shape = [batch_size if training else None, *plan.shape]
    channels = input_channels(data_cfg)

    def load(indices, seeds):
        images, masks = tf.numpy_function(loader, [indices, seeds], [tf.float32, tf.uint8], stateful=False)
        images.set_shape([*batch_shape, channels])
        masks.set_shape(batch_shape)
        return images, masks

    parallel = data_cfg.num_parallel_calls or default_parallel_calls()
    ds = _index_stream(plan.arrays, plan.total, batch_size, training, epoch, skip_batches, repeat)
    # Batches of (index, seed) first, decoded and collated by one call each: the per-sample cost
    # of TensorFlow (a numpy_function call, a cast op, a batch copy) is paid once per batch.
    ds = ds.batch(batch_size, drop_remainder=training).map(load, num_parallel_calls=parallel, deterministic=True)
    options = tf.data.Options()
    options.deterministic = True
    # Autotuning off: its tuning thread sleeps in doubling periods (10 ms, 20 ms, ... 20.48 s), and
    # destroying an iterator can wait for the sleep to end. When the trainer built one training pipeline
    # per epoch, some epochs (of 28 s and 30 s in benchmarks/bench_epoch_end.py; a third of the CPU
    # recipe's 23-30 s epochs) waited, the machine idle, until about 41 s after their pipeline started;
    # validation, precise BN and a dataset_fn still build one per use. The parallelism is explicit
    # (``default_parallel_calls``) and so is the prefetch depth.
    options.autotune.enabled = False
    # The calls get threads of their own: in TensorFlow's shared pool (one thread per core) no more
    # than the core count would run at once, whatever data.num_parallel_calls says. Exactly one per call:
    # the map's scheduler and prefetch run on threads of their own, and a spare pool thread only competed
    # with the decoding for the cores (docs/data.md, Benchmark).
    options.threading.private_threadpool_size = parallel
    return ds.with_options(options).prefetch(PREFETCH_BATCHES)


def steps_per_epoch(config: Config, split: str = "train", training: bool = True, batch_size: int | None = None) -> int:
    """Batches in one pass over a split, as ``build_dataset`` cuts them."""
    n = sample_plan(config, list_samples(config.data, split), training).total
    batch_size = batch_size or (config.train.batch_size if training else 1)
    return n // batch_size if training else -(-n // batch_size)
