"""Every upsampler a zoo decoder can use, and ``upsampler``, the one factory models build them with.

``model.decoder`` names one of ``DECODERS``: ``unpool`` (SegNet's ``MaxUnpool``, in
``pooling``), ``resize_conv`` (``ResizeConv``), ``transposed`` (``TransposedConvUp``) and
``bilinear`` (``BilinearUpsample``). The learned ones (``LEARNED_DECODERS``) convolve while
they upsample; the others keep the channel count. Each output is exactly ``factor x`` the
input on every axis, for any rank and ``None`` sizes, in plain ``keras.ops``.
"""

from __future__ import annotations

from typing import Callable, Sequence

import keras
from keras import ops

from segtrain.errors import SegtrainError
from segtrain.io_utils import per_axis
from segtrain.models.blocks import KernelLayer
from segtrain.models.pooling import MaxUnpool
from segtrain.models.shapes import rank_of, scaled_shape
from segtrain.models.subpixel import resize_conv_subpixel


def nearest_upsample(x, factors: Sequence[int]):
    """Repeat every element ``factors[i]`` times along spatial axis ``i``."""
    for axis, f in enumerate(factors, start=1):
        if f != 1:
            x = ops.repeat(x, f, axis=axis)
    return x


def _take(x, axis: int, start, stop):
    index = [slice(None)] * len(x.shape)
    index[axis] = slice(start, stop)
    return x[tuple(index)]


def linear_upsample(x, factors: Sequence[int]):
    """Separable (bi/tri)linear upsampling by integer factors, half-pixel centres, edges clamped.

    Output ``j*f + p`` samples input ``j + (p + 0.5)/f - 0.5``; for rank 2 this equals
    ``tf.image.resize(..., "bilinear")``. Written as shifts and a weighted sum per output
    phase, interleaved by stack + reshape, so it works for any rank and ``None`` sizes.
    """
    for axis, f in enumerate(factors, start=1):
        if f == 1:
            continue
        prev = ops.concatenate([_take(x, axis, 0, 1), _take(x, axis, None, -1)], axis=axis)
        nxt = ops.concatenate([_take(x, axis, 1, None), _take(x, axis, -1, None)], axis=axis)
        phases = []
        for p in range(f):
            d = (p + 0.5) / f - 0.5
            phases.append((1 + d) * x - d * prev if d < 0 else (1 - d) * x + d * nxt)
        shape = list(ops.shape(x))
        shape[axis] = shape[axis] * f
        x = ops.reshape(ops.stack(phases, axis=axis + 1), shape)
    return x


@keras.saving.register_keras_serializable(package="segtrain")
class ResizeConv(KernelLayer):
    """Resize by ``factor`` (nearest or linear), then a stride-1 'same' convolution.

    The output is exactly ``factor x`` the input on every axis. Odena et al. (Distill
    2016) show this avoids the checkerboard pattern of transposed convolutions whose
    kernel size is not divisible by the stride. The computation lives in ``_naive`` so a
    faster equivalent for nearest resizing can be switched in without changing weights.
    ``bilinear`` is separable linear interpolation for ranks 1 and 3 too.
    """

    def __init__(self, filters: int, factor=2, kernel_size=3, interpolation: str = "nearest",
                 use_bias: bool = True, kernel_initializer="glorot_uniform", method: str = "subpixel",
                 **kwargs):
        if interpolation not in ("nearest", "bilinear"):
            raise ValueError(f"interpolation must be 'nearest' or 'bilinear', got {interpolation!r}")
        if method not in ("subpixel", "naive"):
            raise ValueError(f"method must be 'subpixel' or 'naive', got {method!r}")
        super().__init__(filters, kernel_size, use_bias, kernel_initializer, **kwargs)
        self.factor = factor
        self.interpolation = interpolation
        # "subpixel": the exact low-resolution phase form (segtrain/models/subpixel.py) for
        # nearest resizing; bilinear always takes the naive path (see docs/subpixel.md).
        self.method = method

    def build(self, input_shape):
        self.add_kernel(rank_of(input_shape, self), input_shape[-1])

    def _naive(self, x):
        factors = per_axis(self.factor, len(x.shape) - 2, "factor")
        up = nearest_upsample(x, factors) if self.interpolation == "nearest" else linear_upsample(x, factors)
        return self.add_bias(ops.conv(up, self.kernel, strides=1, padding="same"))

    def call(self, x):
        if self.method == "subpixel" and self.interpolation == "nearest":
            factors = per_axis(self.factor, len(x.shape) - 2, "factor")
            return self.add_bias(resize_conv_subpixel(x, self.kernel, factors))
        return self._naive(x)

    def compute_output_shape(self, input_shape):
        return scaled_shape(input_shape, self.factor, self.filters)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor, "interpolation": self.interpolation,
                "method": self.method}


