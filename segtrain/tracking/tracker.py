"""A run's records fanned out to the loggers of ``runtime.loggers`` (the table in ``table.py``).

The tracker also keeps what the run folder always holds: ``curves.png`` (redrawn each epoch),
``run.log`` notes, the pictures of each validation under ``pictures/epoch-NNNN/`` and, for
loggers with a run of their own (MLflow, W&B), their run ids in ``tracking.json``, so a
``--resume`` continues those runs instead of starting second ones.

A remote logger that fails (a server down or refusing the run) is one warning line on stderr
and in ``run.log``; it is dropped and training goes on. A local file that cannot be written is
the run's one error line (its checkpoint is already saved).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from segtrain.config import Config, to_dict
from segtrain.data.formats.decode import class_names, color_table
from segtrain.data.formats.palette import ColorTable
from segtrain.errors import SegtrainError
from segtrain.io_utils import write_json, write_png
from segtrain.run_log import append_note
from segtrain.tracking.base import Logger, Picture, RunInfo
from segtrain.tracking.curves import plot_curves
from segtrain.tracking.facts import flat_params, run_facts
from segtrain.tracking.pictures import PredictionStrips, confusion_image
from segtrain.tracking.table import LOGGERS

IDS_FILE = "tracking.json"
FAILED = object()  # what a logger's hook "returned" when it failed and the logger was dropped


class RunTracker:
    """Opens the configured loggers for a run folder (chief only; a no-op elsewhere) and sends them each record.

    Args:
        config: the run's config (``runtime.loggers``, ``runtime.log_images``, ...).
        run_dir: the run folder.
        enabled: False on non-chief workers.
        resume: the run continues: loggers continue the runs ``tracking.json`` names.
        backend, precision: facts of the run recorded with it.
        predict: a batch of images -> class indices (for the prediction strips).
        val_batches: ``() ->`` the validation batches (the strips' images are the first ``runtime.log_images``).
    """

    def __init__(self, config: Config, run_dir: str | Path, *, enabled: bool = True, resume: bool = False,
                 backend: str = "", precision: str = "", predict: Callable | None = None,
                 val_batches: Callable | None = None):
        self.dir = Path(run_dir)
        self.enabled = enabled
        self.loggers: list[Logger] = []
        self._pictures: list[Picture] = []
        self._picture_epoch = (0, 0)
        if not enabled:
            return
        self.names = _class_names(config)
        table = _table(config)
        self.strips = (PredictionStrips(val_batches, config.runtime.log_images, table, config.data.num_classes)
                       if config.runtime.log_images and predict and val_batches else None)
        self.predict = predict
        facts = run_facts(backend, precision)
        self.note("; ".join(f"{k} {v}" for k, v in facts.items() if k.startswith(("version.", "git_commit"))))
        ids = self._ids() if resume else {}
        run = RunInfo(self.dir, self.dir.resolve().name, config.runtime.experiment, flat_params(to_dict(config)),
                      facts, config.runtime.mlflow_uri)
        for name in config.runtime.loggers:
            logger = LOGGERS[name]()
            run_id = self._call(logger, "open", replace(run, resumed_id=ids.get(name)))
            if run_id is not FAILED:
                self.loggers.append(logger)
                ids[name] = run_id
        if any(logger.remote for logger in self.loggers) or (self.dir / IDS_FILE).exists():  # a fresh run forgets old ids
            write_json(self.dir / IDS_FILE, {k: v for k, v in ids.items() if v})
        self._each("artifact", self.dir / "config.yaml")

    def _ids(self) -> dict:
        try:
            return json.loads((self.dir / IDS_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def _call(self, logger: Logger, method: str, *args) -> object:
        """One logger's hook; a remote logger that fails is dropped with one warning line (and FAILED returned)."""
        try:
            return getattr(logger, method)(*args)
        except Exception as err:  # noqa: BLE001 - any failure of a tracking service must not stop training
            if not logger.remote:
                if isinstance(err, OSError):
                    raise SegtrainError(f"{self.dir}: could not write the run logs ({err.strerror or err}); the last "
                                        "checkpoint is saved: free space or fix the folder, then continue with --resume") from None
                raise
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
            reason = reason if len(reason) <= 300 else reason[:297] + "..."
            line = f"warning: {logger.name}: {reason}; tracking to {logger.name} is off for this run, training goes on"
            print(line, file=sys.stderr, flush=True)
            self.note(line)
            if logger in self.loggers:
                self.loggers.remove(logger)
            return FAILED

    def _each(self, method: str, *args) -> None:
        for logger in list(self.loggers):
            self._call(logger, method, *args)

    def step(self, step: int, loss: float, lr: float) -> None:
        """A finished training step's loss and learning rate."""
        self._each("step", step, {"step/loss": float(loss), "step/lr": float(lr)})

    def validated(self, epoch: int, step: int, metrics: dict) -> None:
        """Draw a validation's pictures (sent with the epoch's row): the confusion matrix and the prediction strips."""
        if not self.enabled:
            return
        folder = self.dir / "pictures" / f"epoch-{epoch:04d}"
        arrays = {"val/confusion_matrix": confusion_image(metrics["confusion_matrix"], self.names)}
        if self.strips is not None:
            arrays.update({f"val/prediction_{i}": s for i, s in enumerate(self.strips(self.predict))})
        self._pictures = []
        for tag, array in arrays.items():
            path = folder / f"{tag.split('/')[-1]}.png"
            try:
                write_png(path, np.ascontiguousarray(array))
            except OSError as err:
                raise SegtrainError(f"{path}: could not write ({err.strerror or err}); free space or fix the folder, "
                                    "then continue with --resume") from None
            self._pictures.append(Picture(tag, array, path))
        self._picture_epoch = (epoch, step)

    def epoch_end(self, history: list[dict]) -> None:
        """Record the newest entry of ``history``: every logger, ``curves.png``, and the epoch's pictures."""
        if not self.enabled or not history:
            return
        try:
            plot_curves(history, self.dir / "curves.png")
        except OSError as err:
            raise SegtrainError(
                f"{self.dir}: could not write the run logs ({err.strerror or err}); the checkpoint of epoch "
                f"{history[-1]['epoch']} is saved: free space or fix the folder, then continue with --resume"
            ) from None
        self._each("epoch", history)
        if self._pictures:
            self._each("pictures", *self._picture_epoch, self._pictures)
            self._pictures = []
        self._each("artifact", self.dir / "curves.png")

    def note(self, text: str) -> None:
        """A timestamped line in ``run.log``."""
        if self.enabled:
            append_note(self.dir, text)

    def close(self, error: BaseException | None = None) -> None:
        """End every logger's run: FINISHED, KILLED after a stop signal or Ctrl-C, FAILED after an error."""
        status = "FINISHED" if error is None else "KILLED" if _stopped(error) else "FAILED"
        self._each("close", status)
        self.loggers = []


def _stopped(error: BaseException) -> bool:
    return isinstance(error, KeyboardInterrupt) or getattr(error, "exit_code", None) in (130, 143)


def _class_names(config: Config) -> list[str]:
    try:
        return list(class_names(config.data))
    except SegtrainError:
        return [str(i) for i in range(config.data.num_classes)]


def _table(config: Config) -> ColorTable:
    try:
        return color_table(config.data)
    except SegtrainError:
        return ColorTable.generic(config.data.num_classes)
