"""Crash-safe checkpoints: ``last.keras``, ``best.keras`` and the exact resume state.

Layout of ``<run>/checkpoints/``:

- ``last.keras`` / ``best.keras``: plain Keras files (``keras.models.load_model`` opens
  them without custom objects); for evaluate, predict and export.
- ``resume-<step>.npz``: every model variable (weights, BatchNorm statistics, dropout
  seed-generator states) and every optimizer variable (slots, iteration counter, which is
  also the learning-rate schedule position; loss scale under mixed_float16).
- ``state.json``: epoch, batch within the epoch, global step, best mIoU, history, and the
  name of the resume file it belongs to.

Every file is written to a temporary name and moved into place with ``os.replace``;
``state.json`` is written last and is the commit point, so a kill at any moment leaves a
consistent (older or newer) checkpoint, never a torn one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import keras
import numpy as np

from segtrain.errors import SegtrainError
from segtrain.io_utils import atomic_write, write_json

STATE = "state.json"


def save_keras(model: keras.Model, path: Path) -> None:
    """Atomic ``model.save`` (Keras insists on a ``.keras`` file name, so the temp name keeps it)."""
    atomic_write(path, lambda tmp: model.save(tmp), suffix=".keras")


class CheckpointStore:
    """Writes and reads the checkpoints of one run folder."""

    def __init__(self, run_dir: str | os.PathLike):
        self.dir = Path(run_dir) / "checkpoints"

    @property
    def last(self) -> Path:
        return self.dir / "last.keras"

    @property
    def best(self) -> Path:
        return self.dir / "best.keras"

    def save(self, model: keras.Model, optimizer: keras.optimizers.Optimizer, state: dict) -> None:
        """Write resume arrays, ``last.keras`` and finally ``state.json`` (the commit point)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        name = f"resume-{int(state['step']):08d}.npz"
        arrays = {f"m{i}": np.asarray(v.numpy()) for i, v in enumerate(model.variables)}
        arrays.update({f"o{i}": np.asarray(v.numpy()) for i, v in enumerate(optimizer.variables)})

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)

        atomic_write(self.dir / name, write)
        save_keras(model, self.last)
        write_json(self.dir / STATE, {**state, "resume_file": name})
        for old in self.dir.glob("resume-*.npz"):
            if old.name != name:
                old.unlink(missing_ok=True)

    def save_best(self, model: keras.Model) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        save_keras(model, self.best)

    def load_state(self) -> dict | None:
        path = self.dir / STATE
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            raise SegtrainError(f"{path}: unreadable resume state; delete the run folder or drop --resume") from None

    def restore(self, model: keras.Model, optimizer: keras.optimizers.Optimizer) -> dict:
        """Load the committed state into ``model`` and ``optimizer`` (built here if needed)."""
        state = self.load_state()
        if state is None:
            raise SegtrainError(f"{self.dir / STATE}: nothing to resume; train without --resume first")
        path = self.dir / state["resume_file"]
        if not optimizer.built:
            optimizer.build(model.trainable_variables)
        with np.load(path) as data:
            _assign(model.variables, [data[f"m{i}"] for i in range(sum(k.startswith("m") for k in data.files))], path)
            _assign(optimizer.variables, [data[f"o{i}"] for i in range(sum(k.startswith("o") for k in data.files))], path)
        return state


def _assign(variables: list, values: list[np.ndarray], path: Path) -> None:
    shapes = [tuple(v.shape) for v in variables]
    if shapes != [v.shape for v in values]:
        raise SegtrainError(
            f"{path}: checkpoint holds {len(values)} variables that do not match this model/optimizer "
            f"({len(variables)}); resume with the config the run started with, or use a new output_dir"
        )
    for var, value in zip(variables, values):
        var.assign(value)
