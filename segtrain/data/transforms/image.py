"""DataConfig -> albumentations pipelines (training: random; validation: deterministic).

Masks are always resampled nearest-neighbour (a blended class index is a different class)
and padded with void (255), images with 0. There is no normalisation step here on purpose:
models take raw 0..255 pixels and normalise in their first layer, so checkpoints, export
and prediction need no knowledge of the data pipeline.

Training order: fixed resize (``data.resize``), random rescale (``data.scale``), geometry
(``rot90``, ``rotate``/``shift``, ``elastic``, ``grid_distortion``), the user's own
albumentations transforms (``data.augment``), pad to the crop size and random crop
(``data.crop``; ``data.crop_class_balance``: crops centred on a class drawn uniformly), flips (``hflip``, ``vflip``), colour (``color_jitter``, ``brightness``/
``contrast``, ``gamma``), ``blur``, ``noise``. Validation: ``data.resize`` if set, then pad
bottom/right to a multiple of ``data.val_pad_to``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import albumentations as A
import cv2
import numpy as np
from albumentations.augmentations.crops.transforms import BaseCrop

from segtrain.data.formats.palette import VOID
from segtrain.errors import SegtrainError
from segtrain.data.transforms.extra import MASK_INTERPOLATION, build_extra

if TYPE_CHECKING:  # type hints only: transforms sit below the config
    from segtrain.config.schema import DataConfig

_IMAGE_INTERP, _MASK_INTERP = cv2.INTER_LINEAR, MASK_INTERPOLATION
_VOID_BORDER = dict(border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=VOID)  # what a transform moves in


def _resize(data_cfg: DataConfig) -> list:
    if data_cfg.resize is None:
        return []
    h, w = data_cfg.resize
    return [A.Resize(h, w, interpolation=_IMAGE_INTERP, mask_interpolation=_MASK_INTERP)]


def _geometry(data_cfg: DataConfig) -> list:
    steps = []
    if data_cfg.rot90:
        steps.append(A.RandomRotate90(p=1.0))
    if data_cfg.rotate > 0 or data_cfg.shift > 0:
        s = data_cfg.shift
        steps.append(A.Affine(
            rotate=(-data_cfg.rotate, data_cfg.rotate), translate_percent={"x": (-s, s), "y": (-s, s)},
            interpolation=_IMAGE_INTERP, mask_interpolation=_MASK_INTERP, p=1.0, **_VOID_BORDER,
        ))
    if data_cfg.elastic > 0:
        steps.append(A.ElasticTransform(
            alpha=100.0, sigma=10.0, interpolation=_IMAGE_INTERP, mask_interpolation=_MASK_INTERP,
            p=data_cfg.elastic, **_VOID_BORDER,
        ))
    if data_cfg.grid_distortion > 0:
        steps.append(A.GridDistortion(
            num_steps=5, distort_limit=0.3, interpolation=_IMAGE_INTERP, mask_interpolation=_MASK_INTERP,
            p=data_cfg.grid_distortion, **_VOID_BORDER,
        ))
    return steps


def _photometric(data_cfg: DataConfig) -> list:
    steps = []
    if data_cfg.color_jitter > 0:
        s = data_cfg.color_jitter
        steps.append(
            A.ColorJitter(brightness=0.4 * s, contrast=0.4 * s, saturation=0.4 * s, hue=min(0.5, 0.1 * s), p=1.0)
        )
    if data_cfg.brightness > 0 or data_cfg.contrast > 0:
        steps.append(A.RandomBrightnessContrast(
            brightness_limit=data_cfg.brightness, contrast_limit=data_cfg.contrast, p=1.0
        ))
    if data_cfg.gamma > 0:
        g = data_cfg.gamma
        steps.append(A.RandomGamma(gamma_limit=(100.0 * (1 - g), 100.0 * (1 + g)), p=1.0))
    if data_cfg.blur > 0:
        steps.append(A.GaussianBlur(blur_limit=0, sigma_limit=(0.1, data_cfg.blur), p=0.5))
    if data_cfg.noise > 0:
        steps.append(A.GaussNoise(std_range=(0.0, data_cfg.noise), p=1.0))
    return steps


class ClassBalancedCrop(BaseCrop):
    """A ``height`` x ``width`` crop that, with probability ``balance``, is centred on a random pixel of
    a class drawn uniformly among the classes in the mask (void left out), else placed uniformly.

    A uniform crop shows a class in proportion to its area, so thin and small classes (CamVid's
    poles, signs and pedestrians) are rarely in a crop at all; drawing the class first shows each
    present class about equally often (nnU-Net's foreground oversampling, per class). The image
    must already be at least the crop's size (``PadIfNeeded`` before it).
    """

    def __init__(self, height: int, width: int, balance: float, p: float = 1.0):
        super().__init__(p=p)
        self.height, self.width, self.balance = height, width, balance

    def get_params_dependent_on_data(self, params: dict, data: dict) -> dict:
        mask = data["mask"]
        rows, cols = mask.shape[:2]
        top, left = self.py_random.randint(0, rows - self.height), self.py_random.randint(0, cols - self.width)
        if self.py_random.random() < self.balance:
            classes = [c for c in np.unique(mask) if c != VOID]
            if classes:
                ys, xs = np.nonzero(mask == classes[self.py_random.randrange(len(classes))])
                k = self.py_random.randrange(len(ys))
                top = min(max(int(ys[k]) - self.height // 2, 0), rows - self.height)
                left = min(max(int(xs[k]) - self.width // 2, 0), cols - self.width)
        return {"crop_coords": (left, top, left + self.width, top + self.height)}


def train_transform(data_cfg: DataConfig) -> A.Compose:
    """The random training augmentation; seed it per sample with ``augment(..., seed=)``."""
    steps = _resize(data_cfg)
    low, high = data_cfg.scale
    if (low, high) != (1.0, 1.0):
        steps.append(
            A.RandomScale(scale_limit=(low - 1.0, high - 1.0), interpolation=_IMAGE_INTERP, mask_interpolation=_MASK_INTERP, p=1.0)
        )
    steps += _geometry(data_cfg)
    steps += build_extra(data_cfg.augment)
    if data_cfg.crop is not None:
        h, w = data_cfg.crop
        steps.append(A.PadIfNeeded(min_height=h, min_width=w, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=VOID))
        balance = data_cfg.crop_class_balance
        steps.append(ClassBalancedCrop(h, w, balance) if balance > 0 else A.RandomCrop(h, w))
    if data_cfg.hflip:
        steps.append(A.HorizontalFlip(p=0.5))
    if data_cfg.vflip:
        steps.append(A.VerticalFlip(p=0.5))
    steps += _photometric(data_cfg)
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
    if out["image"].dtype != np.uint8:
        raise SegtrainError(
            f"data.augment: a transform returned {out['image'].dtype} images; models take uint8 0..255 pixels "
            f"and normalise themselves, so leave out Normalize/ToFloat"
        )
    return np.ascontiguousarray(out["image"]), np.ascontiguousarray(out["mask"], dtype=np.uint8)
