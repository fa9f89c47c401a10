"""Augmentation: masks stay inside the class set (nearest only), void padding, seeding, deterministic validation."""

import numpy as np
import pytest

from segtrain.config import DataConfig
from segtrain.data.augment import augment, train_transform, val_transform


def cfg(**kw) -> DataConfig:
    return DataConfig(format="voc", root="x", num_classes=6, classes=list("abcdef"), **kw)


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(37, 29, 3), dtype=np.uint8)
    mask = np.array([0, 1, 2, 5, 255], dtype=np.uint8)[rng.integers(0, 5, size=(37, 29))]
    return image, mask


def test_200_random_augmentations_keep_mask_values_in_class_set(pair):
    image, mask = pair
    transform = train_transform(cfg(crop=[24, 40], scale=[0.5, 2.0], color_jitter=1.0))
    allowed = {0, 1, 2, 5, 255}  # exactly the values present: nearest resampling never blends two classes
    for seed in range(200):
        out_image, out_mask = augment(transform, image, mask, seed=seed)
        assert out_image.shape == (24, 40, 3) and out_image.dtype == np.uint8
        assert out_mask.shape == (24, 40) and out_mask.dtype == np.uint8
        assert set(np.unique(out_mask).tolist()) <= allowed


def test_crop_larger_than_image_pads_image_0_and_mask_void(pair):
    image, mask = pair
    image = np.maximum(image, 1)  # so a 0 can only come from padding
    mask = np.where(mask == 255, 0, mask)
    out_image, out_mask = augment(train_transform(cfg(crop=[48, 40], hflip=False)), image, mask, seed=1)
    pad = out_mask == 255
    assert pad.sum() == 48 * 40 - 37 * 29
    assert np.all(out_image[pad] == 0) and np.all(out_image[~pad] > 0)
    rows, cols = np.nonzero(~pad)
    np.testing.assert_array_equal(out_mask[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1], mask)


def test_seed_reproduces_and_is_independent_of_history(pair):
    image, mask = pair
    transform = train_transform(cfg(crop=[20, 20], scale=[0.7, 1.4], color_jitter=0.5))
    first = augment(transform, image, mask, seed=42)
    for seed in range(5):
        augment(transform, image, mask, seed=seed)
    again = augment(train_transform(cfg(crop=[20, 20], scale=[0.7, 1.4], color_jitter=0.5)), image, mask, seed=42)
    other = augment(transform, image, mask, seed=43)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])


def test_hflip_is_identity_or_exact_mirror(pair):
    image, mask = pair
    transform = train_transform(cfg(hflip=True))
    flipped = 0
    for seed in range(20):
        out_image, out_mask = augment(transform, image, mask, seed=seed)
        if np.array_equal(out_mask, mask):
            np.testing.assert_array_equal(out_image, image)
        else:
            np.testing.assert_array_equal(out_mask, mask[:, ::-1])
            np.testing.assert_array_equal(out_image, image[:, ::-1])
            flipped += 1
    assert 0 < flipped < 20


def test_validation_is_deterministic_resize_then_pad_to_multiple(pair):
    image, mask = pair
    transform = val_transform(cfg(val_pad_to=16, crop=[8, 8], hflip=True, color_jitter=1.0, scale=[0.5, 2.0]))
    out_image, out_mask = augment(transform, image, mask)
    assert out_image.shape == (48, 32, 3)
    np.testing.assert_array_equal(out_image[:37, :29], image)
    np.testing.assert_array_equal(out_mask[:37, :29], mask)
    assert np.all(out_mask[37:] == 255) and np.all(out_mask[:, 29:] == 255) and np.all(out_image[37:] == 0)
    # resize: a mask of 2x2 blocks halves to exactly its block values (nearest, no blending)
    blocks = np.kron(np.array([[1, 5], [2, 0]], np.uint8), np.ones((10, 10), np.uint8))
    _, small = augment(val_transform(cfg(resize=[2, 2])), np.zeros((20, 20, 3), np.uint8), blocks)
    np.testing.assert_array_equal(small, [[1, 5], [2, 0]])
