"""One sample of an epoch: which file sits at each position, its augmentation seed, its decoding.

Shared by the tf.data pipeline (``tf_batches.py``) and the NumPy loader (``numpy_batches.py``),
so both yield the same batches by construction; nothing here imports TensorFlow. The order
and seeds of an epoch come from ``seeds.py``; formats that train on patches get their plan
from ``patch_plans.py``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from segtrain.config import Config, DataConfig
from segtrain.data.formats import Sample, get_format
from segtrain.data.formats.palette import VOID
from segtrain.data.formats.splits import list_samples
from segtrain.data.loading.patch_plans import PatchLoader, patch_positions
from segtrain.data.loading.seeds import epoch_arrays
from segtrain.data.loading.window_plans import WindowLoader
from segtrain.data.transforms.image import augment, train_transform, val_transform
from segtrain.errors import SegtrainError
from segtrain.io_utils import file_stamps


def checked_batch_size(config: Config, split: str, num_samples: int, training: bool, batch_size: int | None) -> int:
    """The batch size (``train.batch_size`` in training, 1 for validation, unless given); a
    training split smaller than one batch is an error: dropping the incomplete batch leaves none."""
    batch_size = batch_size or (config.train.batch_size if training else 1)
    if training and num_samples < batch_size:
        raise SegtrainError(
            f"train.batch_size: {batch_size} is larger than the {num_samples} samples of split "
            f"'{split}'; lower train.batch_size"
        )
    return batch_size


def static_hw(data_cfg: DataConfig, training: bool) -> tuple[int | None, int | None]:
    """The (height, width) every sample has after augmentation, or (None, None) when sizes vary."""
    if training and data_cfg.crop is not None:
        return tuple(data_cfg.crop)
    if data_cfg.resize is not None and (not training or tuple(data_cfg.scale) == (1.0, 1.0)):
        h, w = data_cfg.resize
        if not training and data_cfg.val_pad_to > 1:
            k = data_cfg.val_pad_to
            h, w = -(-h // k) * k, -(-w // k) * k
        return h, w
    return None, None


PREFETCH_BATCHES = 2  # batches decoded ahead of the consumer, by both batch sources


ALIGNMENT = 64  # bytes: TensorFlow's tensor alignment (EIGEN_MAX_ALIGN_BYTES)


def aligned_empty(shape: tuple, dtype: type) -> np.ndarray:
    """An uninitialised array whose data starts on a 64-byte boundary.

    ``tf.numpy_function`` shares such an array's memory with the tensor it returns, but copies
    one that is not aligned (NumPy's large allocations start 16 bytes past one): a 9.8 MB
    float32 batch copy per batch, measured as 1.4 ms of CPU on a 2-core machine.
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    buffer = np.empty(nbytes + ALIGNMENT, np.uint8)
    start = -buffer.ctypes.data % ALIGNMENT
    return buffer[start : start + nbytes].view(dtype).reshape(shape)


def collate(pairs: list[tuple[np.ndarray, np.ndarray]], fixed_shape: bool) -> tuple[np.ndarray, np.ndarray]:
    """One batch ``(image float32 [B, ..., C], mask uint8 [B, ...])`` from decoded pairs, by both batch sources.

    Images are cast here (from uint8 for 2-D images) while they are written into the batch.
    When sizes vary (validation without a fixed size) every sample is padded at the
    bottom/right to the largest of the batch, images with 0 and masks with void (255). Both
    arrays are 64-byte aligned (``aligned_empty``).
    """
    if fixed_shape:
        image, mask = pairs[0]
        images = aligned_empty((len(pairs), *image.shape), np.float32)
        masks = aligned_empty((len(pairs), *mask.shape), np.uint8)
        np.stack([p[0] for p in pairs], out=images, casting="unsafe")
        np.stack([p[1] for p in pairs], out=masks)
        return images, masks
    spatial = tuple(max(p[1].shape[d] for p in pairs) for d in range(pairs[0][1].ndim))
    images = aligned_empty((len(pairs), *spatial, pairs[0][0].shape[-1]), np.float32)
    masks = aligned_empty((len(pairs), *spatial), np.uint8)
    images.fill(0)
    masks.fill(VOID)
    for i, (image, mask) in enumerate(pairs):
        region = tuple(slice(0, n) for n in mask.shape)
        images[(i, *region)] = image
        masks[(i, *region)] = mask
    return images, masks


# data.cache: decoded (image, mask) pairs kept for the life of the process, shared by the
# datasets of every epoch (a dataset_fn, the NumPy loader and validation build one per epoch or use). Keyed by the files (as they are on
# disk now) and the decoding settings, so two configs never see each other's labels.
_DECODED: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
_DECODED_LOCK = threading.Lock()


class SampleLoader:
    """Decode + augment one sample by index; callable from many threads at once.

    A bad file raises the decoder's one-line ``SegtrainError``.
    """

    def __init__(self, samples: list[Sample], data_cfg: DataConfig, training: bool):
        self.samples, self.data_cfg, self.training = samples, data_cfg, training
        self._read = get_format(data_cfg.format).read
        self._local = threading.local()  # albumentations transforms are re-seeded per call: one per thread
        decoding = (data_cfg.format, data_cfg.channels, data_cfg.classes, data_cfg.colors, data_cfg.void_color,
                    data_cfg.num_classes, data_cfg.ignore_index, sorted(data_cfg.label_map.items()))
        self._cache_key = repr(decoding) if data_cfg.cache else None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_local": None}  # pickled for decode worker processes (worker_pool.py): no threads' transforms

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _local=threading.local())

    def _decode(self, sample: Sample) -> tuple[np.ndarray, np.ndarray]:
        if self._cache_key is None:
            return self._pair(sample)
        key = (repr(sample), file_stamps(sample), self._cache_key)  # a file rewritten since is decoded again
        pair = _DECODED.get(key)
        if pair is None:
            pair = self._pair(sample)
            for array in pair:
                array.setflags(write=False)  # augmentation must copy, never edit the cached pair
            with _DECODED_LOCK:
                _DECODED[key] = pair
        return pair

    def _pair(self, sample) -> tuple[np.ndarray, np.ndarray]:
        decoded = self._read(sample, self.data_cfg)
        return decoded.image, decoded.label

    def _transform(self):
        transform = getattr(self._local, "transform", None)
        if transform is None:
            make = train_transform if self.training else val_transform
            transform = self._local.transform = make(self.data_cfg)
        return transform

    def __call__(self, index: np.int64, seed: np.int64) -> tuple[np.ndarray, np.ndarray]:
        image, mask = self._decode(self.samples[int(index)])
        return augment(self._transform(), image, mask, seed=int(seed) if self.training else None)


