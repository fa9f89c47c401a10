"""``train.early_stopping``: stop after ``patience`` validations without an improvement of at least ``min_delta``.

The best value and the count of validations since it live in the ``LoopState`` (``state.json``),
not in a callback, so a killed run resumed with ``--resume`` stops at the epoch the uninterrupted
run stops at. ``best.keras`` stays the checkpoint of the best ``train.best_metric`` (``best_checkpoint.py``).
"""

from __future__ import annotations

import math

from segtrain.checkpoints import LoopState
from segtrain.config import EarlyStoppingConfig


def count_validation(cfg: EarlyStoppingConfig | None, state: LoopState, row: dict) -> str | None:
    """Count the validation in ``row`` (an epoch's log row); returns why the run stops now, or None.

    Every metric it watches is higher-is-better; NaN (no class present) never improves.
    """
    if cfg is None or cfg.metric not in row:  # off, or no validation this epoch
        return None
    value, best = row[cfg.metric], state.stopping_best
    if not math.isnan(value) and (best is None or value > best + cfg.min_delta):
        state.stopping_best, state.stopping_epoch, state.stopping_wait = value, row["epoch"], 0
        return None
    state.stopping_wait += 1
    if state.stopping_wait < cfg.patience:
        return None
    best_text = "never a number" if best is None else f"best {best:.4f} at epoch {state.stopping_epoch}"
    return (f"train.early_stopping: {cfg.metric} did not improve by more than {cfg.min_delta:g} in {cfg.patience} "
            f"validation(s) ({best_text})")
