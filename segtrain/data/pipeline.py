"""tf.data pipeline: (index, seed) stream -> parallel decode + augment -> batches -> prefetch.

What flows through TensorFlow before decoding is only a sample index and a seed, so the
dataset is streamed from disk and never held in memory (unless ``data.cache`` asks to keep
the decoded pairs, for datasets that fit in RAM: decoding is then paid once, not per epoch). Decoding and augmentation run in
Python (Pillow decodes palette PNGs correctly, albumentations augments) through
``tf.numpy_function`` with ``num_parallel_calls``; Pillow and OpenCV release the GIL while
they work, so several samples decode at once, and ``deterministic=True`` keeps the order.

Exact resume: in training, the file order of epoch ``e`` is a permutation seeded by
``(train.seed, e)`` and the augmentation of the sample at position ``p`` is seeded by
``(train.seed, e, p)``; nothing depends on what ran before, so ``skip_batches=k`` (which
skips whole batches before anything is decoded) gives exactly the tail of the full epoch.
The last incomplete training batch is dropped, so every training batch has the same size.

Output: ``(image float32 [B, H, W, 3] in 0..255, mask uint8 [B, H, W])``; 255 = void.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Iterable, Iterator

import numpy as np
import tensorflow as tf

from segtrain.config import Config, DataConfig
from segtrain.data.augment import augment, train_transform, val_transform
from segtrain.data.decode import read_mask, read_pair
from segtrain.data.palette import VOID
from segtrain.data.sources import Sample, list_samples
from segtrain.errors import SegtrainError

_ERROR_TAG = "SegtrainError: "


def epoch_order(num_samples: int, seed: int, epoch: int) -> np.ndarray:
    """The sample order of a training epoch: a permutation that depends on (seed, epoch) only."""
    return np.random.default_rng([seed % 2**32, epoch]).permutation(num_samples)


def sample_seeds(seed: int, epoch: int, positions: np.ndarray) -> np.ndarray:
    """One augmentation seed per position of an epoch, independent of every other position."""
    return np.array(
        [np.random.SeedSequence([seed % 2**32, epoch, int(p)]).generate_state(1)[0] for p in positions],
        dtype=np.int64,
    )


# data.cache: decoded (image, mask) pairs kept for the life of the process, shared by the
# datasets of every epoch (the trainer builds one per epoch). Keyed by the files and the
# decoding settings, so two configs never see each other's labels.
_DECODED: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
_DECODED_LOCK = threading.Lock()


class _Loader:
    """Decode + augment one sample by index; callable from many tf.data threads at once."""

    def __init__(self, samples: list[Sample], data_cfg: DataConfig, training: bool):
        self.samples, self.data_cfg, self.training = samples, data_cfg, training
        self._local = threading.local()  # albumentations transforms are re-seeded per call: one per thread
        decoding = (data_cfg.format, data_cfg.classes, data_cfg.colors, data_cfg.void_color,
                    data_cfg.num_classes, data_cfg.ignore_index, sorted(data_cfg.label_map.items()))
        self._cache_key = repr(decoding) if data_cfg.cache else None

    def _decode(self, sample: Sample) -> tuple[np.ndarray, np.ndarray]:
        if self._cache_key is None:
            return read_pair(sample.image, sample.mask, self.data_cfg)
        key = (str(sample.image), str(sample.mask), self._cache_key)
        pair = _DECODED.get(key)
        if pair is None:
            pair = read_pair(sample.image, sample.mask, self.data_cfg)
            for array in pair:
                array.setflags(write=False)  # augmentation must copy, never edit the cached pair
            with _DECODED_LOCK:
                _DECODED[key] = pair
        return pair

    def _transform(self):
        transform = getattr(self._local, "transform", None)
        if transform is None:
            make = train_transform if self.training else val_transform
            transform = self._local.transform = make(self.data_cfg)
        return transform

    def __call__(self, index: np.int64, seed: np.int64) -> tuple[np.ndarray, np.ndarray]:
        sample = self.samples[int(index)]
        try:
            image, mask = self._decode(sample)
        except SegtrainError as err:
            raise ValueError(_ERROR_TAG + str(err)) from None  # tf keeps the message; see data_error()
        return augment(self._transform(), image, mask, seed=int(seed) if self.training else None)


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


def _static_hw(data_cfg: DataConfig, training: bool) -> tuple[int | None, int | None]:
    if training and data_cfg.crop is not None:
        return tuple(data_cfg.crop)
    if data_cfg.resize is not None and (not training or tuple(data_cfg.scale) == (1.0, 1.0)):
        h, w = data_cfg.resize
        if not training and data_cfg.val_pad_to > 1:
            k = data_cfg.val_pad_to
            h, w = -(-h // k) * k, -(-w // k) * k
        return h, w
    return None, None


def _epoch_arrays(num_samples: int, seed: int, epoch: int, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    positions = np.arange(start, stop)
    order = epoch_order(num_samples, seed, epoch)
    return order[positions].astype(np.int64), sample_seeds(seed, epoch, positions)


def _index_stream(num_samples: int, batch_size: int, seed: int, training: bool, epoch: int, skip_batches: int, repeat: bool):
    start = skip_batches * batch_size
    if not training:
        indices = np.arange(num_samples, dtype=np.int64)
        stream = tf.data.Dataset.from_tensor_slices((indices, np.zeros_like(indices)))
        if repeat:
            stream = stream.repeat()
        return stream.skip(start)
    used = (num_samples // batch_size) * batch_size  # drop the incomplete last batch before decoding it
    stream = tf.data.Dataset.from_tensor_slices(_epoch_arrays(num_samples, seed, epoch, min(start, used), used))
    if repeat:

        def one_epoch(e):
            idx, seeds = tf.numpy_function(
                lambda e: _epoch_arrays(num_samples, seed, int(e), 0, used), [e], [tf.int64, tf.int64], stateful=False
            )
            return tf.data.Dataset.from_tensor_slices((idx, seeds))

        stream = stream.concatenate(tf.data.Dataset.range(epoch + 1, 2**62).flat_map(one_epoch))
    return stream


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
    samples = list_samples(data_cfg, split) if samples is None else list(samples)
    batch_size = batch_size or (config.train.batch_size if training else 1)
    if training and len(samples) < batch_size:
        raise SegtrainError(
            f"train.batch_size: {batch_size} is larger than the {len(samples)} samples of split "
            f"'{split}'; lower train.batch_size"
        )
    loader = _Loader(samples, data_cfg, training)
    h, w = _static_hw(data_cfg, training)

    def load(index, seed):
        image, mask = tf.numpy_function(loader, [index, seed], [tf.uint8, tf.uint8], stateful=False)
        image.set_shape([h, w, 3])
        mask.set_shape([h, w])
        return tf.cast(image, tf.float32), mask  # cast here, in the parallel map, not on whole batches

    parallel = data_cfg.num_parallel_calls or tf.data.AUTOTUNE
    ds = _index_stream(len(samples), batch_size, config.train.seed, training, epoch, skip_batches, repeat)
    ds = ds.map(load, num_parallel_calls=parallel, deterministic=True)
    if h is not None:
        ds = ds.batch(batch_size, drop_remainder=training)
    else:
        pad = (tf.constant(0, tf.float32), tf.constant(VOID, tf.uint8))
        ds = ds.padded_batch(batch_size, padding_values=pad, drop_remainder=training)
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def steps_per_epoch(config: Config, split: str = "train", training: bool = True, batch_size: int | None = None) -> int:
    """Batches in one pass over a split, as ``build_dataset`` cuts them."""
    n = len(list_samples(config.data, split))
    batch_size = batch_size or (config.train.batch_size if training else 1)
    return n // batch_size if training else -(-n // batch_size)


def iter_masks(data_cfg: DataConfig, split: str) -> Iterator[np.ndarray]:
    """Decoded masks of a split, one at a time (for class statistics without loading the dataset)."""
    for sample in list_samples(data_cfg, split):
        yield read_mask(sample.mask, data_cfg)
