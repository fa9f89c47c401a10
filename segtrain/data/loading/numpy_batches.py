"""The batches of ``tf_batches.build_dataset`` as NumPy arrays, without TensorFlow.

For environments that have JAX or PyTorch but no TensorFlow (a lent GPU machine, whose
TensorFlow wheel is too large to carry). The order, the per-sample augmentation seeds and
the decoding are ``plans.py``'s, the same code the tf.data pipeline runs, so for the same
(seed, epoch, position) both yield identical batches (tested batch for batch).

Samples decode and augment on a pool of worker threads (Pillow, OpenCV and NumPy release the
GIL while they work), or with ``data.decode_processes`` on that many worker processes
(``worker_pool.py``); at most ``prefetch_batches`` batches are decoded ahead of the consumer,
and batches come out in order. A bad file raises the decoder's one-line ``SegtrainError``
itself, not a wrapper.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import os
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from segtrain.config import Config
from segtrain.data.formats import Sample
from segtrain.data.loading.plans import PREFETCH_BATCHES, collate, split_plan
from segtrain.data.loading.worker_pool import ProcessLoader


class NumpyLoader:
    """Batches of ``(image float32 [B, H, W, C] in 0..255, mask uint8 [B, H, W])`` for a split.

    Same arguments and batches as ``build_dataset`` (no ``repeat``: build one per epoch).
    Training: order and augmentation seeded by (train.seed, epoch), incomplete last batch
    dropped. Validation: file order, deterministic resize/pad, batches of 1 by default, padded
    with image 0 / mask 255 when sizes differ. ``skip_batches`` skips whole batches before
    decoding; ``len()`` is the number of batches left to yield. ``workers`` (threads) defaults to
    ``data.num_parallel_calls``, or the CPU count when that is 0; ``data.decode_processes``
    replaces the threads with that many worker processes.
    """

    def __init__(
        self,
        config: Config,
        split: str,
        training: bool,
        *,
        epoch: int = 0,
        skip_batches: int = 0,
        batch_size: int | None = None,
        samples: list[Sample] | None = None,
        workers: int | None = None,
        prefetch_batches: int = PREFETCH_BATCHES,
    ):
        plan, self.batch_size = split_plan(config, split, training, batch_size, samples)
        self.training = training
        self._load = plan.load
        self._processes = ProcessLoader(plan.load, plan.processes) if plan.processes else None
        self._fixed_shape = None not in plan.shape
        start = skip_batches * self.batch_size
        used = (plan.total // self.batch_size) * self.batch_size if training else plan.total
        self._indices, self._seeds = plan.arrays(epoch, min(start, used), used)
        self.workers = plan.processes or workers or config.data.num_parallel_calls or os.cpu_count() or 1
        self.prefetch_batches = max(1, prefetch_batches)

    def __len__(self) -> int:
        return -(-len(self._indices) // self.batch_size)  # training positions are whole batches already

    def _runner(self, stack: contextlib.ExitStack) -> tuple[Callable[..., Future], Callable[[Future], tuple]]:
        """(submit(index, seed), result(future)): the worker processes, or a thread pool for one pass, joined by ``stack``."""
        if self._processes is not None:
            return self._processes.submit, self._processes.result
        threads = stack.enter_context(ThreadPoolExecutor(self.workers, thread_name_prefix="segtrain-loader"))
        return functools.partial(threads.submit, self._load), Future.result

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        jobs = zip(self._indices, self._seeds)
        depth = max(self.workers, self.prefetch_batches * self.batch_size)  # samples submitted ahead
        pending: collections.deque[Future] = collections.deque()
        with contextlib.ExitStack() as stack:
            submit, result = self._runner(stack)
            try:
                for job in jobs:
                    pending.append(submit(*job))
                    if len(pending) >= depth:
                        break
                while pending:
                    batch = []
                    while pending and len(batch) < self.batch_size:
                        batch.append(result(pending.popleft()))  # re-raises a worker's SegtrainError as is
                        job = next(jobs, None)
                        if job is not None:
                            pending.append(submit(*job))
                    yield collate(batch, self._fixed_shape)
            finally:  # also when the consumer stops early or a sample failed: nothing queued is left to run
                for future in pending:
                    future.cancel()
