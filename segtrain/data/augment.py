"""DataConfig -> albumentations pipelines (training: random; validation: deterministic).

Masks are always resampled nearest-neighbour (a blended class index is a different class)
and padded with void (255), images with 0. There is no normalisation step here on purpose:
models take raw 0..255 pixels and normalise in their first layer, so checkpoints, export
and prediction need no knowledge of the data pipeline.

Training order: fixed resize (``data.resize``), random rescale (``data.scale``), pad to the
crop size and random crop (``data.crop``), horizontal flip, colour jitter. Validation:
``data.resize`` if set, then pad bottom/right to a multiple of ``data.val_pad_to``.
"""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np

from segtrain.config import DataConfig
from segtrain.data.palette import VOID

_IMAGE_INTERP, _MASK_INTERP = cv2.INTER_LINEAR, cv2.INTER_NEAREST


def _resize(data_cfg: DataConfig) -> list:
    if data_cfg.resize is None:
        return []
    h, w = data_cfg.resize
    return [A.Resize(h, w, interpolation=_IMAGE_INTERP, mask_interpolation=_MASK_INTERP)]


def train_transform(data_cfg: DataConfig) -> A.Compose:
    """The random training augmentation; seed it per sample with ``augment(..., seed=)``."""
    steps = _resize(data_cfg)
    low, high = data_cfg.scale
    if (low, high) != (1.0, 1.0):
        steps.append(
            A.RandomScale(scale_limit=(low - 1.0, high - 1.0), interpolation=_IMAGE_INTERP, mask_interpolation=_MASK_INTERP, p=1.0)
        )
    if data_cfg.crop is not None:
        h, w = data_cfg.crop
        steps.append(A.PadIfNeeded(min_height=h, min_width=w, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=VOID))
        steps.append(A.RandomCrop(h, w))
    if data_cfg.hflip:
        steps.append(A.HorizontalFlip(p=0.5))
    if data_cfg.color_jitter > 0:
        s = data_cfg.color_jitter
        steps.append(
            A.ColorJitter(brightness=0.4 * s, contrast=0.4 * s, saturation=0.4 * s, hue=min(0.5, 0.1 * s), p=1.0)
        )
    return A.Compose(steps, mask_interpolation=_MASK_INTERP, seed=0)


def val_transform(data_cfg: DataConfig) -> A.Compose:
    """Deterministic validation resizing and padding (void-filled masks, so metrics ignore the pad)."""
    steps = _resize(data_cfg)
    if data_cfg.val_pad_to > 1:
        k = data_cfg.val_pad_to
        steps.append(
            A.PadIfNeeded(
                min_height=None, min_width=None, pad_height_divisor=k, pad_width_divisor=k,
                position="top_left", border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=VOID,
            )
        )
    return A.Compose(steps, mask_interpolation=_MASK_INTERP, seed=0)


def augment(
    transform: A.Compose, image: np.ndarray, mask: np.ndarray, seed: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Apply ``transform``; with ``seed`` the result depends on the seed only, not on call history.

    Re-seeding mutates the transform, so share one ``Compose`` per thread, not across threads.
    """
    if seed is not None:
        transform.set_random_seed(int(seed))
    out = transform(image=image, mask=mask)
    return np.ascontiguousarray(out["image"], dtype=np.uint8), np.ascontiguousarray(out["mask"], dtype=np.uint8)
