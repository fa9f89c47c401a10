"""NumPy loader: the tf.data pipeline's batches, batch for batch, without importing TensorFlow."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import sample_config
from PIL import Image

from segtrain.data.loading.numpy_batches import NumpyLoader
from segtrain.errors import SegtrainError

AUGMENTED = dict(crop=[32, 32], scale=[0.75, 1.5], color_jitter=0.5, hflip=True)


@pytest.fixture(scope="module")
def root(sample_root) -> Path:
    return sample_root


def make_config(root, seed=0, batch_size=4, **data):
    return sample_config(root, train={"batch_size": batch_size, "seed": seed}, **data)


def tf_batches(config, split, training, **kwargs):
    from segtrain.data.loading.tf_batches import build_dataset

    return [(image.numpy(), mask.numpy()) for image, mask in build_dataset(config, split, training, **kwargs)]


def assert_same(a, b):
    assert len(a) == len(b)
    for (ia, ma), (ib, mb) in zip(a, b):
        assert ia.dtype == ib.dtype == np.float32 and ma.dtype == mb.dtype == np.uint8
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(ma, mb)


def test_import_and_iteration_never_touch_tensorflow(root):
    """As on a machine without TensorFlow: importing it is made to fail, and the loader still runs."""
    script = textwrap.dedent(f"""
        import sys
        sys.modules["tensorflow"] = None  # `import tensorflow` now raises ImportError
        from segtrain.config import from_dict
        from segtrain.data.loading.numpy_batches import NumpyLoader
        config = from_dict({{"data": {{"format": "voc", "root": {str(root)!r}, "num_classes": 4,
                                       "classes": ["background", "a", "b", "c"], "crop": [16, 16]}},
                            "train": {{"batch_size": 5}}}})
        images, masks = next(iter(NumpyLoader(config, "train", True, workers=2)))
        assert images.shape == (5, 16, 16, 3) and masks.shape == (5, 16, 16), (images.shape, masks.shape)
        loaded = [name for name, module in sys.modules.items() if module is not None]
        print(sorted(name for name in loaded if name.split(".")[0] in ("tensorflow", "keras")))
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_training_batches_equal_the_tf_pipeline_over_two_epochs(root):
    config = make_config(root, seed=7, num_parallel_calls=3, **AUGMENTED)
    for epoch in (0, 1):
        loader = NumpyLoader(config, "train", True, epoch=epoch, workers=3)
        ours = list(loader)
        assert len(ours) == len(loader) == 60 // 4
        assert ours[0][0].shape == (4, 32, 32, 3)
        assert_same(ours, tf_batches(config, "train", True, epoch=epoch))
    assert not np.array_equal(list(NumpyLoader(config, "train", True, epoch=0))[0][0], ours[0][0])


def test_skip_batches_is_the_tail_of_the_epoch(root):
    config = make_config(root, seed=3, **AUGMENTED)
    full = list(NumpyLoader(config, "train", True, epoch=1))
    for k in (1, 13, 15, 20):
        tail = NumpyLoader(config, "train", True, epoch=1, skip_batches=k)
        assert len(tail) == max(0, 15 - k)
        assert_same(list(tail), full[k:])
    val = list(NumpyLoader(config, "val", False, batch_size=3))
    assert_same(list(NumpyLoader(config, "val", False, batch_size=3, skip_batches=5)), val[5:])


def test_validation_resize_and_pad_equal_the_tf_pipeline(root):
    config = make_config(root, resize=[30, 45], val_pad_to=8, **AUGMENTED)  # augmentation must not apply
    ours = list(NumpyLoader(config, "val", False, batch_size=3))
    assert len(ours) == 7 and ours[-1][0].shape == (2, 32, 48, 3)  # 20 files: the last batch is kept, short
    assert (ours[0][1][:, 30:] == 255).all() and (ours[0][1][:, :, 45:] == 255).all()
    assert_same(ours, tf_batches(config, "val", False, batch_size=3))


def test_samples_of_different_sizes_are_padded_like_padded_batch(tmp_path):
    folder = tmp_path / "mixed"
    for split, sizes in {"train": [(5, 7), (9, 4), (6, 6), (3, 8)], "val": [(5, 7), (9, 4), (2, 2)]}.items():
        (folder / split / "images").mkdir(parents=True)
        (folder / split / "masks").mkdir(parents=True)
        for i, (h, w) in enumerate(sizes):
            Image.fromarray(np.full((h, w, 3), 100 + i, np.uint8)).save(folder / split / "images" / f"{i}.png")
            Image.fromarray(np.full((h, w), i % 4, np.uint8), mode="L").save(folder / split / "masks" / f"{i}.png")
    config = make_config(folder, batch_size=3, format="folders", image_dir="images", mask_dir="masks", hflip=False)
    val = list(NumpyLoader(config, "val", False, batch_size=2))
    assert [b[0].shape for b in val] == [(2, 9, 7, 3), (1, 2, 2, 3)]
    expected = np.full((2, 9, 7), 255, np.uint8)
    expected[0, :5, :7] = 0
    expected[1, :9, :4] = 1
    np.testing.assert_array_equal(val[0][1], expected)
    np.testing.assert_array_equal(val[0][0][..., 0], np.select([expected == 0, expected == 1], [100, 101], 0))
    assert_same(val, tf_batches(config, "val", False, batch_size=2))
    train = list(NumpyLoader(config, "train", True, epoch=2))  # no crop: padded training batches, remainder dropped
    assert len(train) == 1
    assert_same(train, tf_batches(config, "train", True, epoch=2))


