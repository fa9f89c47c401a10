"""The tf.data pipeline's kept decode threads (segtrain.data.loading.thread_pool)."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from segtrain.data.loading.thread_pool import ThreadLoader


def test_samples_come_back_in_the_order_submitted_with_errors_as_raised():
    loader = ThreadLoader(lambda index, seed: (np.full(2, index), np.full(2, seed)), 3)
    futures = [loader.submit(np.int64(i), np.int64(10 * i)) for i in range(20)]
    for i, future in enumerate(futures):
        image, mask = loader.result(future)
        assert image.tolist() == [i, i] and mask.tolist() == [10 * i, 10 * i]

    def fail(index, seed):
        raise ValueError(f"bad sample {index}")

    failing = ThreadLoader(fail, 3)
    with pytest.raises(ValueError, match="^bad sample 4$"):
        failing.result(failing.submit(np.int64(4), np.int64(0)))


def test_a_forked_child_decodes_on_threads_of_its_own():
    """The parent's pool threads do not survive a fork: the child must start its own, not queue
    jobs for threads that are not there (it would wait forever)."""
    script = textwrap.dedent("""
        import os, signal
        import numpy as np
        from segtrain.data.loading.thread_pool import ThreadLoader
        loader = ThreadLoader(lambda index, seed: (np.full(1, index), np.full(1, seed)), 2)
        assert loader.result(loader.submit(1, 2))[0][0] == 1  # the parent's pool is running
        pid = os.fork()
        if pid == 0:
            signal.alarm(20)  # a hang ends the child with SIGALRM
            os._exit(0 if loader.result(loader.submit(3, 4))[0][0] == 3 else 1)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status))
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0"
