"""What every logger is handed, and the one set of numbers each logs per epoch and per step."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class RunInfo:
    """A run as loggers see it when it opens; ``resumed_id`` is the logger's run id before a ``--resume``."""

    run_dir: Path
    name: str  # the output folder's name
    experiment: str  # runtime.experiment: the MLflow experiment / W&B project
    params: dict[str, str]  # the resolved config, flattened to dotted keys
    facts: dict[str, str]  # backend, precision, package versions, git commit
    mlflow_uri: str | None = None
    resumed_id: str | None = None


@dataclass
class Picture:
    """An image of a validation (confusion matrix, a prediction strip), in memory and as a PNG in the run folder."""

    tag: str  # e.g. "val/confusion_matrix", "val/prediction_0"
    array: np.ndarray  # (H, W, 3) uint8
    path: Path  # the PNG, under run_dir/pictures/


class Logger:
    """One place a run goes; every hook is a no-op unless a logger needs it.

    ``remote``: its failures are one warning line and the logger is dropped (a tracking server
    must never cost an epoch); a local logger's failure to write is the run's error.
    """

    name = ""
    remote = False

    def open(self, run: RunInfo) -> str | None:
        """Start (or, with ``run.resumed_id``, continue) the run; returns the id to continue it with."""
        return None

    def step(self, step: int, values: dict[str, float]) -> None:
        """Per-step scalars (``step/loss``, ``step/lr``) at global step ``step``."""

    def epoch(self, history: list[dict]) -> None:
        """The newest epoch row is ``history[-1]`` (the full history lets files be rewritten whole)."""

    def pictures(self, epoch: int, step: int, pictures: list[Picture]) -> None:
        """The images of a validation."""

    def artifact(self, path: Path) -> None:
        """A run-folder file (config.yaml, curves.png) to keep with the run; refreshed when sent again."""

    def close(self, status: str) -> None:
        """``status``: FINISHED, KILLED (a stop signal) or FAILED."""


def epoch_scalars(row: dict) -> dict[str, float]:
    """The numbers of an epoch row every logger records: loss, lr, val metrics, per-class IoU, throughput."""
    keys = ("loss", "lr", "val_miou", "val_pixel_accuracy", "val_mean_accuracy", "seconds", "images_per_second",
            "data_wait")
    values = {key: row.get(key) for key in keys}
    values.update({f"val_iou/{name}": v for name, v in (row.get("val_per_class_iou") or {}).items()})
    return {key: float(v) for key, v in values.items() if v is not None and not math.isnan(v)}
