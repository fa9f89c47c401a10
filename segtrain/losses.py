"""Masked, class-weighted per-pixel softmax cross-entropy and median-frequency weights.

Keras's ``class_weight`` weights whole samples; segmentation needs a weight per *pixel*
(by its class) and must drop void pixels (255) from both the sum and the count.
Normalisation follows PyTorch's ``CrossEntropyLoss(weight=w, ignore_index=255)``:

    loss = sum_p w[y_p] * CE_p / sum_p w[y_p]      over valid pixels p (y_p != 255)

so a batch with only void pixels gives 0, not NaN. The loss is computed in float32 even
when the model runs in mixed precision.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import keras
import numpy as np
from keras import ops


def masked_cross_entropy_terms(labels, logits, class_weights=None, ignore_index: int = 255):
    """Return ``(weighted CE sum, weight sum)`` over the valid pixels, both float32 scalars.

    Kept as two terms so a distributed step can divide by the weight sum of the *global*
    batch (all replicas), which makes N replicas give exactly the loss of one device.
    """
    logits = ops.cast(logits, "float32")
    labels = ops.cast(labels, "int32")
    valid = ops.not_equal(labels, ignore_index)
    safe = ops.where(valid, labels, 0)
    ce = ops.sparse_categorical_crossentropy(safe, logits, from_logits=True)
    if class_weights is None:
        weights = ops.cast(valid, "float32")
    else:
        table = ops.convert_to_tensor(class_weights, dtype="float32")
        weights = ops.where(valid, ops.take(table, safe), 0.0)
    return ops.sum(weights * ce), ops.sum(weights)


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
