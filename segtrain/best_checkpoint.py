"""``train.best_metric``: which validation figure picks ``best.keras``.

mIoU by default. A run that scores label groups (the regions of a sigmoid head, or
``evaluate.groups`` such as BRATS' whole / core / enhancing tumour) is judged by them, so by
default it keeps the checkpoint of the best mean group Dice, as nnU-Net keeps the one of the best
mean foreground Dice: mIoU averages in the background and every class inside a group, which the
groups' score does not care about.
"""

from __future__ import annotations

import math

from segtrain.checkpoints import LoopState
from segtrain.config import Config
from segtrain.errors import SegtrainError
from segtrain.evaluation import scored_groups

GROUP_METRIC = "val_group_mdice"  # the mean Dice of the scored label groups, in an epoch's row


def best_metric(config: Config) -> str:
    """The epoch-row key that picks ``best.keras`` (``train.best_metric``, ``auto`` resolved).

    The group metric without groups to score is refused here, at start-up, for both keys that
    name it: the row would never hold it, so no checkpoint would ever be best and early
    stopping would never count."""
    stopping = config.train.early_stopping
    for key, name in (("train.best_metric", config.train.best_metric),
                      ("train.early_stopping.metric", stopping.metric if stopping else None)):
        if name == GROUP_METRIC and not scored_groups(config):
            raise SegtrainError(f"{key}: {GROUP_METRIC} needs label groups to score; set data.regions (a sigmoid "
                                f"head) or evaluate.groups, or pick val_miou")
    name = config.train.best_metric
    if name != "auto":
        return name
    return GROUP_METRIC if scored_groups(config) else "val_miou"


def improves(name: str, row: dict, state: LoopState) -> bool:
    """Whether the validation in ``row`` beats the best so far (higher is better; NaN never does)."""
    value = row.get(name)
    if value is None or math.isnan(value):
        return False
    best = state.best_score
    if best is None and name == "val_miou":
        best = state.best_miou  # the state.json of a run from before best_score existed
    return best is None or value > best
