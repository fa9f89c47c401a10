"""Windows of scenes too large for memory (GeoTIFF): the patch plan that never decodes a scene whole.

The counterpart of ``patch_plans.py`` for formats with ``open_scene``: training draws
``data.patches_per_case`` windows of ``data.patch`` from every scene per epoch, in the order and
with the seeds of ``patch_plans.patch_positions`` (exact resume), each at a uniformly random
corner read from disk; a window without any labelled pixel is drawn again (up to
``REDRAWS`` times), since nodata borders of a scene teach nothing. The ``data.patch_*``
augmentation applies as for volumes. Validation reads a fixed grid of windows covering every
scene (``sliding_window.window_starts`` with the stride equal to the window).

Nothing here imports TensorFlow: ``tf_batches.py`` and ``numpy_batches.py`` share it.
"""

from __future__ import annotations

import itertools

import numpy as np

from segtrain.config import DataConfig
from segtrain.data.formats import get_format
from segtrain.data.loading.patch_plans import nd_augment, patch_size
from segtrain.data.transforms.nd import augment_patch
from segtrain.data.transforms.patches import extract_patch
from segtrain.labels import VOID
from segtrain.sliding_window import window_starts

REDRAWS = 10


class WindowLoader:
    """(scene index, seed) in training, (grid position, ignored) in validation -> (image window float32, label window uint8)."""

    def __init__(self, samples: list, data_cfg: DataConfig, training: bool):
        self.data_cfg, self.training = data_cfg, training
        self.patch = patch_size(data_cfg)
        self.scenes = [get_format(data_cfg.format).open_scene(s, data_cfg) for s in samples]
        self.augment = nd_augment(data_cfg) if training else None
        self.grid = [] if training else [
            (index, corner) for index, scene in enumerate(self.scenes)
            for corner in itertools.product(*(window_starts(n, p, p) for n, p in zip(scene.shape, self.patch)))
        ]

    def _window(self, scene, corner: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        decoded = scene.read(*(slice(c, c + p) for c, p in zip(corner, self.patch)))
        return extract_patch(decoded.image, decoded.label, (0,) * len(corner), self.patch)  # pads a scene smaller than the window

    def __call__(self, index: np.int64, seed: np.int64) -> tuple[np.ndarray, np.ndarray]:
        if not self.training:
            scene_index, corner = self.grid[int(index)]
            image, label = self._window(self.scenes[scene_index], corner)
        else:
            scene = self.scenes[int(index)]
            rng = np.random.default_rng(int(seed))
            for _ in range(REDRAWS):
                corner = tuple(int(rng.integers(0, max(n - p, 0) + 1)) for n, p in zip(scene.shape, self.patch))
                image, label = self._window(scene, corner)
                if (label != VOID).any():
                    break
            image, label = augment_patch(image, label, self.augment, rng)
        return np.ascontiguousarray(image, dtype=np.float32), np.ascontiguousarray(label, dtype=np.uint8)
