"""The data layer of the running Keras backend, what the trainer asks of any data-layer object, and its data-wait clock.

TensorFlow gets the tf.data pipeline (``tf_batches.build_dataset``); JAX and PyTorch get
``numpy_batches.NumpyLoader``, which needs no TensorFlow and yields the same batches for the same
(seed, epoch, position). A ``Trainer(dataset_fn=...)`` may return either kind, or any sized
iterable of ``(images, masks)`` NumPy batches (on TensorFlow it is wrapped in a tf.data.Dataset).
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable, Iterable, Iterator

from segtrain.config import Config
from segtrain.data.loading.numpy_batches import NumpyLoader
from segtrain.errors import SegtrainError


def build_batches(config: Config, split: str, training: bool, *, epoch: int = 0, skip_batches: int = 0):
    """``tf_batches.build_dataset`` on TensorFlow, an equal ``NumpyLoader`` on the other backends."""
    import keras  # the backend is loaded by the time batches are built

    if keras.backend.backend() == "tensorflow":
        from segtrain.data.loading.tf_batches import build_dataset  # imports TensorFlow

        return build_dataset(config, split, training, epoch=epoch, skip_batches=skip_batches)
    return NumpyLoader(config, split, training, epoch=epoch, skip_batches=skip_batches)


def count_batches(dataset) -> int:
    """Batches in one pass: ``len()`` of a sized iterable, the cardinality of a tf.data.Dataset."""
    if hasattr(dataset, "cardinality"):
        n = int(dataset.cardinality())
    elif hasattr(dataset, "__len__"):
        n = len(dataset)
    else:
        n = -1
    if n < 0:
        raise SegtrainError("Trainer(dataset_fn=...): the training dataset must have a known, finite number of "
                            "batches (a sized iterable, or a tf.data.Dataset with no repeat() and no filter())")
    return n


@contextlib.contextmanager
def numpy_batches(dataset, count: int | None = None) -> Iterator[Iterable]:
    """The first ``count`` (all, if None) batches as NumPy arrays; the iterator is closed on exit, also after an error."""
    if hasattr(dataset, "as_numpy_iterator"):  # tf.data
        from segtrain.data.loading.tf_batches import BatchIterator  # imports TensorFlow; a tf.data dataset means it is loaded

        with BatchIterator((dataset if count is None else dataset.take(count)).as_numpy_iterator()) as batches:
            yield batches
        return
    iterator = iter(dataset)
    try:
        yield iterator if count is None else itertools.islice(iterator, count)
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


class RunBatches:
    """The training batches of a whole run from one endless pipeline, handed out epoch by epoch.

    A pipeline built per epoch pays its start-up every epoch (tracing, a new iterator, filling
    it; the last batch decoding on one core while the others wait) and stands idle through
    the epoch's end. Kept for the run, it pays that once, and the next epoch's first batches
    decode during precise BN and validation. ``open_at(epoch, batch)`` opens the endless
    stream there (an iterator with ``close()``); the stream is reopened whenever an epoch asks
    for a position other than where it stands (after a stop, a resume), so what an epoch gets
    never depends on what ran before.
    """

    def __init__(self, open_at: Callable[[int, int], Iterator], steps_per_epoch: int):
        self._open_at, self._steps = open_at, steps_per_epoch
        self._iterator: Iterator | None = None
        self._at: tuple[int, int] | None = None

    def epoch(self, epoch: int, batch: int, count: int) -> contextlib.AbstractContextManager[Iterator]:
        """A context manager over the ``count`` batches from position ``batch`` of ``epoch`` (the stream
        opens here, if it must); an error inside closes the stream."""
        if self._at != (epoch, batch):
            self.close()
            self._iterator = self._open_at(epoch, batch)
            self._at = (epoch, batch)
        return self._closed_on_error(self._take(count))

    @contextlib.contextmanager
    def _closed_on_error(self, batches: Iterator) -> Iterator[Iterator]:
        try:
            yield batches
        except BaseException:
            self.close()
            raise

    def _take(self, count: int) -> Iterator:
        for _ in range(count):
            item = next(self._iterator)  # the stream is endless
            epoch, batch = self._at
            self._at = (epoch + 1, 0) if batch + 1 == self._steps else (epoch, batch + 1)
            yield item

    def close(self) -> None:
        """Stop the pipeline (at the end of the run)."""
        if self._iterator is not None:
            iterator, self._iterator, self._at = self._iterator, None, None
            iterator.close()


class DataClock:
    """How long the training loop waited for its batches: the time spent inside ``next()``.

    With a pipeline that keeps up, batches are ready when the step asks, so ``waited`` stays
    near zero; its share of the epoch's time is logged as ``data_wait`` (mmsegmentation's
    ``data_time``). It does not see a pipeline that keeps up only by slowing the step down
    by sharing its CPU cores (``benchmarks/bench_backends.py`` measures that).
    """

    def __init__(self):
        self.waited, self.batches = 0.0, 0

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """Count the time inside as waiting (starting a pipeline, fetching a batch)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.waited += time.perf_counter() - started

    def timed(self, batches: Iterable) -> Iterator:
        """``batches``, counting each one and the time ``next()`` took."""
        with self.waiting():
            iterator = iter(batches)
        while True:
            with self.waiting():
                batch = next(iterator, None)
            if batch is None:
                return
            self.batches += 1
            yield batch
