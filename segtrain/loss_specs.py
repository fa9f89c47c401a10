"""The losses ``train.loss`` may list, their options and defaults; checked without TensorFlow.

A loss spec is a list of items ``{name: <loss>, weight: <float>, <option>: <value>, ...}``;
the training loss is the weighted sum of the items. This module only validates the list
(so ``segtrain.config`` stays free of TensorFlow); ``segtrain.losses`` computes them.
"""

from __future__ import annotations

import math
from typing import Any

from segtrain.errors import SegtrainError

# name -> {option: default}. Every option is a non-negative number.
LOSS_OPTIONS: dict[str, dict[str, float]] = {
    "ce": {},
    "focal": {"gamma": 2.0},
    "dice": {"smooth": 1.0},
    "lovasz": {},
}

# model.head -> the losses it has. Under a sigmoid head (one output per region) ``ce`` is the binary
# cross-entropy and ``dice`` the soft Dice of each region.
HEAD_LOSSES: dict[str, tuple[str, ...]] = {"softmax": tuple(LOSS_OPTIONS), "sigmoid": ("ce", "dice")}

DEFAULT_LOSS: list[dict[str, Any]] = [{"name": "ce", "weight": 1.0}]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def normalize_loss_spec(items: Any, source: str, key: str = "train.loss", head: str = "softmax") -> list[dict[str, Any]]:
    """Check a loss list for a ``model.head``; return it with every item's weight and options filled in.

    Raises ``SegtrainError`` naming ``<key>[i].<field>`` and what is allowed there.
    """
    if not isinstance(items, (list, tuple)) or not items:
        raise SegtrainError(f"{source}: key '{key}' must be a non-empty list such as [{{name: ce, weight: 1.0}}]")
    names = ", ".join(LOSS_OPTIONS)
    out = []
    for i, item in enumerate(items):
        where = f"{key}[{i}]"
        if not isinstance(item, dict):
            raise SegtrainError(f"{source}: key '{where}' must be a mapping such as {{name: dice, weight: 0.5}}, got {item!r}")
        name = item.get("name")
        if name not in LOSS_OPTIONS:
            raise SegtrainError(f"{source}: key '{where}.name': unknown loss {name!r}; use one of {names}")
        if name not in HEAD_LOSSES[head]:
            raise SegtrainError(f"{source}: key '{where}.name': {name} has no {head} form; with model.head: {head} use "
                                f"{' or '.join(HEAD_LOSSES[head])} (binary cross-entropy and soft Dice per region)")
        options = LOSS_OPTIONS[name]
        for field, value in item.items():
            if field == "name":
                continue
            if field != "weight" and field not in options:
                allowed = ", ".join(["weight", *options])
                raise SegtrainError(f"{source}: unknown key '{where}.{field}'; {name} takes {allowed}")
            if not _number(value) or value < 0 or (field == "weight" and value == 0):
                need = "a positive number" if field == "weight" else "a number >= 0"
                raise SegtrainError(f"{source}: key '{where}.{field}' must be {need}, got {value!r}")
        out.append({"name": name, "weight": float(item.get("weight", 1.0)),
                    **{k: float(item.get(k, v)) for k, v in options.items()}})
    return out
