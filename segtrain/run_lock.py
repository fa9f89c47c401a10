"""One training run per output folder: an exclusive lock on ``<run>/.lock`` while it runs.

The lock is ``fcntl.flock`` on an open file, so the kernel drops it when its process ends
in any way (SIGKILL included): a killed run never leaves a lock that blocks ``--resume``
or a new run. The file holds the holder's pid, host and start time, for the message the
second run prints. Holding the lock also makes it safe to delete the temporaries
(``segtrain.io_utils.remove_stale_temporaries``) that dead processes left behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from pathlib import Path

from segtrain.errors import SegtrainError

LOCK_NAME = ".lock"


class RunLock:
    """``with RunLock(run_dir):`` holds the run folder for this process (created if missing)."""

    def __init__(self, run_dir: str | os.PathLike):
        self.dir = Path(run_dir)
        self.path = self.dir / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise SegtrainError(
                f"output_dir: cannot write to {self.dir} ({err.strerror or err}); choose another output_dir"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise SegtrainError(
                f"output_dir: {self.dir} is in use by another training run ({holder}); wait for it, stop it, "
                "or choose another output_dir"
            ) from None
        os.ftruncate(fd, 0)
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, started {started}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the lock
            self._fd = None


