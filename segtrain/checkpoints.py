"""Crash-safe checkpoints: ``last.keras``, ``best.keras`` and the exact resume state.

Layout of ``<run>/checkpoints/``:

- ``last.keras`` / ``best.keras``: plain Keras files (``keras.models.load_model`` opens
  them without custom objects); for evaluate, predict and export.
- ``resume-<step>.npz``: every model variable (weights, BatchNorm statistics, dropout
  seed-generator states) and every optimizer variable (slots, iteration counter, which is
  also the learning-rate schedule position; loss scale under mixed_float16).
- ``state.json``: the ``LoopState`` (epoch, batch within the epoch, global step, best
  mIoU, history, ...) and the name of the resume file it belongs to.
- ``state-previous.json`` and the ``previous-<step>.keras`` and resume file it names: the
  committed generation before the newest, kept until the newest is vouched for (see
  ``CheckpointStore``).

Every file is written to a temporary name and moved into place with ``os.replace``;
``state.json`` is written last and is the commit point, so a kill at any moment leaves a
consistent (older or newer) checkpoint, never a torn one.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import keras
import numpy as np

from segtrain.errors import SegtrainError
from segtrain.io_utils import atomic_write, fsync_dir, temporary_path, write_json

STATE = "state.json"
RESUME_GLOB = "resume-*.npz"
PREVIOUS_GLOB = "previous-*.keras"


def save_keras(model: keras.Model, path: Path) -> None:
    """Atomic ``model.save`` (Keras insists on a ``.keras`` file name, so the temp name keeps it)."""
    atomic_write(path, lambda tmp: model.save(tmp), suffix=".keras")


@dataclass
class LoopState:
    """Where the training loop is; ``state.json`` holds it (with the name of its resume file)."""

    epoch: int = 0  # epochs completed
    batch: int = 0  # batches done in the current epoch
    step: int = 0  # global step
    loss_sum: float = 0.0  # sum of the current epoch's batch losses
    best_miou: float | None = None  # val mIoU of the best epoch
    best_epoch: int | None = None  # the epoch (1-based) of best.keras
    best_score: float | None = None  # its value of train.best_metric (segtrain.best_checkpoint)
    history: list[dict] = field(default_factory=list)  # one row per completed epoch
    done: bool = False
    total_steps: int | None = None  # the run length it was trained towards (absent in older runs)
    first_loss: float | None = None  # loss of the first step: the reference for divergence
    stopping_best: float | None = None  # train.early_stopping: best value of its metric so far
    stopping_epoch: int | None = None  # ... the epoch (1-based) that reached it
    stopping_wait: int = 0  # ... validations since then without an improvement
    stopped_by: str | None = None  # why the run ended before its length (early stopping, a callback)
    time_budget: dict | None = None  # train.time_budget: the planned step count and what it was planned from

    @classmethod
    def from_json(cls, data: dict) -> "LoopState":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_json(self) -> dict:
        return asdict(self)


class CheckpointStore:
    """Writes and reads the checkpoints of one run folder; the only code that knows their layout.

    A checkpoint is committed only if every model and optimizer variable is finite. The
    committed generation before the newest is kept (``state-previous.json``, written last
    for it, names its ``previous-<step>.keras`` and resume file), because the newest one is
    vouched for only by the loss of the step after it: when that loss is NaN or has
    exploded, the trainer calls ``discard_newest`` and the previous, verified checkpoint is
    committed again.
    """

    def __init__(self, run_dir: str | os.PathLike):
        self.dir = Path(run_dir) / "checkpoints"

    @property
    def last(self) -> Path:
        return self.dir / "last.keras"

    @property
    def best(self) -> Path:
        return self.dir / "best.keras"

    @property
    def state_file(self) -> Path:
        return self.dir / STATE

    @property
    def _previous_state(self) -> Path:
        return self.dir / "state-previous.json"

    def clear_resume_state(self) -> None:
        """Forget the resumable state (a new run starts in this folder); model files stay until overwritten."""
        for old in [self.state_file, self._previous_state, *self.dir.glob(RESUME_GLOB), *self.dir.glob(PREVIOUS_GLOB)]:
            old.unlink(missing_ok=True)

    def save(self, model: keras.Model, optimizer: keras.optimizers.Optimizer, state: LoopState) -> None:
        """Write resume arrays, ``last.keras`` and finally ``state.json`` (the commit point).

        Raises ``NonFiniteCheckpoint`` (and writes nothing) when a variable is NaN or infinite.
        An ``OSError`` (disk full, folder gone) becomes a ``SegtrainError``; the previously
        committed checkpoint is then still intact.
        """
        arrays = {**self._finite_arrays("m", model.variables), **self._finite_arrays("o", optimizer.variables)}
        name = f"resume-{int(state.step):08d}.npz"

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)

        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            atomic_write(self.dir / name, write)
            committed = self._raw_state()
            if committed is not None and self.last.is_file() and committed.get("resume_file") != name:
                # The previous generation: its model under a name of its own, then its state (naming that model).
                previous_model = f"previous-{int(committed['step']):08d}.keras"
                _link_over(self.last, self.dir / previous_model)
                write_json(self._previous_state, {**committed, "model_file": previous_model})
            save_keras(model, self.last)
            write_json(self.state_file, {**state.to_json(), "resume_file": name})
        except OSError as err:
            then = "continue with --resume" if self.state_file.is_file() else "start the run again"
            raise SegtrainError(
                f"{self.dir}: could not save the checkpoint of step {state.step} ({err.strerror or err}); nothing "
                f"was lost ({self.describe_committed()}): free space or fix the folder, then {then}"
            ) from None
        self._remove_unreferenced_files()

    def _finite_arrays(self, prefix: str, variables: list) -> dict[str, np.ndarray]:
        """``{prefix<i>: value}``; ``NonFiniteCheckpoint`` names the first variable holding NaN or infinity."""
        arrays = {}
        for i, var in enumerate(variables):
            value = np.asarray(var.numpy())
            if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
                raise NonFiniteCheckpoint(f"{var.path}: NaN or infinite values, not saved ({self.describe_committed()})")
            arrays[f"{prefix}{i}"] = value
        return arrays

    def discard_newest(self) -> None:
        """Commit the previous generation again (the newest checkpoint produced a NaN or exploded loss).

        Without a previous generation, the resume state and ``last.keras`` are removed.
        """
        previous = self._read_json(self._previous_state)
        model = self.dir / str((previous or {}).get("model_file", ""))
        if previous is not None and model.is_file():
            os.replace(self._previous_state, self.state_file)  # the commit point first
            os.replace(model, self.last)
        else:
            for path in (self.state_file, self.last, self._previous_state):
                path.unlink(missing_ok=True)
        fsync_dir(self.dir)
        self._remove_unreferenced_files()

    def _remove_unreferenced_files(self) -> None:
        """Resume files and previous models that neither state file names (left by a kill or a discard)."""
        keep = set()
        for path in (self.state_file, self._previous_state):
            data = self._read_json(path) or {}
            keep.update(str(data.get(key)) for key in ("resume_file", "model_file"))
        for old in [*self.dir.glob(RESUME_GLOB), *self.dir.glob(PREVIOUS_GLOB)]:
            if old.name not in keep:
                old.unlink(missing_ok=True)

    @staticmethod
    def _read_json(path: Path) -> dict | None:
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def save_best(self, model: keras.Model) -> None:
        self._finite_arrays("m", model.variables)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            save_keras(model, self.best)
        except OSError as err:
            raise SegtrainError(f"{self.best}: could not save the best model ({err.strerror or err}); "
                                "free space or fix the folder, then continue with --resume") from None

    def _raw_state(self) -> dict | None:
        if not self.state_file.is_file():
            return None
        try:
            return json.loads(self.state_file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise SegtrainError(f"{self.state_file}: unreadable resume state; delete the run folder or drop --resume") from None

    def load_state(self) -> LoopState | None:
        """The committed loop state, or None when this folder holds none."""
        raw = self._raw_state()
        return None if raw is None else LoopState.from_json(raw)

    def describe_committed(self) -> str:
        """Which checkpoint a user can go back to, in words (for error messages)."""
        state = self.load_state() if self.state_file.is_file() else None
        if state is None or not self.last.is_file():
            return "no good checkpoint exists yet"
        return f"the last good checkpoint is {self.last} (step {state.step})"

    def restore(self, model: keras.Model, optimizer: keras.optimizers.Optimizer) -> LoopState:
        """Load the committed state into ``model`` and ``optimizer`` (built here if needed)."""
        raw = self._raw_state()
        if raw is None:
            raise SegtrainError(f"{self.state_file}: nothing to resume; train without --resume first")
        path = self.dir / str(raw.get("resume_file", ""))
        if not optimizer.built:
            optimizer.build(model.trainable_variables)
        try:
            with np.load(path) as data:
                model_values = [data[f"m{i}"] for i in range(sum(k.startswith("m") for k in data.files))]
                optimizer_values = [data[f"o{i}"] for i in range(sum(k.startswith("o") for k in data.files))]
        except FileNotFoundError:
            raise SegtrainError(f"{path}: the resume file named by {self.state_file} is missing; the run cannot "
                                "continue exactly: start it again without --resume (or in a new output_dir)") from None
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as err:
            raise SegtrainError(f"{path}: the resume file is damaged ({err}); start the run again without "
                                "--resume (or in a new output_dir)") from None
        _assign(model.variables, model_values, path)
        _assign(optimizer.variables, optimizer_values, path)
        return LoopState.from_json(raw)


def _link_over(source: Path, target: Path) -> None:
    """Make ``target`` another name of ``source``'s file, atomically (a copy where links are unsupported).

    A ``target`` that already is that file (a run killed while writing ``last.keras`` left them linked) is
    left alone: renaming a link onto another name of the same file is a no-op that keeps the temporary.
    """
    if target.exists() and os.path.samefile(source, target):
        return
    tmp = temporary_path(target)
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)


class NonFiniteCheckpoint(SegtrainError):
    """A checkpoint was refused because a variable holds NaN or infinity."""


def _assign(variables: list, values: list[np.ndarray], path: Path) -> None:
    """Assign the saved values in order; a mismatch names the first variable that differs and both shapes."""
    shapes = [tuple(v.shape) for v in variables]
    if shapes != [v.shape for v in values]:
        i = next((i for i, (a, b) in enumerate(zip(shapes, values)) if a != b.shape), min(len(shapes), len(values)))
        what = (f"variable {variables[i].path} has shape {values[i].shape} there but {shapes[i]} in this model"
                if i < min(len(shapes), len(values)) else f"it holds {len(values)} variables, this model {len(shapes)}")
        raise SegtrainError(
            f"{path}: the checkpoint does not fit this model/optimizer ({what}); resume with the config the run "
            "started with, or use a new output_dir"
        )
    for var, value in zip(variables, values):
        var.assign(value)
