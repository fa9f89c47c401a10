"""Patch training input for volumes (nifti) and signals (series): batches, determinism, resume, memory, training."""

import math
import os

from collections import OrderedDict

import numpy as np
import pytest

from conftest import need_module
from segtrain.config import from_dict
from segtrain.data.loading.numpy_batches import NumpyLoader
from segtrain.data.loading import patch_plans
from segtrain.data.loading.patch_plans import PatchLoader
from segtrain.data.loading.tf_batches import BatchIterator, build_dataset, steps_per_epoch
from segtrain.data.formats.splits import list_samples
from segtrain.errors import SegtrainError

nib = need_module("nibabel")

SHAPE = (20, 18, 16)
PATCH = [8, 8, 8]


def _volume_cases(root, split, n, seed=0):
    """n cases: two channels, a small two-class lesion at a random place, a brain mask."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        folder = root / split / f"case{i}"
        folder.mkdir(parents=True)
        label = np.zeros(SHAPE, np.float32)
        x, y, z = rng.integers(0, 14, 3)
        label[x : x + 3, y : y + 3, z : z + 2] = 1
        label[x + 1, y + 1, z] = 2
        mask = np.zeros(SHAPE, np.uint8)
        mask[2:-2, 2:-2, 1:-1] = 1
        mask[label > 0] = 1
        image = rng.normal(0, 1, SHAPE + (2,)).astype(np.float32) + label[..., None]
        for name, array in (("t1.nii.gz", image[..., 0]), ("flair.nii.gz", image[..., 1]), ("seg.nii.gz", label), ("brain.nii.gz", mask)):
            nib.save(nib.Nifti1Image(array, np.eye(4)), str(folder / name))


def _nifti_config(root, **overrides):
    data = {"format": "nifti", "root": str(root), "num_classes": 3, "classes": ["bg", "edema", "core"],
            "channels": ["t1.nii.gz", "flair.nii.gz"], "label": "seg.nii.gz", "mask": "brain.nii.gz",
            "patch": PATCH, "patches_per_case": 4, "patch_flip": [0, 1, 2], "patch_rot90": [0, 1],
            "patch_scale": 0.1, "patch_shift": 0.1, "patch_gamma": 0.2, "patch_noise": 0.05, "num_parallel_calls": 2}
    data.update(overrides.pop("data", {}))
    train = {"batch_size": 2, "epochs": 1, "seed": 7, **overrides.pop("train", {})}
    return from_dict({"data": data, "train": train, "output_dir": str(root / "run"), **overrides})


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    root = tmp_path_factory.mktemp("vol")
    _volume_cases(root, "train", 3)
    _volume_cases(root, "val", 1, seed=1)
    return root


def _batches(ds):
    with BatchIterator(ds) as it:
        return [(x.numpy(), y.numpy()) for x, y in it]


def test_volume_batches_have_patch_shapes_and_dtypes(volumes):
    config = _nifti_config(volumes)
    batches = _batches(build_dataset(config, "train", True))
    assert len(batches) == steps_per_epoch(config) == 3 * 4 // 2
    for images, labels in batches:
        assert images.shape == (2, 8, 8, 8, 2) and images.dtype == np.float32
        assert labels.shape == (2, 8, 8, 8) and labels.dtype == np.uint8
        assert set(np.unique(labels)) <= {0, 1, 2, 255}


def test_foreground_oversampling_reaches_the_batches(volumes):
    """fraction 1: every patch holds lesion; fraction 0: uniform patches, most of them without (lesion 18 of 5760 voxels)."""
    def share(fraction):
        config = _nifti_config(volumes, data={"foreground_fraction": fraction, "patches_per_case": 20})
        labels = np.concatenate([y for _, y in _batches(build_dataset(config, "train", True))])
        return np.mean([((p > 0) & (p < 3)).any() for p in labels])

    assert share(1.0) == 1.0
    assert share(0.0) < 0.6


def test_same_seed_and_epoch_same_batches_and_resume_is_the_tail(volumes):
    config = _nifti_config(volumes)
    full = _batches(build_dataset(config, "train", True, epoch=1))
    again = _batches(build_dataset(config, "train", True, epoch=1))
    tail = _batches(build_dataset(config, "train", True, epoch=1, skip_batches=4))
    other = _batches(build_dataset(config, "train", True, epoch=2))
    for (a, b), (c, d) in zip(full, again):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)
    assert len(tail) == len(full) - 4
    for (a, b), (c, d) in zip(full[4:], tail):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)
    assert not all(np.array_equal(a, c) for (a, _), (c, _) in zip(full, other))


def test_numpy_loader_gives_the_tf_data_batches(volumes):
    config = _nifti_config(volumes)
    for training in (True, False):
        tf_batches = _batches(build_dataset(config, "train", training, epoch=3, skip_batches=1))
        np_batches = list(NumpyLoader(config, "train", training, epoch=3, skip_batches=1, workers=2))
        assert len(tf_batches) == len(np_batches)
        for (a, b), (c, d) in zip(tf_batches, np_batches):
            np.testing.assert_array_equal(a, c)
            np.testing.assert_array_equal(b, d)


def test_validation_patches_are_fixed_and_not_augmented(volumes):
    one = _batches(build_dataset(_nifti_config(volumes, train={"seed": 1}), "val", False))
    two = _batches(build_dataset(_nifti_config(volumes, train={"seed": 2}, data={"patch_noise": 0.5}), "val", False))
    assert len(one) == 4 and one[0][0].shape == (1, 8, 8, 8, 2)
    for (a, b), (c, d) in zip(one, two):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)
    # Not augmented: each patch is a window of the z-scored validation case, found by brute force.
    config = _nifti_config(volumes)
    loader = PatchLoader(list_samples(config.data, "val"), config.data, training=False)
    image = loader.case(0).image
    windows = np.lib.stride_tricks.sliding_window_view(image, PATCH, axis=(0, 1, 2))
    for patch, _ in one:
        hits = np.all(np.moveaxis(windows, 3, -1) == patch[0], axis=(3, 4, 5, 6))
        assert hits.any()


def test_each_case_is_decoded_once_per_epoch(volumes, monkeypatch):
    """Memory stays at data.cached_cases decoded cases; with consecutive patches per case, each is read once."""
    import segtrain.data.formats.nifti as nifti

    reads = []
    real = nifti.read_case
    monkeypatch.setattr(nifti, "read_case", lambda case, cfg: reads.append(case.name) or real(case, cfg))
    monkeypatch.setattr(patch_plans, "_shared", OrderedDict())  # no cases decoded by an earlier test
    config = _nifti_config(volumes, data={"cached_cases": 1})
    loader = NumpyLoader(config, "train", True, epoch=0, workers=1)
    assert len(list(loader)) == 6
    assert sorted(reads) == ["case0", "case1", "case2"]
    assert len(loader._load._cache) == 1


def test_every_epochs_pipeline_shares_one_case_cache(volumes, monkeypatch):
    """The trainer builds a pipeline per epoch, and tf.data keeps finished pipelines' loaders alive: with a
    cache per loader every epoch decoded its cases again and kept them (a BRATS run grew ~100 MB an epoch
    until it was killed). One cache per config: three cases, four epochs, three reads, at most three kept."""
    import segtrain.data.formats.nifti as nifti

    monkeypatch.setattr(patch_plans, "_shared", OrderedDict())
    reads = []
    real = nifti.read_case
    monkeypatch.setattr(nifti, "read_case", lambda case, cfg: reads.append(case.name) or real(case, cfg))
    config = _nifti_config(volumes, data={"cached_cases": 3})
    for epoch in range(4):
        assert len(_batches(build_dataset(config, "train", True, epoch=epoch))) == 6
    assert sorted(reads) == ["case0", "case1", "case2"]
    (cache, _), = patch_plans._shared.values()
    assert len(cache) == 3


def test_a_signal_dataset_gives_windows(tmp_path):
    rng = np.random.default_rng(0)
    lines = []
    for i in range(3):
        t = 200 + 20 * i
        np.savetxt(tmp_path / f"s{i}.txt", rng.normal(0, 1, t))
        lines.append(f"s{i},10,{t // 3},{2 * t // 3}")
    (tmp_path / "desc.txt").write_text("\n".join(lines) + "\n")
    config = from_dict({"data": {"format": "series", "root": str(tmp_path), "num_classes": 3, "classes": ["a", "b", "c"],
                                 "label": "desc.txt", "train_split": ".", "val_split": ".", "patch": [64], "patch_flip": [0],
                                 "patch_noise": 0.1},
                        "train": {"batch_size": 4}, "output_dir": str(tmp_path / "run")})
    batches = _batches(build_dataset(config, "train", True))
    assert len(batches) == 3
    for signals, labels in batches:
        assert signals.shape == (4, 64, 1) and signals.dtype == np.float32
        assert labels.shape == (4, 64) and labels.dtype == np.uint8
        # a window of a piecewise-constant labelling (possibly flipped): labels change at most twice, by one
        for row in labels:
            assert np.count_nonzero(np.diff(row.astype(int))) <= 2


@pytest.mark.parametrize(
    "data, message",
    [
        ({"patch_flip": [3]}, "data.patch_flip"),
        ({"patch_rot90": [1, 1]}, "data.patch_rot90"),
        ({"patch_gamma": 1.5}, "data.patch_gamma"),
        ({"patches_per_case": 0}, "data.patches_per_case"),
    ],
)
def test_config_errors(volumes, data, message):
    with pytest.raises(SegtrainError, match=message):
        _nifti_config(volumes, data=data)


def test_a_missing_patch_size_is_an_error(volumes):
    config = _nifti_config(volumes, data={"patch": None})
    with pytest.raises(SegtrainError, match="data.patch: format nifti trains on patches"):
        build_dataset(config, "train", True)


@pytest.mark.slow
@pytest.mark.parametrize("rank", [3, 1])
def test_one_epoch_of_training_on_volumes_and_signals(volumes, tmp_path, rank):
    from segtrain.training import Trainer

    model = {"name": "segnet_basic", "width": 4, "norm": "group"}
    if rank == 3:
        config = _nifti_config(volumes, data={"patch": [16, 16, 16]}, model=model)
    else:
        rng = np.random.default_rng(1)
        for split in ("train", "val"):
            (tmp_path / split).mkdir()
            for i in range(2):
                labels = (np.arange(300) >= 150 + 10 * i).astype(np.int64)
                np.save(tmp_path / split / f"s{i}.npy", rng.normal(0, 1, 300) + 2 * labels)
                np.save(tmp_path / split / f"s{i}.labels.npy", labels)
        config = from_dict({"data": {"format": "series", "root": str(tmp_path), "num_classes": 2, "classes": ["a", "b"],
                                     "label": "{name}.labels.npy", "patch": [64]},
                            "model": model, "train": {"batch_size": 2, "epochs": 1},
                            "output_dir": str(tmp_path / "run")})
    result = Trainer(config, verbose=0).fit()
    assert math.isfinite(result["loss"])
    assert result["miou"] is not None and 0.0 <= result["miou"] <= 1.0


def test_class_statistics_stream_label_volumes(volumes):
    """train.class_weights: median_frequency counts the label volumes (iter_masks), against nibabel."""
    from segtrain.data.formats.splits import iter_labels

    config = _nifti_config(volumes)
    labels = list(iter_labels(config.data, "train"))
    expected = [np.asarray(nib.load(str(volumes / "train" / f"case{i}" / "seg.nii.gz")).dataobj).astype(np.uint8) for i in range(3)]
    assert len(labels) == 3
    for got, want in zip(labels, expected):
        np.testing.assert_array_equal(got, want)


def test_a_split_written_as_a_path_is_a_list_file_next_to_the_config(volumes, tmp_path):
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "mine.txt").write_text("train/case2\ntrain/case0\n")
    (tmp_path / "cfg" / "c.yaml").write_text(
        f"data: {{format: nifti, root: {volumes}, num_classes: 3, classes: [a, b, c], channels: [t1.nii.gz],"
        f" label: seg.nii.gz, patch: [8, 8, 8], train_split: ./mine}}\noutput_dir: {tmp_path / 'run'}\n")
    from segtrain.config import load_config

    config = load_config(tmp_path / "cfg" / "c.yaml")
    assert [c.name for c in list_samples(config.data, "train")] == ["case2", "case0"]


def test_a_rewritten_case_file_is_decoded_again(tmp_path, monkeypatch):
    """The shared case cache is keyed by the files as they are on disk: a label fixed and saved in the
    same process (a notebook) must reach the next loader, not the cached old one."""
    monkeypatch.setattr(patch_plans, "_shared", OrderedDict())
    _volume_cases(tmp_path, "train", 1)
    _volume_cases(tmp_path, "val", 1, seed=1)
    config = _nifti_config(tmp_path)
    cases = list_samples(config.data, "train")
    assert PatchLoader(cases, config.data, True).case(0).label.max() == 2
    seg = tmp_path / "train" / "case0" / "seg.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.float32), np.eye(4)), str(seg))
    stat = seg.stat()
    os.utime(seg, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a second later, whatever the clock's resolution
    assert PatchLoader(cases, config.data, True).case(0).label.max() == 0
