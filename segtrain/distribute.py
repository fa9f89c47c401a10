"""tf.distribute strategies for ``train.distribute`` and a launcher for local multi-worker runs.

``multi_worker`` reads the cluster from ``TF_CONFIG`` (set by the user, a cluster manager,
or ``launch_local_workers``); the chief (task ``chief``, or ``worker`` 0 when there is no
chief) is the only one that writes checkpoints and logs.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

from segtrain.errors import SegtrainError


def make_strategy(kind: str):
    """``none`` -> the default (single-device) tf.distribute strategy; ``mirrored``; ``multi_worker``."""
    import tensorflow as tf  # tf.distribute: TensorFlow runs only

    if kind == "none":
        return tf.distribute.get_strategy()
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy()
    if kind == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise SegtrainError(
                "train.distribute: multi_worker needs the TF_CONFIG environment variable; set it, "
                "or start local workers with `segtrain train --workers N`"
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise SegtrainError(f"train.distribute: unknown value {kind!r}; use none, mirrored or multi_worker")


def is_chief() -> bool:
    """True unless ``TF_CONFIG`` names this process as a non-chief task."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return True
    task = json.loads(raw).get("task", {})
    kind, index = task.get("type", "worker"), int(task.get("index", 0))
    has_chief = "chief" in json.loads(raw).get("cluster", {})
    return kind == "chief" or (kind == "worker" and index == 0 and not has_chief)


def free_ports(n: int) -> list[int]:
    """``n`` currently free TCP ports on 127.0.0.1."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def launch_local_workers(n: int, train_argv: list[str]) -> int:
    """Run ``segtrain train <train_argv> --set train.distribute=multi_worker`` as ``n`` local workers.

    Each worker gets a ``TF_CONFIG`` naming all ``n`` on 127.0.0.1; worker 0 is the chief.
    Returns the first non-zero exit code, or 0 when all succeed.
    """
    if n < 1:
        raise SegtrainError(f"--workers: must be at least 1, got {n}")
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(n)]}
    procs = []
    for index in range(n):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        cmd = [sys.executable, "-m", "segtrain", "train", *train_argv, "--set", "train.distribute=multi_worker"]
        procs.append(subprocess.Popen(cmd, env=env, stdout=None if index == 0 else subprocess.DEVNULL))
    codes = [p.wait() for p in procs]
    return next((c for c in codes if c), 0)
