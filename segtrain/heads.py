"""How a model's logits become probabilities and labels: softmax over classes, or one sigmoid per region.

Region-based training (``model.head: sigmoid``, nnU-Net's BRATS setting) gives the model one
output per region of ``data.regions`` (e.g. whole tumour {1, 2, 3, 4}, core {1, 3, 4},
enhancing {4}) and trains each as a binary problem, so overlapping regions need no exclusive
class. Labels stay class indices end to end (255 void): the loss turns them into region
targets (``region_table``) and predictions turn back into one label map by nnU-Net's rule:
the regions are painted in the order given, each over the ones before, wherever its sigmoid
is above 0.5, with the region's label (``region_labels``: the smallest class of the region
that no later region holds). With regions listed from the largest to the most specific, the
label map's region k is every voxel where region k or a later one is predicted, so evaluation
scores regions as label groups of that map (as nnU-Net does).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

THRESHOLD = 0.5  # a region is predicted where its sigmoid exceeds this


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(logits, dtype=np.float32)))  # no overflow for large |x|


def argmax_labels(probs: np.ndarray, regions: Sequence[Sequence[int]]) -> np.ndarray:
    return np.argmax(probs, axis=-1).astype(np.uint8)


def painted_labels(probs: np.ndarray, regions: Sequence[Sequence[int]]) -> np.ndarray:
    """nnU-Net's rule: each region, in order, paints its label where its probability is above 0.5."""
    out = np.zeros(probs.shape[:-1], np.uint8)
    for r, label in enumerate(region_labels(regions)):
        out[probs[..., r] > THRESHOLD] = label
    return out


# head -> (logits -> probabilities, (probabilities, regions) -> uint8 labels)
HEADS: dict[str, tuple[Callable, Callable]] = {"softmax": (softmax, argmax_labels), "sigmoid": (sigmoid, painted_labels)}


def region_table(regions: Sequence[Sequence[int]], num_classes: int) -> np.ndarray:
    """``(num_classes, R)`` float32 membership: row c is the region target of a pixel of class c."""
    table = np.zeros((num_classes, len(regions)), np.float32)
    for r, classes in enumerate(regions):
        table[list(classes), r] = 1.0
    return table


def region_labels(regions: Sequence[Sequence[int]]) -> list[int]:
    """The class each region paints in the label map: its smallest class that no later region holds
    (the whole region if later ones cover it): whole {1,2,3,4}, core {1,3,4}, enhancing {4} -> 2, 1, 4."""
    out = []
    for r, classes in enumerate(regions):
        later = set().union(*map(set, regions[r + 1:]))
        out.append(min(set(classes) - later or set(classes)))
    return out


@dataclass(frozen=True)
class Head:
    """The model's output head: ``softmax`` over ``num_classes`` classes, or ``sigmoid`` over ``regions``."""

    name: str = "softmax"
    regions: tuple[tuple[int, ...], ...] = ()

    @property
    def outputs(self) -> int | None:
        """Channels the model predicts (None: one per class, ``data.num_classes``)."""
        return len(self.regions) or None

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        return HEADS[self.name][0](np.asarray(logits, dtype=np.float32))

    def labels(self, probs: np.ndarray) -> np.ndarray:
        """uint8 class indices from probabilities: the argmax, or the regions painted in order."""
        return HEADS[self.name][1](probs, self.regions)

    def decode(self, logits: np.ndarray) -> np.ndarray:
        """uint8 class indices straight from logits."""
        return self.labels(self.probabilities(logits))


SOFTMAX = Head()


def head_of(head: str, regions: Mapping[str, Sequence[int]]) -> Head:
    """``model.head`` and ``data.regions`` -> the ``Head`` (regions in the order the config lists them)."""
    return Head(head, tuple(tuple(int(c) for c in classes) for classes in regions.values()) if head == "sigmoid" else ())


def output_channels(config) -> int:
    """Channels of the model a ``Config`` builds: one per region for a sigmoid head, else one per class."""
    return head_of(config.model.head, config.data.regions).outputs or config.data.num_classes


def region_order(raw_config: Mapping) -> list[tuple[str, list[int]]]:
    """``data.regions`` of a config as read from YAML, as (name, classes) pairs in the head's output order:
    what a run's saved config.yaml and the config in hand must agree on, order included."""
    regions = (raw_config.get("data") or {}).get("regions") or {}
    return [(name, list(classes)) for name, classes in regions.items()]
