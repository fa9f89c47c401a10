"""A streaming, void-aware mean IoU for ``model.fit`` users, with ``segtrain.metrics`` semantics.

It takes the model's logits, keeps one float64 confusion matrix over everything seen since
the last reset (summed over replicas), leaves void pixels out and averages the IoU of the
classes present in the ground truth or the predictions, exactly as
``segtrain.metrics.compute_metrics`` does on the same pixels. Keras's
``MeanIoU(ignore_class=255, sparse_y_pred=False)`` comes close, but counts in float32
(inexact beyond 2**24 = 16.8 million pixels in one cell) and silently
drops labels out of range, where this metric turns NaN.
"""

from __future__ import annotations

import keras
from keras import ops

from segtrain.errors import SegtrainError
from segtrain.labels import VOID
from segtrain.losses import class_indices


@keras.saving.register_keras_serializable(package="segtrain")
class MaskedMeanIoU(keras.metrics.Metric):
    """Split-wide mean IoU from logits; void (255) ignored, classes never seen left out of the mean.

    Args:
        num_classes: number of classes (the logits' last axis).
        ignore_index: label value that counts nowhere.

    ``y_true``: ``[B, H, W]`` or ``[B, H, W, 1]`` class indices; ``y_pred``: ``[B, H, W, C]``
    logits (or probabilities). A ground-truth label that is neither a class nor void makes
    the result NaN (check ``num_classes`` and the labels) instead of being miscounted.
    """

    def __init__(self, num_classes: int, ignore_index: int = VOID, name: str = "miou", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        # Rows 0..C-1: ground truth; row C: labels out of range.
        self.confusion = self.add_variable(shape=(self.num_classes + 1, self.num_classes), initializer="zeros",
                                           dtype="float64", aggregation="sum", name="confusion_matrix")

    def update_state(self, y_true, y_pred, sample_weight=None):
        if sample_weight is not None:
            raise SegtrainError("MaskedMeanIoU: sample_weight is not supported; void pixels (255) are the mask")
        c = self.num_classes
        labels = ops.reshape(class_indices(y_true, y_pred), (-1,))
        pred = ops.reshape(ops.cast(ops.argmax(y_pred, axis=-1), "int32"), (-1,))
        valid = ops.not_equal(labels, self.ignore_index)
        rows = ops.where((labels >= 0) & (labels < c), labels, c)
        counts = ops.segment_sum(ops.cast(valid, "float64"), rows * c + pred, num_segments=(c + 1) * c)
        self.confusion.assign_add(ops.reshape(counts, (c + 1, c)))

    def result(self):
        cm = self.confusion[: self.num_classes]
        tp = ops.diagonal(cm)
        union = ops.sum(cm, axis=0) + ops.sum(cm, axis=1) - tp
        present = union > 0
        iou = ops.where(present, tp / ops.maximum(union, 1.0), 0.0)
        miou = ops.sum(iou) / ops.sum(ops.cast(present, "float64"))  # 0/0 = NaN when nothing was seen
        miou = ops.where(ops.sum(self.confusion[self.num_classes]) > 0, float("nan"), miou)
        return ops.cast(miou, self.dtype)

    def get_config(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "num_classes": self.num_classes,
                "ignore_index": self.ignore_index}
