"""Void-aware, class-weighted segmentation losses: cross-entropy, focal, soft Dice, Lovasz-softmax.

Keras's ``class_weight`` weights whole samples; segmentation needs a weight per *pixel*
(by its class) and must drop void pixels (255) from both the sum and the count.
Cross-entropy is normalised as PyTorch's ``CrossEntropyLoss(weight=w, ignore_index=255)``:

    loss = sum_p w[y_p] * CE_p / sum_p w[y_p]      over valid pixels p (y_p != 255)

so a batch with only void pixels gives 0, not NaN. Every loss is computed in float32 even
when the model runs in mixed precision.

Each loss is written as *terms* ``(numerator, denominator)``. For the pixel sums (ce,
focal) the denominator is the weight sum, so a distributed step can divide by the weight
sum of the *global* batch and N replicas give exactly the loss of one device. Dice and
Lovasz are not sums over pixels: their term is ``(value on this replica's batch, 1)``, so
under N replicas the step uses the mean of the N per-replica values (equal to the
single-device value only when N = 1). ``SegmentationLoss`` is the weighted sum that
``train.loss`` configures (see ``segtrain.loss_specs``).

Region-based training (``model.head: sigmoid``, ``segtrain.heads``) has one logit per region:
there ``ce`` is the binary cross-entropy averaged over every valid pixel and region, and
``dice`` the soft Dice of each region's sigmoid, averaged over the regions (nnU-Net's
BCE + Dice for BRATS). Their targets come from the class indices through the region table
(row c: the regions class c belongs to), and void pixels count in neither.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from segtrain.errors import SegtrainError
from segtrain.heads import region_table
from segtrain.labels import VOID
from segtrain.loss_specs import DEFAULT_LOSS, normalize_loss_spec

_EPS = 1e-12


def class_indices(labels, logits):
    """Labels as int32 ``[B, H, W]`` for ``[B, H, W, C]`` logits; ``[B, H, W, 1]`` is squeezed.

    One-hot labels (the last axis as long as the class axis) are refused: they cannot carry
    void, and a silent reinterpretation would train on the wrong targets.
    """
    labels = ops.convert_to_tensor(labels)
    rank, want = len(labels.shape), len(logits.shape) - 1
    if rank == want + 1:
        last = labels.shape[-1]
        if last is not None and last != 1:
            raise SegtrainError(
                f"labels of shape {tuple(labels.shape)} look one-hot (last axis {last}); segtrain losses and "
                f"metrics take class indices of shape {tuple(labels.shape[:-1])} with 255 for void: pass "
                "argmax(one_hot, axis=-1) and set void pixels to 255"
            )
        labels = ops.squeeze(labels, axis=-1)
    elif rank != want:
        raise SegtrainError(
            f"labels of shape {tuple(labels.shape)} do not fit logits of shape {tuple(logits.shape)}; "
            "labels must be class indices with the logits' shape minus the class axis"
        )
    return ops.cast(labels, "int32")


def _pixels(labels, logits, class_weights, ignore_index: int):
    """(float32 logits, safe labels (void -> 0), valid mask, per-pixel weight (0 on void))."""
    logits = ops.cast(logits, "float32")
    labels = class_indices(labels, logits)
    valid = ops.not_equal(labels, ignore_index)
    safe = ops.where(valid, labels, 0)
    if class_weights is None:
        weights = ops.cast(valid, "float32")
    else:
        table = ops.convert_to_tensor(class_weights, dtype="float32")
        weights = ops.where(valid, ops.take(table, safe), 0.0)
    return logits, safe, valid, weights


def _class_table(class_weights, num_classes: int):
    if class_weights is None:
        return ops.ones((num_classes,), "float32")
    return ops.convert_to_tensor(class_weights, dtype="float32")


def masked_cross_entropy_terms(labels, logits, class_weights=None, ignore_index: int = VOID):
    """Return ``(weighted CE sum, weight sum)`` over the valid pixels, both float32 scalars.

    Kept as two terms so a distributed step can divide by the weight sum of the *global*
    batch (all replicas), which makes N replicas give exactly the loss of one device.
    """
    logits, safe, _, weights = _pixels(labels, logits, class_weights, ignore_index)
    ce = ops.sparse_categorical_crossentropy(safe, logits, from_logits=True)
    return ops.sum(weights * ce), ops.sum(weights)


def focal_terms(labels, logits, class_weights=None, ignore_index: int = VOID, gamma: float = 2.0):
    """Focal loss (Lin et al. 2017) ``-(1 - p_y)^gamma log p_y``, as ``(weighted sum, weight sum)``.

    Normalised like the cross-entropy (class weights play the role of the paper's alpha);
    ``gamma = 0`` is exactly the cross-entropy.
    """
    logits, safe, _, weights = _pixels(labels, logits, class_weights, ignore_index)
    log_p = ops.take_along_axis(ops.log_softmax(logits, axis=-1), ops.expand_dims(safe, -1), axis=-1)[..., 0]
    focal = -log_p
    if gamma:
        # Floored so that (1 - p)^gamma keeps a finite gradient at p = 1 when gamma < 1.
        focal = focal * ops.power(ops.maximum(1.0 - ops.exp(log_p), _EPS), gamma)
    return ops.sum(weights * focal), ops.sum(weights)


def dice_terms(labels, logits, class_weights=None, ignore_index: int = VOID, smooth: float = 1.0):
    """Soft Dice loss ``1 - sum_c w_c D_c / sum_c w_c`` over the valid pixels of the whole batch, as ``(loss, 1)``.

    ``D_c = (2 sum_p s_pc g_pc + smooth) / (sum_p s_pc + sum_p g_pc + smooth)`` with ``s`` the
    softmax and ``g`` the one-hot labels; every class counts (a class absent from the batch
    scores ~1 only if it is not predicted either). A class with no pixels and ``smooth = 0``
    has ``D_c = 1``.
    """
    logits, safe, valid, _ = _pixels(labels, logits, None, ignore_index)
    num_classes = logits.shape[-1]
    mask = ops.expand_dims(ops.cast(valid, "float32"), -1)
    probs = ops.softmax(logits, axis=-1) * mask
    onehot = ops.one_hot(safe, num_classes, dtype="float32") * mask
    axes = tuple(range(len(logits.shape) - 1))
    inter = ops.sum(probs * onehot, axis=axes)
    den = ops.sum(probs, axis=axes) + ops.sum(onehot, axis=axes) + smooth
    dice = ops.where(den > 0, (2.0 * inter + smooth) / ops.maximum(den, _EPS), 1.0)
    table = _class_table(class_weights, num_classes)
    return 1.0 - ops.sum(table * dice) / ops.maximum(ops.sum(table), _EPS), ops.ones((), "float32")


def lovasz_terms(labels, logits, class_weights=None, ignore_index: int = VOID):
    """Lovasz-softmax (Berman et al. 2018, ``classes='present'``) over the batch's valid pixels, as ``(loss, 1)``.

    Per class c present in the labels: sort the errors ``|g_pc - s_pc|`` in decreasing order
    and take their dot product with the gradient of the Lovasz extension of the Jaccard loss
    (``lovasz_grad``). The loss is the class-weighted mean over present classes. Void pixels
    get error -1, so they sort last where the Jaccard gradient is 0: shapes stay static
    (XLA-friendly) and no pixel gather is needed.
    """
    logits, safe, valid, _ = _pixels(labels, logits, None, ignore_index)
    num_classes = logits.shape[-1]
    probs = ops.reshape(ops.softmax(logits, axis=-1), (-1, num_classes))
    valid = ops.reshape(valid, (-1, 1))
    fg = ops.one_hot(ops.reshape(safe, (-1,)), num_classes, dtype="float32") * ops.cast(valid, "float32")
    errors = ops.transpose(ops.where(valid, ops.abs(fg - probs), -1.0))  # (C, P)
    fg = ops.transpose(fg)
    order = ops.argsort(-errors, axis=-1)
    errors = ops.take_along_axis(errors, order, axis=-1)
    fg = ops.take_along_axis(fg, order, axis=-1)
    gts = ops.sum(fg, axis=-1, keepdims=True)
    intersection = gts - ops.cumsum(fg, axis=-1)
    union = gts + ops.cumsum(1.0 - fg, axis=-1)
    jaccard = 1.0 - intersection / union  # union >= 1 everywhere
    grad = ops.concatenate([jaccard[:, :1], jaccard[:, 1:] - jaccard[:, :-1]], axis=-1)
    per_class = ops.sum(errors * grad, axis=-1)
    table = _class_table(class_weights, num_classes) * ops.cast(gts[:, 0] > 0, "float32")
    return ops.sum(table * per_class) / ops.maximum(ops.sum(table), _EPS), ops.ones((), "float32")


def _region_pixels(labels, logits, table, ignore_index: int):
    """(float32 logits, region targets [..., R] float32, valid mask [..., 1] float32) from class indices."""
    logits = ops.cast(logits, "float32")
    labels = class_indices(labels, logits)
    valid = ops.not_equal(labels, ignore_index)
    table = ops.convert_to_tensor(table, dtype="float32")
    safe = ops.where(valid & (labels < table.shape[0]), labels, 0)
    return logits, ops.take(table, safe, axis=0), ops.expand_dims(ops.cast(valid, "float32"), -1)


def region_bce_terms(labels, logits, table, ignore_index: int = VOID):
    """Binary cross-entropy of every region's logit, as ``(sum over valid pixels and regions, their count)``.

    ``table`` is ``segtrain.heads.region_table``: ``(num_classes, R)``, 1 where a class is in a region.
    """
    logits, targets, mask = _region_pixels(labels, logits, table, ignore_index)
    bce = ops.binary_crossentropy(targets, logits, from_logits=True)  # elementwise
    return ops.sum(bce * mask), ops.sum(mask) * logits.shape[-1]


def region_dice_terms(labels, logits, table, ignore_index: int = VOID, smooth: float = 1.0):
    """Soft Dice loss ``1 - mean_r D_r`` of the regions' sigmoids over the valid pixels of the batch, as ``(loss, 1)``.

    ``D_r = (2 sum_p s_pr g_pr + smooth) / (sum_p s_pr + sum_p g_pr + smooth)``, ``s`` the sigmoid and
    ``g`` the region targets (a region absent from the batch scores ~1 only if it is not predicted).
    """
    logits, targets, mask = _region_pixels(labels, logits, table, ignore_index)
    probs = ops.sigmoid(logits) * mask
    targets = targets * mask
    axes = tuple(range(len(logits.shape) - 1))
    inter = ops.sum(probs * targets, axis=axes)
    den = ops.sum(probs, axis=axes) + ops.sum(targets, axis=axes) + smooth
    dice = ops.where(den > 0, (2.0 * inter + smooth) / ops.maximum(den, _EPS), 1.0)
    return 1.0 - ops.mean(dice), ops.ones((), "float32")


# head -> loss name -> terms(labels, logits, class weights (softmax) or region table (sigmoid), ignore_index, **options)
_TERMS: dict[str, dict[str, Callable]] = {
    "softmax": {
        "ce": masked_cross_entropy_terms,
        "focal": focal_terms,
        "dice": dice_terms,
        "lovasz": lovasz_terms,
    },
    "sigmoid": {
        "ce": region_bce_terms,
        "dice": region_dice_terms,
    },
}


@keras.saving.register_keras_serializable(package="segtrain")
class MaskedCrossEntropy(keras.losses.Loss):
    """Per-pixel softmax cross-entropy from logits, void-masked and class-weighted.

    Args:
        class_weights: one weight per class, or None for all 1.
        ignore_index: label value that counts nowhere (255 after decoding).

    ``y_true`` is ``[B, H, W]`` integer labels, ``y_pred`` ``[B, H, W, C]`` logits. The
    return value is already the normalised scalar (see the module docstring); a
    ``sample_weight`` is not supported because per-pixel weights come from the classes.
    """

    def __init__(self, class_weights: Sequence[float] | None = None, ignore_index: int = 255,
                 name: str = "masked_cross_entropy", **kwargs):
        kwargs.pop("reduction", None)
        super().__init__(name=name, reduction="none", **kwargs)
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]
        self.ignore_index = int(ignore_index)

    def call(self, y_true, y_pred):
        total, count = masked_cross_entropy_terms(y_true, y_pred, self.class_weights, self.ignore_index)
        return total / ops.maximum(count, 1e-12)

    def get_config(self) -> dict:
        return {"name": self.name, "class_weights": self.class_weights, "ignore_index": self.ignore_index}


@keras.saving.register_keras_serializable(package="segtrain")
class SegmentationLoss(keras.losses.Loss):
    """The weighted sum of void-aware losses that ``train.loss`` lists, as a Keras loss.

    Args:
        terms: ``[{"name": "ce", "weight": 1.0}, {"name": "dice", "weight": 0.5, "smooth": 1.0}]``;
            names and options as in ``segtrain.loss_specs`` (default: cross-entropy alone).
        class_weights: one weight per class, applied by every term, or None for all 1 (softmax only).
        ignore_index: label value that counts nowhere.
        regions: with ``num_classes``, one list of classes per sigmoid output (``data.regions`` in
            order): the terms are then the region (sigmoid) forms; None for softmax over classes.

    ``y_true`` is ``[B, H, W]`` (or ``[B, H, W, 1]``) class indices, ``y_pred`` ``[B, H, W, C]``
    logits; the value is the normalised scalar. On one device it is what the trainer
    minimises; ``replica_loss`` is the distributed form.
    """

    def __init__(self, terms: Sequence[dict] | None = None, class_weights: Sequence[float] | None = None,
                 ignore_index: int = VOID, regions: Sequence[Sequence[int]] | None = None, num_classes: int | None = None,
                 name: str = "segmentation_loss", **kwargs):
        kwargs.pop("reduction", None)
        super().__init__(name=name, reduction="none", **kwargs)
        self.head = "sigmoid" if regions else "softmax"
        self.spec = normalize_loss_spec(DEFAULT_LOSS if terms is None else list(terms), "SegmentationLoss", "terms", self.head)
        if regions and (class_weights is not None or num_classes is None):
            raise SegtrainError("SegmentationLoss: regions need num_classes and take no class_weights")
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]
        self.ignore_index = int(ignore_index)
        self.regions = [[int(c) for c in r] for r in regions] if regions else None
        self.num_classes = num_classes
        self._weights = region_table(self.regions, num_classes) if regions else self.class_weights

    def terms(self, labels, logits) -> list[tuple[Any, Any]]:
        """``(weight * numerator, denominator)`` per item; the loss is ``sum num / den``."""
        out = []
        for item in self.spec:
            options = {k: v for k, v in item.items() if k not in ("name", "weight")}
            num, den = _TERMS[self.head][item["name"]](labels, logits, self._weights, self.ignore_index, **options)
            out.append((item["weight"] * num, den))
        return out

    def replica_loss(self, labels, logits, global_sum: Callable | None = None):
        """This replica's share of the loss; ``global_sum`` sums a tensor over replicas (None: one device).

        Every denominator is summed over replicas in one call, so pixel sums are normalised by
        the global batch and the per-replica terms (Dice, Lovasz) are averaged over replicas.
        """
        terms = self.terms(labels, logits)
        dens = ops.stack([ops.cast(den, "float32") for _, den in terms])
        if global_sum is not None:
            dens = ops.stop_gradient(global_sum(dens))
        return sum(num / ops.maximum(dens[i], _EPS) for i, (num, _) in enumerate(terms))

    def call(self, y_true, y_pred):
        return self.replica_loss(y_true, y_pred)

    def get_config(self) -> dict:
        return {"name": self.name, "terms": self.spec, "class_weights": self.class_weights,
                "ignore_index": self.ignore_index, "regions": self.regions, "num_classes": self.num_classes}


ReplicaLoss = Callable[[Any, Any, Callable], Any]


def build_loss(loss: Sequence[dict] | Callable, class_weights: Sequence[float] | None = None,
               ignore_index: int = VOID, regions: Sequence[Sequence[int]] | None = None,
               num_classes: int | None = None) -> ReplicaLoss:
    """The trainer's per-replica loss ``(labels, logits, global_sum) -> this replica's share``.

    ``loss`` is a ``train.loss`` list (built with ``class_weights``, or for ``regions`` of a
    sigmoid head with their region table), a ``SegmentationLoss``
    (used as is), or any other ``(labels, logits) -> scalar`` callable: that one is taken as
    the loss of the replica's batch, and the replicas' values are averaged.
    """
    if isinstance(loss, SegmentationLoss):
        return loss.replica_loss
    if callable(loss):
        def averaged(labels, logits, global_sum):
            return ops.cast(loss(labels, logits), "float32") / global_sum(ops.ones((), "float32"))
        return averaged
    return SegmentationLoss(loss, class_weights, ignore_index, regions, num_classes).replica_loss


def median_frequency_weights(mask_iter: Iterable[np.ndarray], num_classes: int,
                             ignore_index: int = 255) -> np.ndarray:
    """Median-frequency balancing (Eigen & Fergus 2015, as used by SegNet).

    ``freq_c = pixels of class c / total pixels of the images in which c appears`` and
    ``weight_c = median(freq over the classes that appear) / freq_c``. "Total pixels" are
    all of an image's pixels, void included (this reproduces the usual CamVid figures). A class that never appears gets weight 0 (it contributes
    nothing to the loss, instead of an infinite weight). Masks are streamed, one at a time.
    """
    class_pixels = np.zeros(num_classes, np.int64)
    image_pixels = np.zeros(num_classes, np.int64)
    for mask in mask_iter:
        flat = np.asarray(mask).ravel()
        counts = np.bincount(flat[flat != ignore_index], minlength=num_classes)[:num_classes]
        class_pixels += counts
        image_pixels[counts > 0] += flat.size
    present = class_pixels > 0
    weights = np.zeros(num_classes, np.float64)
    if present.any():
        freq = class_pixels[present] / image_pixels[present]
        weights[present] = np.median(freq) / freq
    return weights
