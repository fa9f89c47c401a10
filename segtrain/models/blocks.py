"""Convolution building blocks of the zoo: norms by name, ``ConvNormAct``, ``IdentityInit``.

Every layer takes its rank (1, 2 or 3 spatial axes, channels-last) from the input shape in
``build``, the way Keras's ``BaseConv`` is written once for all ranks, and is written with
``keras.ops`` only, so models stay backend-neutral and export to ONNX / OpenCV DNN as plain
Conv nodes. ``KernelLayer`` is the weight handling the learned upsamplers share.

Norms (``make_norm``): ``batch`` (BatchNormalization), ``layer`` (statistics over all
non-batch axes, gamma/beta of shape ``(channels,)``: ``GroupNormalization(groups=1)``),
``group`` (GroupNormalization with gcd(channels, 32) groups), ``instance``
(``GroupNormalization(groups=-1)``) and ``none``. The per-channel layer norm keeps the
model input-size agnostic; ``LayerNormalization(axis=[1, 2, 3])`` would instead learn a
gamma/beta of the full ``(h, w, c)`` shape, tying the weights to one image size.
"""

from __future__ import annotations

import math
from typing import Callable

import keras
import numpy as np
from keras import ops

from segtrain.errors import SegtrainError
from segtrain.io_utils import per_axis
from segtrain.models.shapes import rank_of

# norm name -> factory(channels, groups, name); the layer that normalises, or None for "none"
NORM_LAYERS: dict[str, Callable[[int, int, str | None], keras.layers.Layer | None]] = {
    "batch": lambda channels, groups, name: keras.layers.BatchNormalization(name=name),
    "layer": lambda channels, groups, name: keras.layers.GroupNormalization(groups=1, name=name),
    "group": lambda channels, groups, name: keras.layers.GroupNormalization(groups=math.gcd(channels, groups),
                                                                            name=name),
    "instance": lambda channels, groups, name: keras.layers.GroupNormalization(groups=-1, name=name),
    "none": lambda channels, groups, name: None,
}
NORMS = tuple(NORM_LAYERS)


def check_norm(norm: str) -> None:
    """The one-line ``model.norm`` error for a name that is not in ``NORMS``."""
    if norm not in NORM_LAYERS:
        raise SegtrainError(f"model.norm: unknown norm {norm!r}; use one of {', '.join(NORMS)}")


def make_norm(norm: str, channels: int, name: str | None = None, groups: int = 32) -> keras.layers.Layer | None:
    """Normalisation layer by name (see the module docstring); ``None`` for ``none``."""
    check_norm(norm)
    return NORM_LAYERS[norm](channels, groups, name)


@keras.saving.register_keras_serializable(package="segtrain")
class IdentityInit(keras.initializers.Initializer):
    """Conv kernel that passes its input through: centre tap maps channel groups 1:1.

    With ``c_in == c_out`` this is the exact identity (Yu and Koltun's context module).
    Otherwise input channel ``a`` feeds output ``b`` when ``a*g//c_in == b*g//c_out`` with
    ``g = gcd(c_in, c_out)``, weighted ``g / c_out`` (their generalised identity), plus
    optional Gaussian noise that breaks the symmetry between duplicated channels.
    """

    def __init__(self, noise_stddev: float = 0.0, seed: int | None = None):
        self.noise_stddev = float(noise_stddev)
        self.seed = seed

    def __call__(self, shape, dtype=None):
        *spatial, c_in, c_out = shape
        g = math.gcd(c_in, c_out)
        a = np.arange(c_in)[:, None] * g // c_in
        b = np.arange(c_out)[None, :] * g // c_out
        kernel = np.zeros(shape, "float32")
        kernel[tuple(k // 2 for k in spatial)] = (a == b) * (g / c_out if c_in != c_out else 1.0)
        if self.noise_stddev:
            kernel += np.random.default_rng(self.seed).normal(0.0, self.noise_stddev, shape)
        return ops.convert_to_tensor(kernel, dtype=dtype or "float32")

    def get_config(self):
        return {"noise_stddev": self.noise_stddev, "seed": self.seed}


class KernelLayer(keras.layers.Layer):
    """Shared weight handling: a ``kernel`` of shape ``k^rank x c_in x filters`` and ``bias``."""

    def __init__(self, filters: int, kernel_size, use_bias: bool = True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = kernel_size
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def add_kernel(self, rank: int, c_in: int, transposed: bool = False) -> None:
        """Create ``kernel`` (``k^rank x filters x c_in`` when ``transposed``) and ``bias``."""
        k = per_axis(self.kernel_size, rank, "kernel_size")
        shape = k + ((self.filters, c_in) if transposed else (c_in, self.filters))
        self.kernel = self.add_weight(name="kernel", shape=shape, initializer=self.kernel_initializer)
        self.bias = (
            self.add_weight(name="bias", shape=(self.filters,), initializer=self.bias_initializer)
            if self.use_bias else None
        )

    def add_bias(self, y):
        return y + self.bias if self.bias is not None else y

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
        }


@keras.saving.register_keras_serializable(package="segtrain")
class ConvNormAct(KernelLayer):
    """Stride-1 'same' convolution (optionally dilated) + norm + activation, any rank.

    The bias is dropped when a norm follows (the norm's beta replaces it) unless
    ``use_bias`` says otherwise.
    """

    def __init__(self, filters: int, kernel_size=3, dilation_rate=1, norm: str = "batch",
                 activation: str | None = "relu", use_bias: bool | None = None,
                 kernel_initializer="he_normal", **kwargs):
        check_norm(norm)
        super().__init__(filters, kernel_size, norm == "none" if use_bias is None else use_bias,
                         kernel_initializer, **kwargs)
        self.dilation_rate = dilation_rate
        self.norm = norm
        self.activation = keras.activations.get(activation)
        self.norm_layer = make_norm(norm, self.filters, name="norm")

    def build(self, input_shape):
        rank = rank_of(input_shape, self)
        self.add_kernel(rank, input_shape[-1])
        if self.norm_layer is not None:
            self.norm_layer.build(tuple(input_shape[:-1]) + (self.filters,))

    def call(self, x, training=None):
        rank = len(x.shape) - 2
        y = ops.conv(x, self.kernel, strides=1, padding="same",
                     dilation_rate=per_axis(self.dilation_rate, rank, "dilation_rate"))
        y = self.add_bias(y)
        if self.norm_layer is not None:
            y = self.norm_layer(y, training=training)
        return self.activation(y)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)

    def get_config(self):
        return {
            **super().get_config(),
            "dilation_rate": self.dilation_rate,
            "norm": self.norm,
            "activation": keras.activations.serialize(self.activation),
        }
