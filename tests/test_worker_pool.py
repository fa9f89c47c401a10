"""Decode worker processes (``data.decode_processes``): the threads' batches, no TensorFlow in the
workers, one pool across epochs, one-line errors for a bad file or a killed worker, a prompt exit.

Nothing here imports TensorFlow at the top: the workers import this module to unpickle ``ImportedModules``.
"""

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import need_module, sample_config

from segtrain.data.loading import worker_pool
from segtrain.data.loading.numpy_batches import NumpyLoader
from segtrain.data.loading.plans import SampleLoader
from segtrain.data.formats.splits import list_samples
from segtrain.errors import SegtrainError

AUGMENTED = dict(crop=[32, 32], scale=[0.75, 1.5], color_jitter=0.5, hflip=True)
DIED = r"^data\.decode_processes: a decode worker process ended abruptly .*; set data\.decode_processes: 0 to decode on threads$"


@pytest.fixture(autouse=True)
def no_pools_left():
    worker_pool.shutdown_pools()
    yield
    worker_pool.shutdown_pools()


def make_config(root, seed=0, batch_size=4, **data):
    return sample_config(root, train={"batch_size": batch_size, "seed": seed}, **data)


def numpy_source(config, split, training, **kwargs):
    return contextlib.nullcontext(NumpyLoader(config, split, training, **kwargs))


def tf_source(config, split, training, **kwargs):
    from segtrain.data.loading.tf_batches import BatchIterator, build_dataset  # imports TensorFlow: the tf.data variants only

    return BatchIterator(build_dataset(config, split, training, **kwargs).as_numpy_iterator())


SOURCES = pytest.mark.parametrize("source", [numpy_source, tf_source], ids=["numpy", "tf"])


def collect(source, config, split, training, **kwargs):
    with source(config, split, training, **kwargs) as batches:
        return list(batches)


def assert_same(a, b):
    assert len(a) == len(b) > 0
    for (ia, ma), (ib, mb) in zip(a, b):
        assert ia.dtype == ib.dtype == np.float32 and ma.dtype == mb.dtype == np.uint8
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(ma, mb)


def worker_pids() -> list[int]:
    import multiprocessing

    return sorted(p.pid for p in multiprocessing.active_children())


@contextlib.contextmanager
def deadline(seconds: int):
    """A TimeoutError instead of a hang."""
    def expire(*_):
        raise TimeoutError(f"still waiting after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.slow  # two pools of worker processes start: ~7 s each on 2 shared cores
@SOURCES
def test_processes_give_the_threads_batches(sample_root, source):
    data = dict(resize=[30, 45], val_pad_to=8, **AUGMENTED)  # validation: resize + pad, no augmentation
    threads, processes = make_config(sample_root, seed=7, **data), make_config(sample_root, seed=7, decode_processes=2, **data)
    for split, training, kwargs in (("train", True, {"epoch": 1}), ("val", False, {"batch_size": 3})):
        assert_same(collect(source, processes, split, training, **kwargs), collect(source, threads, split, training, **kwargs))
    assert len(worker_pids()) == 4  # one pool for training, one for validation


def test_the_next_epochs_loader_finds_its_workers_running(sample_root):
    config = make_config(sample_root, decode_processes=2, **AUGMENTED)
    list(NumpyLoader(config, "train", True, epoch=0))
    first = worker_pids()
    list(NumpyLoader(config, "train", True, epoch=1))  # a new loader, as the trainer builds one per epoch
    assert len(first) == 2 and worker_pids() == first


class ImportedModules:
    """A loader that decodes and augments a real sample, then answers with the top-level modules of its process."""

    def __init__(self, load):
        self.load = load

    def __call__(self, index, seed):
        self.load(index, seed)
        return np.array(sorted({name.split(".")[0] for name in sys.modules})), None


def test_workers_do_not_import_tensorflow(sample_root):
    need_module("tensorflow")  # loaded in the parent, as on the TensorFlow backend

    config = make_config(sample_root, **AUGMENTED)
    loader = SampleLoader(list_samples(config.data, "train"), config.data, True)
    modules = set(worker_pool.ProcessLoader(ImportedModules(loader), 2)(np.int64(3), np.int64(5))[0])
    assert {"PIL", "albumentations", "segtrain"} <= modules
    assert not modules & {"tensorflow", "keras", "jax"}


def test_a_loader_that_cannot_be_pickled_is_one_error_line():
    with pytest.raises(SegtrainError, match=r"^data\.decode_processes: the sample loader cannot be sent to a worker process "
                                            r"\(.*\); set data\.decode_processes: 0 to decode on threads$"):
        worker_pool.ProcessLoader(lambda index, seed: None, 2)


@pytest.mark.slow  # two pools of worker processes start: ~7 s each on 2 shared cores
@SOURCES
def test_a_killed_worker_is_one_error_line_naming_the_key_and_the_next_loader_works(sample_root, source):
    config = make_config(sample_root, decode_processes=2, **AUGMENTED)
    worker_pool.shutdown_pools()  # earlier tests' kept pools: the only workers running are this loader's
    with deadline(120), pytest.raises(SegtrainError, match=DIED) as info:
        with source(config, "train", True) as batches:
            for i, _ in enumerate(batches):
                if i == 0:
                    os.kill(worker_pids()[0], signal.SIGKILL)
    assert info.value.__cause__ is None and "\n" not in str(info.value)
    with deadline(120):
        assert len(collect(source, config, "train", True)) == 60 // 4


EXIT_SCRIPT = """
    import multiprocessing, sys
    sys.path.insert(0, {tests!r})
    from conftest import need_module, sample_config
    from segtrain.data.loading.batches import numpy_batches
    from segtrain.data.loading.numpy_batches import NumpyLoader

    if __name__ == "__main__":
        config = sample_config({root!r}, train={{"batch_size": 4}}, decode_processes=2, crop=[32, 32])
        if {tf!r}:
            from segtrain.data.loading.tf_batches import build_dataset
            with numpy_batches(build_dataset(config, "train", True), 2) as batches:
                list(batches)
        else:
            batches = iter(NumpyLoader(config, "train", True))  # left open at exit, with samples queued
            next(batches), next(batches)
        print(*(p.pid for p in multiprocessing.active_children()))
"""


@pytest.mark.slow  # a Python process, its worker processes (and TensorFlow) start
@pytest.mark.parametrize("tf", [False, True], ids=["numpy", "tf"])
def test_a_process_with_workers_exits_at_once_and_leaves_none(sample_root, tmp_path, tf):
    script = tmp_path / "run.py"  # a file: spawned workers import the main module of a script
    script.write_text(textwrap.dedent(EXIT_SCRIPT.format(tests=str(Path(__file__).parent), root=str(sample_root), tf=tf)))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=180)
    assert result.returncode == 0, result.stderr
    pids = [int(p) for p in result.stdout.split()]
    assert len(pids) == 2
    alive = [pid for pid in pids if Path(f"/proc/{pid}").exists()]  # the script joined them before it exited
    assert alive == [], f"orphan workers {alive}"
