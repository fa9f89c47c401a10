"""tf.data pipeline: batches, reproducibility, exact resume, epoch order, validation padding, streamed errors."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path

import numpy as np
import pytest
from conftest import sample_config
import tensorflow as tf
from PIL import Image

from segtrain.data.formats.decode import read_image, read_mask
from segtrain.data.loading.tf_batches import build_dataset, data_error, steps_per_epoch
from segtrain.data.formats.splits import iter_labels
from segtrain.data.formats.splits import list_samples


@pytest.fixture(scope="module")
def root(sample_root) -> Path:
    return sample_root


def make_config(root, seed=0, batch_size=4, **data):
    return sample_config(root, train={"batch_size": batch_size, "seed": seed}, **data)


AUGMENTED = dict(crop=[32, 32], scale=[0.75, 1.5], color_jitter=0.5, hflip=True)


def collect(ds):
    return [(image.numpy(), mask.numpy()) for image, mask in ds]


def assert_same(a, b):
    assert len(a) == len(b)
    for (ia, ma), (ib, mb) in zip(a, b):
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(ma, mb)


def test_training_batches_have_the_contract_types(root):
    config = make_config(root, **AUGMENTED)
    ds = build_dataset(config, "train", True)
    assert ds.element_spec[0].shape.as_list() == [4, 32, 32, 3] and ds.element_spec[0].dtype == tf.float32
    assert ds.element_spec[1].shape.as_list() == [4, 32, 32] and ds.element_spec[1].dtype == tf.uint8
    batches = collect(ds)
    assert len(batches) == 60 // 4 == steps_per_epoch(config) == int(ds.cardinality())
    images = np.concatenate([b[0] for b in batches])
    masks = np.concatenate([b[1] for b in batches])
    assert images.min() >= 0 and images.max() <= 255 and images.max() > 1  # raw pixels, not normalised
    assert set(np.unique(masks).tolist()) <= {0, 1, 2, 3, 255}


def test_autotuning_is_off_so_an_epochs_iterator_dies_at_once(root):
    # An autotuned iterator's destructor waits for the tuning thread's sleep (up to 20 s): epochs that
    # ended 20-41 s after their pipeline started stalled until 41 s (benchmarks/bench_epoch_end.py).
    for training in (True, False):
        options = build_dataset(make_config(root), "train" if training else "val", training).options()
        assert options.autotune.enabled is False and options.deterministic is True


def test_same_seed_same_batches_other_seed_differs(root):
    a = collect(build_dataset(make_config(root, seed=7, **AUGMENTED), "train", True, epoch=2))
    b = collect(build_dataset(make_config(root, seed=7, **AUGMENTED), "train", True, epoch=2))
    c = collect(build_dataset(make_config(root, seed=8, **AUGMENTED), "train", True, epoch=2))
    assert_same(a, b)
    assert not np.array_equal(a[0][0], c[0][0])


def test_resume_skip_batches_equals_tail_of_the_epoch(root):
    config = make_config(root, seed=3, **AUGMENTED)
    full = collect(build_dataset(config, "train", True, epoch=1))
    for k in (1, 6):
        assert_same(collect(build_dataset(config, "train", True, epoch=1, skip_batches=k)), full[k:])
    # repeat: resuming mid-epoch 1 continues into epoch 2 exactly as a fresh epoch-2 pass
    epoch2 = collect(build_dataset(config, "train", True, epoch=2))
    resumed = collect(build_dataset(config, "train", True, epoch=1, skip_batches=13, repeat=True).take(2 + 15))
    assert_same(resumed, full[13:] + epoch2)


def test_epoch_order_is_the_seeded_permutation(root):
    """Without augmentation a batch is the decoded files in the order rng((seed, epoch)).permutation(n)."""
    config = make_config(root, seed=5, batch_size=6, hflip=False)
    samples = list_samples(config.data, "train")
    order = np.random.default_rng([5, 3]).permutation(len(samples))
    batches = collect(build_dataset(config, "train", True, epoch=3))
    images = np.concatenate([b[0] for b in batches])
    masks = np.concatenate([b[1] for b in batches])
    for position in (0, 17, 59):
        sample = samples[order[position]]
        np.testing.assert_array_equal(images[position], read_image(sample.image).astype(np.float32))
        np.testing.assert_array_equal(masks[position], read_mask(sample.mask, config.data))
    other_epoch = collect(build_dataset(config, "train", True, epoch=4))
    assert not np.array_equal(batches[0][0], other_epoch[0][0])


def test_validation_in_file_order_and_padded_batches(tmp_path, root):
    config = make_config(root, **AUGMENTED)  # augmentation settings must not touch validation
    samples = list_samples(config.data, "val")
    val = collect(build_dataset(config, "val", False))
    assert len(val) == len(samples) and val[0][0].shape == (1, 64, 64, 3)
    np.testing.assert_array_equal(val[5][0][0], read_image(samples[5].image))
    # images of different sizes in one batch: padded with image 0 / mask 255
    folder = tmp_path / "mixed"
    (folder / "val" / "images").mkdir(parents=True)
    (folder / "val" / "masks").mkdir(parents=True)
    for name, (h, w) in {"a": (5, 7), "b": (9, 4)}.items():
        Image.fromarray(np.full((h, w, 3), 100, np.uint8)).save(folder / "val" / "images" / f"{name}.png")
        Image.fromarray(np.full((h, w), 1, np.uint8), mode="L").save(folder / "val" / "masks" / f"{name}.png")
    mixed = make_config(folder, format="folders", image_dir="images", mask_dir="masks")
    (images, masks), = collect(build_dataset(mixed, "val", False, batch_size=2))
    assert images.shape == (2, 9, 7, 3)
    expected = np.full((2, 9, 7), 255, np.uint8)
    expected[0, :5, :7] = 1
    expected[1, :9, :4] = 1
    np.testing.assert_array_equal(masks, expected)
    np.testing.assert_array_equal(images[..., 0], np.where(expected == 1, 100, 0))


@pytest.mark.parametrize("decode_processes", [0, 2])
def test_bad_file_error_names_the_file(tmp_path, root, decode_processes):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    bad = copy / "SegmentationClass" / "sample_0061.png"
    bad.write_bytes(bad.read_bytes()[:50])
    with pytest.raises(tf.errors.OpError) as info:
        collect(build_dataset(make_config(copy, decode_processes=decode_processes), "val", False))
    err = data_error(info.value)
    assert err is not None and str(err).startswith(str(bad))


def test_iter_masks_streams_every_mask(root):
    config = make_config(root)
    masks = list(iter_labels(config.data, "val"))
    samples = list_samples(config.data, "val")
    assert len(masks) == len(samples)
    np.testing.assert_array_equal(masks[-1], np.asarray(Image.open(samples[-1].mask)))


def test_decoded_cache_gives_the_same_batches_and_decodes_once(root, monkeypatch):
    import dataclasses

    import segtrain.data.loading.plans as samples_module  # the per-sample decoding both loaders share
    from segtrain.data.formats import FORMATS

    plain = make_config(root, **AUGMENTED)
    cached = make_config(root, cache=True, **AUGMENTED)
    expected = [collect(build_dataset(plain, "train", True, epoch=e)) for e in (0, 1)]
    expected_val = collect(build_dataset(plain, "val", False))
    calls = []
    fmt = FORMATS[plain.data.format]
    monkeypatch.setitem(FORMATS, fmt.name, dataclasses.replace(fmt, read=lambda *a: calls.append(a[0].image) or fmt.read(*a)))
    monkeypatch.setattr(samples_module, "_DECODED", {})
    for e in (0, 1):  # a new dataset per epoch, as the trainer builds them
        assert_same(collect(build_dataset(cached, "train", True, epoch=e)), expected[e])
    assert_same(collect(build_dataset(cached, "val", False)), expected_val)
    # 60 training + 20 validation files, each decoded once although two epochs ran.
    assert len(calls) == len(set(calls)) == 80


@pytest.mark.parametrize("decode_processes", [0, 2])
def test_batch_iterator_turns_a_bad_file_into_its_error_and_leaves_no_live_iterator(root, decode_processes):
    """Issue 14.1: an iterator kept alive by the exception's frames until interpreter shutdown hung the
    process there; BatchIterator must have destroyed it (no garbage collection needed) when the error arrives."""
    import gc
    import weakref

    from segtrain.data.loading.tf_batches import BatchIterator
    from segtrain.errors import SegtrainError

    config = make_config(root, num_classes=3, classes=["a", "b", "c"], decode_processes=decode_processes)  # the sample masks hold class 3
    gc.disable()
    try:
        with BatchIterator(build_dataset(config, "train", True)) as batches:
            inner = weakref.ref(batches._iterator)
            with pytest.raises(SegtrainError, match=r"SegmentationClass/.*\.png: mask values 3 .*num_classes") as info:
                for _ in batches:
                    pass
            assert info.value.__context__ is None and info.value.__cause__ is None
            assert inner() is None
    finally:
        gc.enable()


@pytest.mark.parametrize("training", [True, False])
def test_num_parallel_calls_batches_decode_at_once(root, monkeypatch, training):
    """data.num_parallel_calls map calls decode at once, in training (batches of 4) and in
    validation (batches of 1), never more: 3 also on a 2-core machine, whose shared TensorFlow
    pool would run only 2."""
    import threading
    import time

    from segtrain.data.loading.plans import SampleLoader

    decode, lock = SampleLoader.__call__, threading.Lock()
    running, most, names = [0], [0], set()

    def slow_decode(self, index, seed):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
            names.add(threading.current_thread().name)
        time.sleep(0.02)  # long enough for every thread to be inside at once
        try:
            return decode(self, index, seed)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(SampleLoader, "__call__", slow_decode)
    config = make_config(root, num_parallel_calls=3, **AUGMENTED)
    batches = collect(build_dataset(config, "train" if training else "val", training))
    assert len(batches) == (60 // 4 if training else 20)
    assert most[0] == 3 and len(names) >= 3
