"""Decode threads for the tf.data pipeline, kept for the life of the process.

Each of the pipeline's map calls hands its batch's samples to these threads at once and waits
with the GIL released, so the samples of consecutive batches decode back to back on every core:
no more Python threads than cores, and no batch-sized idle tail at the end of an epoch (with
one batch per call, an odd last batch decoded on one core while the other waited). The
trainer builds a pipeline per epoch, so pools are kept by thread count, as TensorFlow keeps
its own thread pools; their threads end at interpreter exit.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from segtrain.data.loading.worker_pool import Load

_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _forget_pools() -> None:
    """In a forked child: the parent's threads did not come along, so its pools are not there."""
    global _pools_lock
    _pools.clear()
    _pools_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_pools)


def _pool(threads: int) -> ThreadPoolExecutor:
    with _pools_lock:
        pool = _pools.get(threads)
        if pool is None:
            pool = _pools[threads] = ThreadPoolExecutor(threads, thread_name_prefix="segtrain-decode")
        return pool


class ThreadLoader:
    """``load`` run by ``threads`` kept threads, with ``ProcessLoader``'s ``submit`` and ``result``."""

    def __init__(self, load: Load, threads: int):
        self.load, self.threads = load, threads

    def submit(self, index: np.int64, seed: np.int64) -> Future:
        """Queue one sample; its future holds ``(image, mask)``."""
        return _pool(self.threads).submit(self.load, index, seed)

    @staticmethod
    def result(future: Future) -> tuple[np.ndarray, np.ndarray]:
        """The sample of a job; a ``SegtrainError`` from decoding is re-raised as is."""
        return future.result()
