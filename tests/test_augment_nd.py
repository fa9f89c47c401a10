"""N-D patch augmentation: geometry moves image and label together; intensity changes the image only."""

import numpy as np

from segtrain.data.transforms.nd import NdAugment, augment_patch, zoom_patch


def _patch(shape=(4, 4, 3)):
    label = np.arange(np.prod(shape)).reshape(shape).astype(np.uint8)
    image = np.stack([label.astype(np.float32), -label.astype(np.float32)], axis=-1)  # the label, readable from the image
    return image, label


def test_flips_and_quarter_turns_keep_image_and_label_aligned():
    image, label = _patch()
    aug = NdAugment(flip_axes=(0, 1, 2), rot90_axes=(0, 1))
    seen = set()
    for seed in range(200):
        img, lab = augment_patch(image, label, aug, np.random.default_rng(seed))
        np.testing.assert_array_equal(img[..., 0], lab)
        np.testing.assert_array_equal(img[..., 1], -lab.astype(np.float32))
        # Only symmetries of the cube: the patch is one of the 32 flip/turn images of the original.
        seen.add(lab.tobytes())
    expected = {np.rot90(np.flip(label, axes) if axes else label, k, (0, 1)).tobytes()
                for k in range(4) for axes in [(), (0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)]}
    assert seen <= expected and len(seen) >= 12
    np.testing.assert_array_equal(image[..., 0], label)  # the input is not changed in place


def test_a_non_square_plane_turns_by_180_only():
    image, label = _patch((4, 3, 2))
    shapes = {augment_patch(image, label, NdAugment(rot90_axes=(0, 1)), np.random.default_rng(s))[1].shape for s in range(40)}
    assert shapes == {(4, 3, 2)}


def test_intensity_is_linear_per_channel_and_gamma_keeps_the_range():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(6, 5, 4, 2)).astype(np.float32)
    label = np.zeros((6, 5, 4), np.uint8)
    img, lab = augment_patch(image, label, NdAugment(scale=0.2, shift=0.3), np.random.default_rng(1))
    assert (lab == 0).all()
    for c in range(2):
        a, b = np.polyfit(image[..., c].ravel(), img[..., c].ravel(), 1)
        assert 0.8 <= a <= 1.2 and -0.3 <= b <= 0.3
        np.testing.assert_allclose(img[..., c], a * image[..., c] + b, atol=1e-5)
    g_img, _ = augment_patch(image, label, NdAugment(gamma=0.5), np.random.default_rng(2))
    for c in range(2):
        x, y = image[..., c].ravel(), g_img[..., c].ravel()
        assert np.isclose(y.min(), x.min(), atol=1e-5) and np.isclose(y.max(), x.max(), atol=1e-5)
        order = np.argsort(x)
        assert (np.diff(y[order]) >= -1e-5).all()  # monotonic: gamma never reorders intensities
    n_img, _ = augment_patch(image, label, NdAugment(noise=0.1), np.random.default_rng(3))
    assert 0 < np.std(n_img - image) <= 0.11


def test_the_same_generator_state_gives_the_same_patch_in_1d():
    signal = np.random.default_rng(4).normal(size=(50, 3)).astype(np.float32)
    labels = (np.arange(50) // 10).astype(np.uint8)
    aug = NdAugment(flip_axes=(0,), scale=0.1, shift=0.1, gamma=0.2, noise=0.05)
    a = augment_patch(signal, labels, aug, np.random.default_rng(9))
    b = augment_patch(signal, labels, aug, np.random.default_rng(9))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[1].tolist() in (labels.tolist(), labels[::-1].tolist())


def test_zoom_about_the_centre_matches_a_hand_computed_nearest_resampling():
    label = np.arange(8, dtype=np.uint8)  # 1-D; centre c = 3.5
    image = np.arange(8, dtype=np.float32)[:, None]
    # factor 2: output o reads input 3.5 + (o - 3.5) / 2 = 1.75, 2.25, 2.75, 3.25, 3.75, 4.25, 4.75, 5.25
    zoomed_image, zoomed_label = zoom_patch(image, label, 2.0)
    np.testing.assert_allclose(zoomed_image[:, 0], [1.75, 2.25, 2.75, 3.25, 3.75, 4.25, 4.75, 5.25], atol=1e-5)
    np.testing.assert_array_equal(zoomed_label, [2, 2, 3, 3, 4, 4, 5, 5])
    # factor 0.5: output o reads 3.5 + 2 (o - 3.5) = -3.5, -1.5, 0.5, 2.5, 4.5, 6.5, 8.5, 10.5: outside -> void
    _, shrunk = zoom_patch(image, label, 0.5)
    assert shrunk[0] == 255 and shrunk[1] == 255 and shrunk[-1] == 255 and shrunk[-2] == 255
    assert set(shrunk[2:6].tolist()) <= set(range(8))
    same_image, same_label = zoom_patch(image, label, 1.0)
    np.testing.assert_array_equal(same_label, label)
    np.testing.assert_allclose(same_image, image, atol=1e-6)


def test_random_zoom_in_3d_never_invents_a_class():
    rng = np.random.default_rng(0)
    label = np.zeros((12, 12, 12), np.uint8)
    label[3:9, 4:8, 2:10] = 2
    label[0, 0, 0] = 255
    image = rng.normal(size=(12, 12, 12, 2)).astype(np.float32)
    for _ in range(20):
        out_image, out_label = augment_patch(image, label, NdAugment(zoom=0.3), rng)
        assert out_image.shape == image.shape and out_label.shape == label.shape
        assert set(np.unique(out_label).tolist()) <= {0, 2, 255}
