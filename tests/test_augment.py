"""Augmentation: masks stay inside the class set (nearest only), void padding, seeding, deterministic validation."""

import numpy as np
import pytest

from segtrain.config import DataConfig
from segtrain.data.transforms.image import augment, train_transform, val_transform


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


EVERY_OPTION = dict(
    crop=[24, 24], scale=[0.7, 1.4], hflip=True, vflip=True, rot90=True, rotate=30.0, shift=0.2, color_jitter=0.5,
    brightness=0.3, contrast=0.3, gamma=0.3, noise=0.1, blur=1.5, elastic=0.5, grid_distortion=0.5,
    augment=[{"name": "ElasticTransform", "alpha": 60, "sigma": 5, "p": 0.5},
             {"name": "OpticalDistortion", "p": 0.5}, {"name": "Perspective", "p": 0.5}],
)


def test_200_augmentations_with_every_option_keep_mask_values_in_class_set(pair):
    image, mask = pair
    transform = train_transform(cfg(**EVERY_OPTION))
    seen = set()
    for seed in range(200):
        out_image, out_mask = augment(transform, image, mask, seed=seed)
        assert out_image.shape == (24, 24, 3) and out_image.dtype == np.uint8 and out_mask.shape == (24, 24)
        values = set(np.unique(out_mask).tolist())
        assert values <= {0, 1, 2, 5, 255}
        seen |= values
    assert seen == {0, 1, 2, 5, 255}


def test_every_option_is_reproducible_from_its_seed_alone(pair):
    image, mask = pair
    transform = train_transform(cfg(**EVERY_OPTION))
    first = augment(transform, image, mask, seed=7)
    for seed in range(3):
        augment(transform, image, mask, seed=seed)
    again = augment(train_transform(cfg(**EVERY_OPTION)), image, mask, seed=7)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])


GEOMETRIC = [dict(vflip=True), dict(rot90=True), dict(rotate=40.0), dict(shift=0.3), dict(elastic=1.0),
             dict(grid_distortion=1.0)] + [
    dict(augment=[{"name": name, **kw}]) for name, kw in [
        ("VerticalFlip", {}), ("RandomRotate90", {}), ("Rotate", {"limit": 40}), ("Affine", {"rotate": 20, "scale": 0.8}),
        ("ShiftScaleRotate", {}), ("ElasticTransform", {"alpha": 80, "sigma": 6}), ("GridDistortion", {}),
    ]]
PHOTOMETRIC = [dict(brightness=0.4), dict(contrast=0.4), dict(gamma=0.4), dict(noise=0.2), dict(blur=2.0)] + [
    dict(augment=[{"name": name}]) for name in ("RandomBrightnessContrast", "RandomGamma", "GaussNoise", "GaussianBlur")]


def _name(option):
    return next(iter(option)) if "augment" not in option else option["augment"][0]["name"]


@pytest.mark.filterwarnings("ignore:ShiftScaleRotate is a special case of Affine")
@pytest.mark.parametrize("option", GEOMETRIC, ids=_name)
def test_each_geometric_option_moves_masks_with_nearest_values_and_void_fill(option):
    rng = np.random.default_rng(3)
    image = rng.integers(1, 256, size=(30, 30, 3), dtype=np.uint8)
    mask = np.kron(rng.choice([1, 2, 5], size=(6, 6)), np.ones((5, 5), np.int64)).astype(np.uint8)  # no 0, no void
    if "augment" in option:
        option = {"augment": [{**option["augment"][0], "p": 1.0}]}
    transform = train_transform(cfg(hflip=False, **option))
    moved = 0
    for seed in range(20):
        out_image, out_mask = augment(transform, image, mask, seed=seed)
        assert out_mask.shape == mask.shape and set(np.unique(out_mask).tolist()) <= {1, 2, 5, 255}  # void, never 0
        moved += not np.array_equal(out_mask, mask)
    assert moved > 0


@pytest.mark.parametrize("option", PHOTOMETRIC, ids=_name)
def test_each_photometric_option_changes_pixels_and_never_the_mask(pair, option):
    image, mask = pair
    transform = train_transform(cfg(hflip=False, **option))
    changed = 0
    for seed in range(10):
        out_image, out_mask = augment(transform, image, mask, seed=seed)
        np.testing.assert_array_equal(out_mask, mask)
        changed += not np.array_equal(out_image, image)
    assert changed > 0