def test_cache_decodes_once_and_changes_nothing(root, monkeypatch):
    import dataclasses

    import segtrain.data.loading.plans as samples_module
    from segtrain.data.formats import FORMATS

    plain = make_config(root, **AUGMENTED)
    expected = [list(NumpyLoader(plain, "train", True, epoch=e)) for e in (0, 1)]
    calls = []
    fmt = FORMATS[plain.data.format]
    monkeypatch.setitem(FORMATS, fmt.name, dataclasses.replace(fmt, read=lambda *a: calls.append(a[0].image) or fmt.read(*a)))
    monkeypatch.setattr(samples_module, "_DECODED", {})
    cached = make_config(root, cache=True, **AUGMENTED)
    for e in (0, 1):
        assert_same(list(NumpyLoader(cached, "train", True, epoch=e)), expected[e])
    assert len(calls) == len(set(calls)) == 60


@pytest.mark.parametrize("decode_processes", [0, 2])
def test_errors_are_the_pipelines_one_line_segtrain_errors(tmp_path, root, decode_processes):
    import tensorflow as tf

    from segtrain.data.loading.tf_batches import build_dataset, data_error

    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    bad = copy / "SegmentationClass" / "sample_0061.png"
    bad.write_bytes(bad.read_bytes()[:50])
    config = make_config(copy, decode_processes=decode_processes)
    with pytest.raises(SegtrainError) as ours:
        list(NumpyLoader(config, "val", False, batch_size=2))
    with pytest.raises(tf.errors.OpError) as theirs:
        list(build_dataset(config, "val", False, batch_size=2))
    message = str(ours.value)
    assert message.startswith(str(bad)) and "\n" not in message
    assert ours.value.__cause__ is None  # no worker's traceback attached
    assert message == str(data_error(theirs.value))
    with pytest.raises(SegtrainError, match=r"^train\.batch_size: 64 is larger than the 60 samples of split 'train'"):
        NumpyLoader(make_config(root, batch_size=64), "train", True)


def test_stopping_early_leaves_no_worker_threads(root):
    import threading

    loader = NumpyLoader(make_config(root, **AUGMENTED), "train", True, workers=3)
    batches = iter(loader)
    next(batches)
    batches.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("segtrain-loader")]


def test_cache_decodes_a_rewritten_mask_again(tmp_path, monkeypatch):
    """data.cache keys on the files as they are on disk: a mask fixed and saved in the same process
    (a notebook) reaches the next epoch's loader instead of the cached old one."""
    import segtrain.data.loading.plans as samples_module
    from segtrain.data.formats.sample_dataset import ensure_sample_dataset
    from segtrain.data.formats.splits import list_samples

    monkeypatch.setattr(samples_module, "_DECODED", {})
    config = make_config(ensure_sample_dataset(tmp_path / "sample"), cache=True)
    first = list(NumpyLoader(config, "val", False))
    mask = list_samples(config.data, "val")[0].mask
    im = Image.open(mask)
    Image.fromarray(np.zeros_like(np.asarray(im)), mode="P").save(mask)  # every pixel class 0
    stat = mask.stat()
    os.utime(mask, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a second later, whatever the clock's resolution
    again = list(NumpyLoader(config, "val", False))
    assert (first[0][1] != 0).any() and (again[0][1] == 0).all()


@pytest.mark.parametrize("fixed_shape", [True, False])
def test_batches_start_on_64_byte_boundaries(fixed_shape):
    """tf.numpy_function shares an aligned batch with its tensor and copies one that is not;
    the batch values are the samples' (cast, and padded with 0 / void when sizes differ)."""
    from segtrain.data.loading.plans import collate

    rng = np.random.default_rng(0)
    sizes = [(9, 11)] * 3 if fixed_shape else [(9, 11), (7, 13), (5, 5)]
    pairs = [(rng.integers(0, 256, (*s, 3), dtype=np.uint8), rng.integers(0, 4, s, dtype=np.uint8)) for s in sizes]
    for _ in range(20):  # many allocations: NumPy's own start 16 or 32 bytes past a boundary
        images, masks = collate(pairs, fixed_shape)
        assert images.ctypes.data % 64 == 0 and masks.ctypes.data % 64 == 0
    assert images.dtype == np.float32 and images.flags.c_contiguous and masks.flags.c_contiguous
    for i, (image, mask) in enumerate(pairs):
        h, w = mask.shape
        np.testing.assert_array_equal(images[i, :h, :w], image.astype(np.float32))
        np.testing.assert_array_equal(masks[i, :h, :w], mask)
        assert (images[i, h:] == 0).all() and (images[i, :, w:] == 0).all()
        assert (masks[i, h:] == 255).all() and (masks[i, :, w:] == 255).all()
