"""Decode worker processes (``data.decode_processes``): a sample loader run by persistent processes.

On threads, decoding and augmentation hold the GIL between Pillow's and OpenCV's GIL-free parts,
so two threads reached 0.79x-0.87x of a bare decode on two processes (issue 31). Here the loader
runs in worker processes, as PyTorch's ``DataLoader(num_workers, persistent_workers=True)`` does:

- Started with ``spawn``, never ``fork``: the parent has TensorFlow's, JAX's or PyTorch's threads
  running, and a forked child inherits their locks in whatever state they were. A spawned worker
  imports only what unpickling the loader needs, so no TensorFlow (tested).
- The loader is pickled once and unpickled by each worker as it starts; a job carries only
  ``(index, seed)``, and its sample comes back as pickled NumPy arrays.
- The trainer builds a new loader every epoch, so pools are kept by the pickled loader (its
  samples, data config and mode): the next epoch's loader finds its workers running.
  ``KEPT_POOLS`` are kept (training's and validation's); an older pool finishes its queued jobs
  and exits, and every pool exits at interpreter exit.
- A worker that dies (killed, out of memory) breaks its pool: the error names the key and the fix.
"""

from __future__ import annotations

import atexit
import multiprocessing
import pickle
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from segtrain.errors import SegtrainError

Load = Callable[[np.int64, np.int64], tuple[np.ndarray, np.ndarray]]  # (index, seed) -> (image, mask)

KEPT_POOLS = 2  # training's and validation's
FIX = "set data.decode_processes: 0 to decode on threads"
DIED = ("data.decode_processes: a decode worker process ended abruptly (killed, out of memory, or failed to start: "
        f"see the log above); {FIX}")

_pools: OrderedDict[tuple[bytes, int], ProcessPoolExecutor] = OrderedDict()
_pools_lock = threading.Lock()
_worker_load: Load | None = None  # in a worker process: the loader its pool runs


def _start_worker(payload: bytes) -> None:
    global _worker_load
    _worker_load = pickle.loads(payload)


def _run(index: np.int64, seed: np.int64) -> tuple[np.ndarray, np.ndarray]:
    return _worker_load(index, seed)


def _pool(key: tuple[bytes, int]) -> ProcessPoolExecutor:
    """The running pool of ``key`` (pickled loader, processes), started if there is none."""
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            pool = _pools[key] = ProcessPoolExecutor(key[1], mp_context=multiprocessing.get_context("spawn"),
                                                    initializer=_start_worker, initargs=(key[0],))
            while len(_pools) > KEPT_POOLS:
                _pools.popitem(last=False)[1].shutdown(wait=False)
        _pools.move_to_end(key)
        return pool


def _drop(key: tuple[bytes, int], pool: ProcessPoolExecutor) -> None:
    """Forget a broken pool, so that the next loader of its key starts a new one."""
    with _pools_lock:
        if _pools.get(key) is pool:
            del _pools[key]
    pool.shutdown(wait=False, cancel_futures=True)


@atexit.register
def shutdown_pools() -> None:
    """Stop every pool and wait for its workers to exit (at interpreter exit)."""
    with _pools_lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        pool.shutdown(wait=True, cancel_futures=True)


class ProcessLoader:
    """``load`` run by ``processes`` worker processes: ``submit`` a job, wait for its ``result``,
    or call it as ``load`` itself (from many threads at once, each waiting with the GIL released)."""

    def __init__(self, load: Load, processes: int):
        try:
            self._key = (pickle.dumps(load), processes)
        except (pickle.PicklingError, AttributeError, TypeError) as err:
            raise SegtrainError(f"data.decode_processes: the sample loader cannot be sent to a worker process ({err}); {FIX}") from None
        self._pool: ProcessPoolExecutor | None = None  # bound at the first job, for the life of this loader

    def submit(self, index: np.int64, seed: np.int64) -> Future:
        """Queue one sample; its future holds ``(image, mask)``."""
        if self._pool is None:
            self._pool = _pool(self._key)
        try:
            return self._pool.submit(_run, index, seed)
        except BrokenProcessPool:
            raise self._died() from None

    def result(self, future: Future) -> tuple[np.ndarray, np.ndarray]:
        """The sample of a job; a worker's ``SegtrainError`` is re-raised as its one line, without the worker's traceback."""
        try:
            return future.result()
        except BrokenProcessPool:
            raise self._died() from None
        except SegtrainError as err:
            raise err from None

    def __call__(self, index: np.int64, seed: np.int64) -> tuple[np.ndarray, np.ndarray]:
        return self.result(self.submit(index, seed))

    def _died(self) -> SegtrainError:
        _drop(self._key, self._pool)
        return SegtrainError(DIED)
