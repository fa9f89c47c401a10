"""Padding to a model's total stride and cropping back: how zoo models take inputs of any size.

``registry.stem`` pads the input with ``PadToMultiple`` so every pool and upsampling step
divides evenly, and ``registry.head`` crops the logits back with ``CropToMatch``; SegNet's
``MaxUnpool`` crops with ``crop_to`` the padding its encoder pool added.
"""

from __future__ import annotations

from typing import Sequence

import keras
from keras import ops

from segtrain.models.shapes import matched_shape, spatial_shape


def crop_to(x, spatial: Sequence):
    """Keep the first ``spatial[i]`` elements of each spatial axis."""
    return x[(slice(None),) + tuple(slice(0, n) for n in spatial) + (slice(None),)]


@keras.saving.register_keras_serializable(package="segtrain")
class PadToMultiple(keras.layers.Layer):
    """Zero-pad the end of every spatial axis to a multiple of ``multiple`` (a model's total stride).

    The zeros are concatenated, not added with ``ops.pad``: a model's first conv follows this
    layer, and TensorFlow's oneDNN graph rewrite (on by default on CPUs with AVX-512 VNNI /
    AMX) fuses a constant-size ``Pad`` into a following ``Conv3D`` and then drops the conv's
    own 'same' padding, so inside ``tf.function`` (``fit``, ``predict``) the 3-D conv silently
    computes a 'valid' result (TF 2.21; eager mode and ranks 1-2 are unaffected).
    """

    def __init__(self, multiple: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.multiple = int(multiple)

    def call(self, x):
        for axis, n in enumerate(spatial_shape(x, len(x.shape) - 2), start=1):
            extra = (-n) % self.multiple
            if isinstance(extra, int) and extra == 0:
                continue
            shape = list(ops.shape(x))
            shape[axis] = extra
            x = ops.concatenate([x, ops.zeros(shape, x.dtype)], axis=axis)
        return x

    def compute_output_shape(self, input_shape):
        m = self.multiple
        spatial = tuple(None if n is None else -(-n // m) * m for n in input_shape[1:-1])
        return (input_shape[0],) + spatial + (input_shape[-1],)

    def get_config(self):
        return {**super().get_config(), "multiple": self.multiple}


@keras.saving.register_keras_serializable(package="segtrain")
class CropToMatch(keras.layers.Layer):
    """Crop ``x`` to the spatial size of ``reference`` (undoes ``PadToMultiple``)."""

    def call(self, inputs):
        x, reference = inputs
        return crop_to(x, spatial_shape(reference, len(x.shape) - 2))

    def compute_output_shape(self, input_shapes):
        return matched_shape(*input_shapes)
