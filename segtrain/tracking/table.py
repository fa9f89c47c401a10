"""The table of loggers: ``runtime.loggers`` names entries of it."""

from __future__ import annotations

import difflib

from segtrain.errors import SegtrainError
from segtrain.tracking.base import Logger
from segtrain.tracking.csv_file import CsvLogger
from segtrain.tracking.mlflow_run import MlflowLogger
from segtrain.tracking.tensorboard_events import TensorBoardLogger
from segtrain.tracking.wandb_run import WandbLogger

LOGGERS: dict[str, type[Logger]] = {cls.name: cls for cls in (CsvLogger, TensorBoardLogger, MlflowLogger, WandbLogger)}


def check_loggers(names: list[str], source: str) -> None:
    """Each name in the table, once; an unknown one is one error line with the closest name."""
    for name in names:
        if name not in LOGGERS:
            close = difflib.get_close_matches(str(name), LOGGERS, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise SegtrainError(f"{source}: key 'runtime.loggers' entries must be among {', '.join(LOGGERS)}, "
                                f"got {name!r}{hint}")
    if len(set(names)) != len(names):
        raise SegtrainError(f"{source}: key 'runtime.loggers' names a logger twice: {names}")
