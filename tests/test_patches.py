"""Patch sampling: foreground share against its expected value, determinism, padding with void."""

import itertools

import numpy as np
import pytest

from segtrain.data.transforms.patches import bounding_box, extract_patch, foreground_voxels, sample_patch

SHAPE, PATCH = (20, 18, 16), (6, 6, 6)


def _volume():
    label = np.zeros(SHAPE, np.uint8)
    label[2:4, 13:16, 3:5] = 1  # a small lesion near a corner: few random patches see it
    label[15, 2, 12] = 2
    label[0, 0, 0] = 255  # void is not foreground
    image = np.random.default_rng(0).normal(size=SHAPE + (2,)).astype(np.float32)
    return image, label


def _random_patch_hit_rate(label, patch):
    """Share of all uniformly drawable patch corners whose patch holds a foreground voxel (brute force)."""
    fg = (label > 0) & (label < 255)
    ranges = [range(s - p + 1) for s, p in zip(label.shape, patch)]
    hits = [fg[x:x + patch[0], y:y + patch[1], z:z + patch[2]].any() for x, y, z in itertools.product(*ranges)]
    return float(np.mean(hits))


def test_foreground_share_is_the_forced_third_plus_chance():
    image, label = _volume()
    fg = foreground_voxels(label, num_classes=3)
    assert len(fg) == 2 * 3 * 2 + 1
    chance = _random_patch_hit_rate(label, PATCH)
    draws = 3000
    hits = 0
    for index in range(draws):
        _, lab = sample_patch(image, label, PATCH, fg, seed=7, epoch=0, index=index)
        assert lab.shape == PATCH
        hits += bool(((lab > 0) & (lab < 255)).any())
    expected = 1 / 3 + (2 / 3) * chance
    tolerance = 4 * np.sqrt(expected * (1 - expected) / draws)  # 4 standard errors of a binomial share
    assert chance < 0.2  # the lesion is rare for uniform patches, so oversampling is what is measured
    assert abs(hits / draws - expected) < tolerance, (hits / draws, expected)
    none = sum(bool(((sample_patch(image, label, PATCH, fg, seed=7, epoch=0, index=i, foreground_fraction=0.0)[1] % 255) > 0).any())
               for i in range(draws))
    assert abs(none / draws - chance) < 4 * np.sqrt(chance * (1 - chance) / draws)


def test_same_seed_epoch_index_same_patch():
    image, label = _volume()
    fg = foreground_voxels(label, 3)
    a = sample_patch(image, label, PATCH, fg, seed=1, epoch=2, index=5)
    b = sample_patch(image, label, PATCH, fg, seed=1, epoch=2, index=5)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    others = [sample_patch(image, label, PATCH, fg, seed=1, epoch=e, index=i)[0] for e, i in ((3, 5), (2, 6))]
    assert not any(np.array_equal(a[0], o) for o in others)


def test_a_patch_past_the_array_is_padded_with_zero_and_void():
    image = np.arange(4 * 5, dtype=np.float32).reshape(4, 5, 1)
    label = np.ones((4, 5), np.uint8)
    img, lab = extract_patch(image, label, start=(-1, 2), patch=(6, 4))
    expected = np.zeros((6, 4, 1), np.float32)
    expected[1:5, 0:3, 0] = image[:, 2:5, 0]
    np.testing.assert_array_equal(img, expected)
    assert (lab[1:5, 0:3] == 1).all() and (lab == 255).sum() == 6 * 4 - 4 * 3
    # An array smaller than the patch: every draw is padded, never an error.
    small_img, small_lab = sample_patch(image, label, (8, 8), foreground_voxels(label, 2), seed=0, epoch=0, index=0)
    assert small_img.shape == (8, 8, 1) and (small_lab == 1).sum() == 20


def test_uniform_patches_stay_inside_the_mask_box_and_1d_works():
    signal = np.arange(100, dtype=np.float32)[:, None]
    labels = np.zeros(100, np.uint8)
    mask = np.zeros(100, bool)
    mask[30:60] = True
    box = bounding_box(mask)
    assert (box[0].tolist(), box[1].tolist()) == ([30], [60])
    starts = [sample_patch(signal, labels, (10,), foreground_voxels(labels, 2), seed=3, epoch=0, index=i, bounds=box)[0][0, 0]
              for i in range(300)]
    assert min(starts) == 30 and max(starts) == 50  # every corner in [30, 60 - 10] is drawn, none outside


@pytest.mark.parametrize("count", [0, 5])
def test_foreground_voxels_excludes_background_and_void(count):
    label = np.zeros((4, 4), np.uint8)
    label.flat[:count] = 1
    label[3, 3] = 255
    assert len(foreground_voxels(label, 2)) == count
