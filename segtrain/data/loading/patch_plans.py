"""One patch of an epoch for the formats that train on patches (volumes, signals).

The counterpart of ``plans.py`` for N-D data: an epoch is ``data.patches_per_case`` patches
from every case. Training visits the cases in an order seeded by ``(train.seed, epoch)`` and
draws the patches of one case at consecutive positions, so a loader that keeps only
``data.cached_cases`` decoded cases (default 2) decodes each case once per epoch and its
memory does not grow with the dataset. The patch at position ``p`` (its corner, foreground
oversampling and augmentation) comes from one generator seeded by ``(train.seed, epoch, p)``,
so skipping whole batches gives exactly the tail of the epoch (exact resume).

Validation draws the same number of patches per case, in case order, with seeds that depend on
the position only (not on ``train.seed`` or the epoch) and no augmentation: a fixed set of
patches, comparable between epochs and runs. Whole-case sliding-window validation replaces it
once N-D inference exists.

Nothing here imports TensorFlow: ``tf_batches.py`` and ``numpy_batches.py`` share it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from segtrain.config import DataConfig
from segtrain.data.formats import get_format
from segtrain.data.loading.seeds import epoch_order, sample_seeds
from segtrain.data.transforms.nd import NdAugment, augment_patch
from segtrain.data.transforms.patches import bounding_box, extract_patch, foreground_voxels, patch_start
from segtrain.errors import SegtrainError
from segtrain.io_utils import file_stamps

VALIDATION_SEED = 0  # validation patches depend on their position only


def patch_size(data_cfg: DataConfig) -> tuple[int, ...]:
    """``data.patch``, which patch training needs."""
    if data_cfg.patch is None:
        axes = get_format(data_cfg.format).spatial_rank
        raise SegtrainError(f"data.patch: format {data_cfg.format} trains on patches; set data.patch to {axes} size(s), e.g. {[64] * axes}")
    return tuple(data_cfg.patch)


def nd_augment(data_cfg: DataConfig) -> NdAugment:
    """The ``data.patch_*`` augmentation keys as an ``NdAugment``."""
    return NdAugment(
        flip_axes=tuple(data_cfg.patch_flip),
        rot90_axes=tuple(data_cfg.patch_rot90) if data_cfg.patch_rot90 is not None else None,
        zoom=data_cfg.patch_zoom,
        scale=data_cfg.patch_scale,
        shift=data_cfg.patch_shift,
        gamma=data_cfg.patch_gamma,
        noise=data_cfg.patch_noise,
    )


def patch_positions(num_cases: int, per_case: int, seed: int, epoch: int, start: int, stop: int, training: bool) -> tuple[np.ndarray, np.ndarray]:
    """(case index, patch seed) for the positions ``start..stop-1`` of an epoch of ``num_cases * per_case`` patches."""
    positions = np.arange(start, stop)
    if not training:
        return (positions // per_case).astype(np.int64), sample_seeds(VALIDATION_SEED, 0, positions)
    order = epoch_order(num_cases, seed, epoch)
    return order[positions // per_case].astype(np.int64), sample_seeds(seed, epoch, positions)


@dataclass(frozen=True)
class _Case:
    image: np.ndarray  # (spatial..., C) float32
    label: np.ndarray  # (spatial...) uint8, 255 = void
    foreground: np.ndarray  # (N, ndim) voxels of a class other than 0
    bounds: tuple[np.ndarray, np.ndarray] | None  # the region mask's bounding box


_SHARED_GROUPS = 4  # (config, cases, training) groups whose decoded cases are kept; older groups are dropped
_shared: OrderedDict[tuple, tuple[OrderedDict, threading.Lock]] = OrderedDict()
_shared_lock = threading.Lock()


def _shared_cache(key: tuple) -> tuple[OrderedDict, threading.Lock]:
    """The decoded-case cache of ``key``, shared by every loader of that key in this process.

    The trainer builds a new pipeline, so a new loader, every epoch, and tf.data keeps the
    ``tf.numpy_function`` of a finished pipeline alive; a cache per loader decoded every case
    again each epoch and kept each epoch's cases in memory (a BRATS run grew by ~100 MB an epoch
    until the kernel killed it at epoch 133). One cache per key bounds memory by
    ``data.cached_cases`` per key whatever the number of epochs, and decodes a case once.
    """
    with _shared_lock:
        if key not in _shared:
            _shared[key] = (OrderedDict(), threading.Lock())
            while len(_shared) > _SHARED_GROUPS:
                _shared.popitem(last=False)
        _shared.move_to_end(key)
        return _shared[key]


class PatchLoader:
    """(case index, patch seed) -> (image patch float32 (patch..., C), label patch uint8 (patch...)).

    Thread-safe; keeps at most ``data.cached_cases`` decoded cases (least recently used
    dropped), in a cache shared by the loaders of the same config, case files (as they are on disk
    now) and mode (``_shared_cache``).
    Decoding holds a lock, so two threads that need the same case decode it once.
    """

    def __init__(self, cases: list, data_cfg: DataConfig, training: bool):
        self.cases, self.data_cfg, self.training = cases, data_cfg, training
        self.patch = patch_size(data_cfg)
        self._read = get_format(data_cfg.format).read
        self.augment = nd_augment(data_cfg) if training else None
        self._cache, self._lock = _shared_cache((repr(data_cfg), tuple((repr(c), file_stamps(c)) for c in cases), training))

    def _decode(self, index: int) -> _Case:
        decoded = self._read(self.cases[index], self.data_cfg)
        bounds = bounding_box(decoded.region) if decoded.region is not None else None
        return _Case(decoded.image, decoded.label, foreground_voxels(decoded.label, self.data_cfg.num_classes), bounds)

    def case(self, index: int) -> _Case:
        """The decoded case, from the cache or read now."""
        with self._lock:
            decoded = self._cache.get(index)
            if decoded is None:
                decoded = self._cache[index] = self._decode(index)
                while len(self._cache) > self.data_cfg.cached_cases:
                    self._cache.popitem(last=False)
            else:
                self._cache.move_to_end(index)
            return decoded

    def __call__(self, index: np.int64, seed: np.int64) -> tuple[np.ndarray, np.ndarray]:
        decoded = self.case(int(index))
        rng = np.random.default_rng(int(seed))
        start = patch_start(decoded.label.shape, self.patch, decoded.foreground, rng, self.data_cfg.foreground_fraction, decoded.bounds)
        image, label = extract_patch(decoded.image, decoded.label, start, self.patch)
        if self.augment is not None:
            image, label = augment_patch(image, label, self.augment, rng)
        return np.ascontiguousarray(image, dtype=np.float32), np.ascontiguousarray(label, dtype=np.uint8)