@keras.saving.register_keras_serializable(package="segtrain")
class TransposedConvUp(KernelLayer):
    """Transposed convolution with stride ``factor``; output exactly ``factor x`` the input.

    Uses 'same' padding: the full scatter-add result of length ``(n-1)*s + k`` is cropped
    by ``(k-s)//2`` at the start when ``k >= s`` and zero-extended at the end when ``k < s``.
    """

    def __init__(self, filters: int, factor=2, kernel_size=3, use_bias: bool = True,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(filters, kernel_size, use_bias, kernel_initializer, **kwargs)
        self.factor = factor

    def build(self, input_shape):
        self.add_kernel(rank_of(input_shape, self), input_shape[-1], transposed=True)

    def call(self, x):
        strides = per_axis(self.factor, len(x.shape) - 2, "factor")
        return self.add_bias(ops.conv_transpose(x, self.kernel, strides=strides, padding="same"))

    def compute_output_shape(self, input_shape):
        return scaled_shape(input_shape, self.factor, self.filters)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


@keras.saving.register_keras_serializable(package="segtrain")
class BilinearUpsample(keras.layers.Layer):
    """Fixed (non-learned) linear upsampling by ``factor``: the dilated networks' baseline."""

    def __init__(self, factor=2, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, x):
        return linear_upsample(x, per_axis(self.factor, len(x.shape) - 2, "factor"))

    def compute_output_shape(self, input_shape):
        return scaled_shape(input_shape, self.factor, None)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


# decoder name -> factory(factor, filters, kernel_size, use_bias, kernel_initializer, name)
UPSAMPLERS: dict[str, Callable[..., keras.layers.Layer]] = {
    "unpool": lambda factor, filters, kernel_size, use_bias, kernel_initializer, name: MaxUnpool(factor, name=name),
    "resize_conv": lambda factor, filters, kernel_size, use_bias, kernel_initializer, name: ResizeConv(
        filters, factor, kernel_size, use_bias=use_bias, kernel_initializer=kernel_initializer, name=name),
    "transposed": lambda factor, filters, kernel_size, use_bias, kernel_initializer, name: TransposedConvUp(
        filters, factor, kernel_size, use_bias=use_bias, kernel_initializer=kernel_initializer, name=name),
    "bilinear": lambda factor, filters, kernel_size, use_bias, kernel_initializer, name: BilinearUpsample(
        factor, name=name),
}
# Every decoder (upsampler) a zoo model can name in ``model.decoder``.
DECODERS = tuple(UPSAMPLERS)
LEARNED_DECODERS = ("resize_conv", "transposed")  # upsample and convolve in one layer


def upsampler(decoder: str, factor=2, filters: int | None = None, kernel_size=3, *, use_bias: bool = True,
              kernel_initializer="glorot_uniform", name: str | None = None) -> keras.layers.Layer:
    """The layer that upsamples by ``factor`` for decoder ``decoder`` (one of ``DECODERS``).

    ``unpool`` is a ``MaxUnpool``, called on ``[values, indices, pre_pool_tensor]``; every
    other decoder is called on the tensor alone. ``filters``, ``kernel_size``, ``use_bias``
    and ``kernel_initializer`` apply to the learned ones (``LEARNED_DECODERS``), which
    convolve while they upsample; ``bilinear`` and ``unpool`` keep the channel count.
    """
    if decoder not in UPSAMPLERS:
        raise SegtrainError(f"model.decoder: unknown decoder {decoder!r}; use one of {', '.join(DECODERS)}")
    return UPSAMPLERS[decoder](factor, filters, kernel_size, use_bias, kernel_initializer, name)
