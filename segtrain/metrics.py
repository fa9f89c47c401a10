"""Confusion matrix -> IoU, Dice, F-score, pixel and class accuracy, frequency-weighted IoU.

Pure NumPy, so ``segtrain.metrics`` can score two label arrays without TensorFlow.

Semantics (the same as mmsegmentation's ``IoUMetric``), chosen so a number means one thing:

* one confusion matrix is summed over the whole split, and every metric comes from it
  (never an average of per-image or per-batch IoUs);
* pixels whose ground truth is the void value (255) are left out entirely;
* a class absent from both the ground truth and the predictions has IoU and accuracy NaN
  (shown as ``n/a``) and is left out of the means;
* a class that is predicted but absent from the ground truth has IoU 0 (and accuracy NaN).

Dice and F-score follow the same rules (``2TP / (2TP + FP + FN)`` and
``(1 + b^2) TP / ((1 + b^2) TP + b^2 FN + FP)``, NaN exactly where IoU is NaN), so at
``beta = 1`` the F-score equals Dice; precision is NaN for a class never predicted.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from segtrain.errors import SegtrainError
from segtrain.labels import VOID


def _as_labels(values: np.ndarray, name: str) -> np.ndarray:
    """uint8 view of a label array; wider integer types are accepted when they fit 0..255."""
    values = np.asarray(values)
    if values.dtype == np.uint8:
        return values
    if values.dtype.kind not in "iub":
        raise SegtrainError(f"{name} must hold integer class indices, got dtype {values.dtype}")
    if values.size and (values.min() < 0 or values.max() > 255):
        bad = values.min() if values.min() < 0 else values.max()
        raise SegtrainError(f"{name} contains label {bad}; labels are class indices 0..254 and 255 for void")
    return values.astype(np.uint8)


def confusion_matrix(gt: np.ndarray, pred: np.ndarray, num_classes: int, ignore_index: int = VOID) -> np.ndarray:
    """(C, C) int64 counts, rows = ground truth, columns = prediction, void pixels excluded.

    One ``bincount`` and no per-class loop. The key is ``256 * gt + pred`` (the labels are
    uint8, so this is ``num_classes * gt + pred`` with the stride widened to 256) over all
    pixels: that skips the copy a boolean void mask would cost, the void row is simply
    dropped afterwards, and every count that falls outside the ``C x C`` block is a label
    out of range, which is refused instead of being folded into another cell.
    """
    gt = _as_labels(gt, "ground truth")
    pred = _as_labels(pred, "prediction")
    if gt.shape != pred.shape:
        raise SegtrainError(f"ground truth has shape {gt.shape} but prediction has {pred.shape}; they must match")
    key = (gt.astype(np.uint16) << 8) | pred
    table = np.bincount(key.reshape(-1), minlength=256 * 256).reshape(256, 256)
    table[ignore_index] = 0
    if table[num_classes:].any():
        bad = int(np.nonzero(table[num_classes:].any(axis=1))[0][0]) + num_classes
        raise SegtrainError(
            f"ground truth contains label {bad} but num_classes is {num_classes} "
            f"(void is {ignore_index}); fix data.num_classes or the labels"
        )
    if table[:, num_classes:].any():
        bad = int(np.nonzero(table[:, num_classes:].any(axis=0))[0][0]) + num_classes
        raise SegtrainError(
            f"prediction contains label {bad} on a non-void pixel but num_classes is {num_classes}; "
            "predictions must be class indices 0..num_classes-1"
        )
    return table[:num_classes, :num_classes].astype(np.int64)


class ConfusionMatrix:
    """Streaming accumulator: ``update`` per batch or image, ``result`` once for the split."""

    def __init__(self, num_classes: int, ignore_index: int = VOID):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, gt: np.ndarray, pred: np.ndarray) -> ConfusionMatrix:
        """Add one image or a batch (any shape, gt and pred alike)."""
        self.matrix += confusion_matrix(gt, pred, self.num_classes, self.ignore_index)
        return self

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add another accumulator's counts (e.g. from another worker or shard)."""
        if other.num_classes != self.num_classes:
            raise SegtrainError(f"cannot merge confusion matrices of {other.num_classes} and {self.num_classes} classes")
        self.matrix += other.matrix
        return self

    def reset(self) -> None:
        self.matrix[:] = 0

    def result(self) -> np.ndarray:
        return self.matrix.copy()

    def metrics(self, class_names: Sequence[str] | None = None, beta: float = 1.0) -> dict:
        return compute_metrics(self.matrix, class_names, beta)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, NaN where den is 0 (without a divide-by-zero warning)."""
    out = np.full(num.shape, np.nan, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _nanmean(values: np.ndarray) -> float:
    present = values[~np.isnan(values)]
    return float(present.mean()) if present.size else float("nan")


def compute_metrics(cm: np.ndarray, class_names: Sequence[str] | None = None, beta: float = 1.0) -> dict:
    """The report of a split-wide confusion matrix (rows = ground truth); see the module docstring.

    Returns ``miou, mdice, mfscore, pixel_accuracy, mean_accuracy, fwiou`` (floats in 0..1,
    NaN when there are no valid pixels), ``per_class_iou, per_class_dice, per_class_fscore,
    per_class_precision, per_class_accuracy`` (lists, NaN where undefined; accuracy is the
    recall), ``per_class_pixels`` (ground-truth pixel counts), ``num_pixels``,
    ``fscore_beta`` and ``class_names``.
    """
    if not beta > 0:
        raise SegtrainError(f"F-score beta must be positive, got {beta}")
    cm = np.asarray(cm, dtype=np.int64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise SegtrainError(f"confusion matrix must be square, got shape {cm.shape}")
    num_classes = cm.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise SegtrainError(f"{len(names)} class names given for a {num_classes}-class confusion matrix")
    tp = np.diag(cm).astype(np.float64)
    gt_pixels = cm.sum(axis=1).astype(np.float64)
    pred_pixels = cm.sum(axis=0).astype(np.float64)
    total = gt_pixels.sum()
    iou = _ratio(tp, gt_pixels + pred_pixels - tp)
    acc = _ratio(tp, gt_pixels)
    dice = _ratio(2 * tp, gt_pixels + pred_pixels)
    b2 = beta * beta
    fscore = _ratio((1 + b2) * tp, b2 * gt_pixels + pred_pixels)
    freq = gt_pixels / total if total else np.zeros(num_classes)
    seen = gt_pixels > 0
    return {
        "miou": _nanmean(iou),
        "mdice": _nanmean(dice),
        "mfscore": _nanmean(fscore),
        "pixel_accuracy": float(tp.sum() / total) if total else float("nan"),
        "mean_accuracy": _nanmean(acc),
        "fwiou": float((freq[seen] * iou[seen]).sum()) if total else float("nan"),
        "per_class_iou": iou.tolist(),
        "per_class_dice": dice.tolist(),
        "per_class_fscore": fscore.tolist(),
        "per_class_precision": _ratio(tp, pred_pixels).tolist(),
        "per_class_accuracy": acc.tolist(),
        "per_class_pixels": gt_pixels.astype(np.int64).tolist(),
        "num_pixels": int(total),
        "fscore_beta": float(beta),
        "class_names": names,
    }


def _pct(value: float) -> str:
    return "n/a" if np.isnan(value) else f"{100 * value:.2f}"


def format_table(metrics: dict, class_names: Sequence[str] | None = None) -> str:
    """Per-class IoU / accuracy / Dice / pixel share, then the summary line, as fixed-width text (percent)."""
    names = list(class_names) if class_names is not None else metrics["class_names"]
    total = max(metrics["num_pixels"], 1)
    width = max(len("class"), *(len(n) for n in names))
    lines = [f"{'class':<{width}}  {'IoU':>7}  {'Acc':>7}  {'Dice':>7}  {'pixels%':>7}", "-" * (width + 36)]
    for name, iou, acc, dice, pixels in zip(names, metrics["per_class_iou"], metrics["per_class_accuracy"],
                                            metrics["per_class_dice"], metrics["per_class_pixels"]):
        lines.append(f"{name:<{width}}  {_pct(iou):>7}  {_pct(acc):>7}  {_pct(dice):>7}  {100 * pixels / total:>7.2f}")
    lines.append("-" * (width + 36))
    lines.append(
        f"mIoU {_pct(metrics['miou'])}  mDice {_pct(metrics['mdice'])}  pixel acc {_pct(metrics['pixel_accuracy'])}  "
        f"mean acc {_pct(metrics['mean_accuracy'])}  fwIoU {_pct(metrics['fwiou'])}  "
        f"({metrics['num_pixels']} valid pixels)"
    )
    lines.append("n/a: IoU and Dice of a class in neither ground truth nor prediction; Acc of a class absent from the ground truth")
    return "\n".join(lines)


def group_metrics(cm: np.ndarray, groups: dict[str, Sequence[int]]) -> dict[str, dict]:
    """Binary Dice and IoU of label groups (BRATS' whole tumour = {1, 2, 3, 4}) from a confusion matrix.

    A group is scored as one class: a voxel is positive where its class is in the group, so
    confusions inside the group (necrosis predicted as enhancing) do not count as errors.
    Returns ``{name: {"classes", "dice", "iou", "pixels"}}`` (NaN where the group is in neither
    ground truth nor prediction; ``pixels`` counts the group's ground-truth voxels).
    """
    cm = np.asarray(cm, dtype=np.int64)
    out = {}
    for name, classes in groups.items():
        members = sorted({int(c) for c in classes})
        if not members or members[0] < 0 or members[-1] >= cm.shape[0]:
            raise SegtrainError(f"label group '{name}': classes {list(classes)} must be non-empty and in 0..{cm.shape[0] - 1}")
        inside = np.zeros(cm.shape[0], dtype=bool)
        inside[members] = True
        tp = float(cm[np.ix_(inside, inside)].sum())
        gt = float(cm[inside].sum())
        pred = float(cm[:, inside].sum())
        out[name] = {
            "classes": members,
            "dice": float(_ratio(np.array(2 * tp), np.array(gt + pred))),
            "iou": float(_ratio(np.array(tp), np.array(gt + pred - tp))),
            "pixels": int(gt),
        }
    return out


def format_groups(groups: dict[str, dict]) -> str:
    """One line per label group: name, classes, Dice and IoU in percent."""
    width = max(len("group"), *(len(n) for n in groups))
    lines = [f"{'group':<{width}}  {'classes':<12}  {'Dice':>7}  {'IoU':>7}"]
    for name, g in groups.items():
        lines.append(f"{name:<{width}}  {','.join(map(str, g['classes'])):<12}  {_pct(g['dice']):>7}  {_pct(g['iou']):>7}")
    return "\n".join(lines)