def test_dropout_leaves_the_mask_alone_unless_asked_for_void(pair):
    image, mask = pair
    for fill_mask, expect_void in ((None, False), (255, True)):
        spec = {"name": "CoarseDropout", "num_holes_range": [2, 2], "hole_height_range": [8, 8],
                "hole_width_range": [8, 8], "fill": 0, "p": 1.0}
        if fill_mask is not None:
            spec["fill_mask"] = fill_mask
        no_void = np.where(mask == 255, 0, mask)
        _, out_mask = augment(train_transform(cfg(hflip=False, augment=[spec])), image, no_void, seed=0)
        assert (out_mask == 255).any() == expect_void
        if not expect_void:
            np.testing.assert_array_equal(out_mask, no_void)


def test_vflip_is_identity_or_exact_mirror(pair):
    image, mask = pair
    outcomes = set()
    for seed in range(20):
        out_image, out_mask = augment(train_transform(cfg(hflip=False, vflip=True)), image, mask, seed=seed)
        flipped = not np.array_equal(out_mask, mask)
        np.testing.assert_array_equal(out_mask, mask[::-1] if flipped else mask)
        np.testing.assert_array_equal(out_image, image[::-1] if flipped else image)
        outcomes.add(flipped)
    assert outcomes == {True, False}


@pytest.mark.parametrize("spec, message", [
    ("[{name: VertcalFlip}]", r"'VertcalFlip' is not an albumentations transform; did you mean VerticalFlip"),
    ("[{name: Rotate, limitt: 3}]", r"Rotate has no argument 'limitt'; it takes limit, "),
    ("[{name: Rotate, limit: x}]", r"Rotate: limit: Input should be a valid tuple$"),
    ("[{name: Rotate, p: 2}]", r"Rotate: p: Input should be less than or equal to 1$"),
    ("[{name: Rotate, fill_mask: 0}]", r"Rotate: fill_mask must stay 255"),
    ("[{name: CoarseDropout, fill_mask: 3}]", r"CoarseDropout: fill_mask must stay 255"),
    ("[{name: Affine, mask_interpolation: 1}]", r"Affine: mask_interpolation must stay 0"),
    ("[{p: 0.5}]", r"needs 'name: <albumentations transform>'"),
    ("[{name: Normalize}]", r"Normalize makes float images"),
    ("[{name: HorizontalFlip}, {name: RandomCrop}]", r"(?<=\[1\]': )RandomCrop: height: Field required$"),
])
def test_bad_augment_entries_are_one_line_errors_naming_the_entry(tmp_path, spec, message):
    from segtrain.config import load_config
    from segtrain.errors import SegtrainError

    path = tmp_path / "a.yaml"
    path.write_text("data: {format: voc, root: ., num_classes: 2, classes: [a, b]}\n")
    with pytest.raises(SegtrainError, match=r"a\.yaml with --set data\.augment=.*: key 'data\.augment\[\d\]': .*" + message) as err:
        load_config(path, [f"data.augment={spec}"])
    assert "\n" not in str(err.value)
    path.write_text(f"data: {{format: voc, root: ., num_classes: 2, classes: [a, b], augment: {spec}}}\n")
    with pytest.raises(SegtrainError, match=r"a\.yaml: key 'data\.augment\[\d\]'"):
        load_config(path)


def test_rot90_with_non_square_resize_and_no_crop_is_refused(tmp_path):
    from segtrain.config import load_config
    from segtrain.errors import SegtrainError

    path = tmp_path / "r.yaml"
    path.write_text("data: {format: voc, root: ., num_classes: 2, classes: [a, b], rot90: true, resize: [32, 48]}\n")
    with pytest.raises(SegtrainError, match=r"key 'data\.rot90' needs data\.crop or a square data\.resize"):
        load_config(path)
    assert load_config(path, ["data.crop=[16, 24]"]).data.rot90


