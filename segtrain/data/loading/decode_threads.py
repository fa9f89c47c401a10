"""Decode threads for the tf.data pipeline, kept for the life of the process and shared by its map calls.

A map call that decodes its batch's samples itself leaves a core idle whenever fewer batches than
cores remain (an epoch's last batch decodes on one core). Each call instead hands its samples to
these threads and waits with the GIL released, so every core decodes until the epoch's last sample.

No Python-level lock is on the way of a job: the garbage collector can destroy an abandoned
tf.data iterator on any thread, and the destructor waits for that iterator's map calls in flight.
A collecting thread that held a lock those calls needed hung the process (seen in CI with
``ThreadPoolExecutor``, whose ``submit`` holds two). Jobs and results therefore travel through
``queue.SimpleQueue`` (implemented without Python locks and safe to use from a collector), the
threads start before any call can wait for them, and there are at least two, so while one of them
runs a collection the other runs the waiting calls' jobs. One case is left, as it was when each
call decoded its own samples: a collection that destroys an iterator on a thread decoding a sample
of that same iterator waits for itself. The trainer never leaves an iterator to the collector
(``tf_batches.BatchIterator`` destroys it when it stops).
"""

from __future__ import annotations

import os
import queue
import threading

import numpy as np

from segtrain.data.loading.worker_pool import Load

MIN_THREADS = 2  # one may be running a garbage collection that waits for jobs only the other can run

_queues: dict[int, queue.SimpleQueue] = {}  # thread count -> the job queue its threads serve
_start_lock = threading.Lock()  # taken only to start threads, never by a call whose threads run


def _forget_threads() -> None:
    """In a forked child: the parent's threads did not come along, so their queues would never be served."""
    global _start_lock
    _queues.clear()
    _start_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_threads)


def _serve(jobs: queue.SimpleQueue) -> None:
    while True:
        load, index, seed, slot = jobs.get()
        try:
            outcome = load(index, seed)
        except BaseException as err:  # noqa: BLE001 - handed to the waiting call, which re-raises it
            outcome = err
        slot.put(outcome)
        del load, slot, outcome  # hold nothing of a finished job while waiting for the next


def _jobs(threads: int) -> queue.SimpleQueue:
    """The job queue served by ``threads`` threads, started at its first use."""
    jobs = _queues.get(threads)
    if jobs is None:
        with _start_lock:
            jobs = _queues.get(threads)
            if jobs is None:
                jobs = queue.SimpleQueue()
                for n in range(threads):
                    threading.Thread(target=_serve, args=(jobs,), name=f"segtrain-decode-{threads}-{n}", daemon=True).start()
                _queues[threads] = jobs
    return jobs


class DecodeThreads:
    """``load`` run by ``threads`` kept threads (at least ``MIN_THREADS``), with ``ProcessLoader``'s
    ``submit`` and ``result``: several map calls submit at once and each waits only for its own samples."""

    def __init__(self, load: Load, threads: int):
        self.load, self.threads = load, max(MIN_THREADS, threads)
        self._jobs = _jobs(self.threads)  # started here, before any call can wait for them

    def submit(self, index: np.int64, seed: np.int64) -> queue.SimpleQueue:
        """Queue one sample; the returned one-item queue receives ``(image, mask)`` or the error."""
        slot = queue.SimpleQueue()
        self._jobs.put((self.load, index, seed, slot))
        return slot

    @staticmethod
    def result(slot: queue.SimpleQueue) -> tuple[np.ndarray, np.ndarray]:
        """The sample of a job; an error from decoding (a ``SegtrainError`` for a bad file) is re-raised as is."""
        outcome = slot.get()
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome
