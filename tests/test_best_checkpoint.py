"""train.best_metric: which validation figure picks best.keras (segtrain.best_checkpoint)."""

import math

import pytest

from segtrain.best_checkpoint import best_metric, improves
from segtrain.checkpoints import LoopState
from segtrain.config import from_dict
from segtrain.errors import SegtrainError


def config(train=None, evaluate=None):
    raw = {"data": {"format": "folders", "root": "unused", "num_classes": 3, "classes": ["bg", "a", "b"]},
           "train": dict(train or {})}
    if evaluate:
        raw["evaluate"] = evaluate
    return from_dict(raw)


def test_auto_is_miou_without_groups_and_mean_group_dice_with_them():
    assert best_metric(config()) == "val_miou"
    assert best_metric(config(evaluate={"groups": {"any": [1, 2], "b": [2]}})) == "val_group_mdice"
    assert best_metric(config(train={"best_metric": "val_mdice"}, evaluate={"groups": {"b": [2]}})) == "val_mdice"


@pytest.mark.parametrize("key", ["best_metric", "early_stopping"])
def test_group_metric_without_groups_is_one_line_at_start(key):
    train = {"best_metric": "val_group_mdice"} if key == "best_metric" else {"early_stopping": {"metric": "val_group_mdice"}}
    with pytest.raises(SegtrainError, match=rf"^train\.{key}(\.metric)?: val_group_mdice needs label groups.*evaluate\.groups"):
        best_metric(config(train=train))


def test_selection_follows_the_chosen_metric_not_miou():
    """Epochs whose mIoU and mean group Dice rank differently: each metric keeps its own best epoch."""
    rows = [{"val_miou": 0.50, "val_group_mdice": 0.70}, {"val_miou": 0.60, "val_group_mdice": 0.65},
            {"val_miou": 0.55, "val_group_mdice": 0.75}, {"val_miou": 0.58, "val_group_mdice": math.nan}]
    for name, want in (("val_miou", 2), ("val_group_mdice", 3)):
        state, kept = LoopState(), None
        for epoch, row in enumerate(rows, start=1):
            if improves(name, row, state):
                state.best_score, state.best_miou, kept = row[name], row["val_miou"], epoch
        assert kept == want  # NaN (no group anywhere) never wins


def test_a_state_from_before_best_score_keeps_its_best_miou():
    old = LoopState(best_miou=0.6, best_epoch=3)  # state.json written before best_score existed
    assert not improves("val_miou", {"val_miou": 0.55}, old)
    assert improves("val_miou", {"val_miou": 0.61}, old)
