"""tf.data's kept decode threads: samples and errors come back to the call that submitted them, at
least two threads, and a garbage collection that destroys an abandoned iterator never deadlocks.

The deadlock checks run in a child process with a timeout, so that a regression fails here
instead of hanging the suite (a full CI run once hung this way, with a lock-holding pool).
"""

import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from segtrain.data.loading.decode_threads import MIN_THREADS, DecodeThreads
from segtrain.errors import SegtrainError


def pair(index, seed):
    return np.full(2, index), np.full(3, seed)


def test_each_job_returns_its_own_sample():
    threads = DecodeThreads(pair, 3)
    jobs = [threads.submit(np.int64(i), np.int64(100 + i)) for i in range(40)]
    for i, job in enumerate(jobs):
        image, mask = threads.result(job)
        np.testing.assert_array_equal(image, [i, i])
        np.testing.assert_array_equal(mask, [100 + i] * 3)


def test_a_decoding_error_reaches_its_caller_as_is_and_the_threads_go_on():
    def load(index, seed):
        if index == 3:
            raise SegtrainError("a.png: mask values 7 are neither classes nor void")
        return pair(index, seed)

    threads = DecodeThreads(load, 2)
    jobs = [threads.submit(i, i) for i in range(6)]
    with pytest.raises(SegtrainError, match=r"^a\.png: mask values 7 are neither classes nor void$"):
        threads.result(jobs[3])
    assert [int(threads.result(job)[0][0]) for i, job in enumerate(jobs) if i != 3] == [0, 1, 2, 4, 5]
    assert int(threads.result(threads.submit(9, 9))[0][0]) == 9


def test_one_thread_asked_gives_two_that_work_at_once():
    """One decode thread could be the one running a garbage collection that waits for jobs only it can run."""
    assert MIN_THREADS == 2
    meet = threading.Barrier(2, timeout=20)  # broken (an error) unless two jobs run at the same time

    def load(index, seed):
        meet.wait()
        return pair(index, seed)

    threads = DecodeThreads(load, 1)
    assert threads.threads == 2
    jobs = [threads.submit(i, i) for i in range(2)]
    assert [int(threads.result(job)[0][0]) for job in jobs] == [0, 1]


# A training pipeline (A) is abandoned inside a reference cycle while its map calls are in flight
# (slow decoding keeps them there); a validation pipeline (B) then runs, and the garbage collector
# destroys A's iterator from inside B's work, on the thread named by the argument. The destructor
# waits for A's calls, which wait for their samples.
SCRIPT = textwrap.dedent("""
    import gc, sys, threading, time, weakref
    from segtrain.config import from_dict
    from segtrain.data.formats.sample_dataset import SAMPLE_CLASSES
    from segtrain.data.loading import plans, tf_batches
    from segtrain.data.loading.tf_batches import build_dataset

    root, where, calls = sys.argv[1], sys.argv[2], int(sys.argv[3])
    gc.disable()  # the collection happens where this script says, nowhere else

    def config(calls):
        return from_dict({"data": {"format": "voc", "root": root, "num_classes": 4, "classes": list(SAMPLE_CLASSES),
                                   "num_parallel_calls": calls}, "train": {"batch_size": 4, "seed": 0}})

    decode, call, start, pending = plans.SampleLoader.__call__, tf_batches._BatchLoader.__call__, threading.Thread.start, [False]

    def collect_once():
        if pending[0]:
            pending[0] = False
            gc.collect()

    def load(self, index, seed):
        if self.training:
            time.sleep(0.05)  # A's calls stay in flight
        elif where == "decode":
            collect_once()  # on a decode thread, running one of B's samples
        return decode(self, index, seed)

    def batch(self, indices, seeds):
        if self.workers.load.training:  # A's (training) calls: started, not yet submitted, when the collection begins
            time.sleep(0.1)
        return call(self, indices, seeds)

    def start_thread(thread):
        if where == "start" and thread.name.startswith("segtrain-decode"):
            collect_once()  # while B starts its decode threads
        start(thread)

    plans.SampleLoader.__call__ = load
    tf_batches._BatchLoader.__call__ = batch
    threading.Thread.start = start_thread
    a = iter(build_dataset(config(calls), "train", True))
    next(a)
    abandoned = weakref.ref(a)
    cycle = [a]
    cycle.append(cycle)
    del a, cycle
    pending[0] = True
    b = build_dataset(config(calls + 1 if where == "start" else calls), "val", False)
    count = sum(1 for _ in b)
    assert not pending[0] and abandoned() is None, "the collection did not run"
    print("batches", count)
""")


@pytest.mark.parametrize("where,calls", [("decode", 1), ("decode", 2), ("start", 2)])
def test_collecting_an_abandoned_iterator_inside_another_pipeline_does_not_deadlock(sample_root, where, calls):
    try:
        done = subprocess.run([sys.executable, "-c", SCRIPT, str(sample_root), where, str(calls)],
                              capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail(f"deadlock: the pipeline stopped when the garbage collector destroyed an abandoned iterator ({where})")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["batches", "20"]