@dataclass(frozen=True)
class SamplePlan:
    """What sits at each position of an epoch and how to load it, for any data format."""

    total: int  # positions in one epoch
    arrays: Callable[[int, int, int], tuple[np.ndarray, np.ndarray]]  # (epoch, start, stop) -> (index, seed) per position
    load: Callable[[np.int64, np.int64], tuple[np.ndarray, np.ndarray]]  # (index, seed) -> (image, mask); thread-safe
    shape: tuple  # the spatial shape every sample has, None entries where it varies
    processes: int = 0  # worker processes that run ``load`` (worker_pool.py); 0 = the batch source's threads


def _in_order(epoch: int, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """Validation: positions in order, no augmentation seed."""
    return np.arange(start, stop, dtype=np.int64), np.zeros(stop - start, np.int64)


def sample_plan(config: Config, samples: list, training: bool) -> SamplePlan:
    """2-D images: one sample per file, shuffled by (seed, epoch) in training. Formats that
    train on patches: ``data.patches_per_case`` patches per case (``patch_plans.py``), read as
    windows of scenes for formats with ``open_scene`` (``window_plans.py``)."""
    data_cfg, seed = config.data, config.train.seed
    fmt = get_format(data_cfg.format)
    if fmt.open_scene is not None:
        windows = WindowLoader(samples, data_cfg, training)
        n, per = len(samples), data_cfg.patches_per_case
        if training:
            return SamplePlan(n * per, lambda e, a, b: patch_positions(n, per, seed, e, a, b, True), windows, windows.patch)
        return SamplePlan(len(windows.grid), _in_order, windows, windows.patch)
    if fmt.patches:
        loader = PatchLoader(samples, data_cfg, training)
        n, per = len(samples), data_cfg.patches_per_case
        return SamplePlan(n * per, lambda e, a, b: patch_positions(n, per, seed, e, a, b, training), loader, loader.patch)
    n = len(samples)
    if training:
        arrays = lambda e, a, b: epoch_arrays(n, seed, e, a, b)  # noqa: E731
    else:
        arrays = _in_order
    # Only 2-D images decode in processes: patch loaders share decoded cases between threads, and a
    # scene's open file handles stay in the process that opened them.
    return SamplePlan(n, arrays, SampleLoader(samples, data_cfg, training), static_hw(data_cfg, training),
                      data_cfg.decode_processes)


def split_plan(config: Config, split: str, training: bool, batch_size: int | None = None,
               samples: list | None = None) -> tuple[SamplePlan, int]:
    """The plan of a split (or of ``samples`` instead of its list) and its checked batch size:
    where both batch sources, tf.data and NumPy, start."""
    samples = list_samples(config.data, split) if samples is None else list(samples)
    plan = sample_plan(config, samples, training)
    return plan, checked_batch_size(config, split, plan.total, training, batch_size)