@pytest.mark.slow  # TensorFlow import + two passes over the sample dataset: ~13 s on 2 cores
def test_exact_resume_holds_with_every_option_through_the_threaded_pipeline(tmp_path):
    """Per-sample seeds make the tail of an epoch after skip_batches equal to the full epoch's tail."""
    from segtrain.config import from_dict
    from segtrain.data.loading.tf_batches import build_dataset
    from segtrain.data.formats.sample_dataset import SAMPLE_CLASSES, ensure_sample_dataset

    root = ensure_sample_dataset(tmp_path / "sample")
    data = {"format": "voc", "root": str(root), "num_classes": 4, "classes": list(SAMPLE_CLASSES),
            "num_parallel_calls": 4, **EVERY_OPTION}
    config = from_dict({"data": data, "train": {"batch_size": 6, "seed": 11}})
    full = [(i.numpy(), m.numpy()) for i, m in build_dataset(config, "train", True, epoch=2)]
    tail = [(i.numpy(), m.numpy()) for i, m in build_dataset(config, "train", True, epoch=2, skip_batches=7)]
    assert len(full) == 10 and len(tail) == 3
    for (ia, ma), (ib, mb) in zip(full[7:], tail):
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(ma, mb)


def test_a_transform_that_returns_float_images_is_one_error_line():
    """A custom Compose (built in Python, past the config check) that makes floats is refused at the sample."""
    import albumentations as A

    from segtrain.data.transforms.image import augment
    from segtrain.errors import SegtrainError

    image, mask = np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8)
    with pytest.raises(SegtrainError, match="leave out Normalize/ToFloat"):
        augment(A.Compose([A.ToFloat()]), image, mask, seed=0)


# --------------------------------------------------------------------------- data.crop_class_balance


def _rare_patch_pair(rows: int = 100, cols: int = 120):
    """An image whose pixels encode their position, and a mask that is void but for a 3x3 patch of class 2."""
    yy, xx = np.mgrid[:rows, :cols]
    image = np.stack([yy, xx, np.zeros_like(yy)], axis=-1).astype(np.uint8)
    mask = np.full((rows, cols), 255, np.uint8)
    mask[90:93, 2:5] = 2
    return image, mask


def _uniform_share_with_patch(rows: int, cols: int, h: int, w: int) -> float:
    """Reference: the share of all h x w placements that hold a pixel of the patch (enumerated)."""
    _, mask = _rare_patch_pair(rows, cols)
    hits = [(mask[t:t + h, l:l + w] == 2).any() for t in range(rows - h + 1) for l in range(cols - w + 1)]
    return float(np.mean(hits))


@pytest.mark.parametrize("balance", [0.0, 0.5, 1.0])
def test_class_balanced_crops_hold_the_rare_class_as_often_as_drawn(balance):
    image, mask = _rare_patch_pair()
    transform = train_transform(cfg(crop=[32, 32], hflip=False, crop_class_balance=balance))
    uniform = _uniform_share_with_patch(100, 120, 32, 32)  # 0.0265: a uniform crop rarely sees the patch
    n = 400
    hits = 0
    for seed in range(n):
        out_image, out_mask = augment(transform, image, mask, seed=seed)
        top, left = int(out_image[0, 0, 0]), int(out_image[0, 0, 1])  # image and mask cut at the same place
        np.testing.assert_array_equal(out_mask, mask[top:top + 32, left:left + 32])
        hits += bool((out_mask == 2).any())
    expected = balance + (1 - balance) * uniform  # a balanced crop is centred on the patch, so always holds it
    tolerance = 4 * np.sqrt(expected * (1 - expected) / n) + 1e-9
    assert abs(hits / n - expected) <= tolerance, (hits / n, expected)


def test_class_balanced_crops_are_seeded_and_fall_back_to_uniform_on_an_all_void_mask():
    image, mask = _rare_patch_pair()
    transform = train_transform(cfg(crop=[32, 32], hflip=False, crop_class_balance=1.0))
    first = augment(transform, image, mask, seed=7)
    augment(transform, image, mask, seed=8)
    again = augment(transform, image, mask, seed=7)
    np.testing.assert_array_equal(first[0], again[0])
    corners = {augment(transform, image, np.full_like(mask, 255), seed=s)[0][0, 0, :2].tobytes() for s in range(20)}
    assert len(corners) > 10  # no class to centre on: uniform placements, no error
