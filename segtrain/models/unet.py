"""U-Net (Ronneberger, Fischer and Brox, MICCAI 2015; the 3-D U-Net of Cicek et al., 2016).

``depth`` encoder stages of two 3x3 convs (``width`` x 1, 2, 4, ... channels, norm + ReLU)
each followed by a 2x2 max-pool, a bottleneck of two convs at ``width * 2**depth``, then
``depth`` decoder stages that upsample x2, concatenate the encoder stage's output of the
same resolution (the skip connection) and apply two convs; a 1x1 classifier. Any rank
(1-D signals, 2-D images, 3-D volumes); inputs of any size are padded to a multiple of
``2**depth`` and the logits cropped back.

The decoder's x2 step comes from the zoo's upsampler factory: ``resize_conv`` (default, free
of checkerboard artifacts) and ``transposed`` are learned and halve the channels to the
skip's width (the paper's "up-convolution"); ``bilinear`` is fixed and keeps them. ``unpool``
is not offered: the skips already carry the encoder's spatial detail.
"""

from __future__ import annotations

from typing import Sequence

import keras

from segtrain.errors import SegtrainError
from segtrain.models.layers import ConvNormAct, upsampler
from segtrain.models.registry import IMAGENET, head, register_model, stem

UNET_DECODERS = ("resize_conv", "transposed", "bilinear")  # default first
_POOLS = {1: keras.layers.MaxPooling1D, 2: keras.layers.MaxPooling2D, 3: keras.layers.MaxPooling3D}


def _double_conv(x, filters: int, kernel_size: int, norm: str, name: str):
    x = ConvNormAct(filters, kernel_size, norm=norm, name=f"{name}_conv1")(x)
    return ConvNormAct(filters, kernel_size, norm=norm, name=f"{name}_conv2")(x)


@register_model("unet", UNET_DECODERS)
def unet(num_classes: int, input_shape: Sequence, decoder: str = "resize_conv", norm: str = "batch", *,
         width: int = 64, depth: int = 4, mean=IMAGENET, std=IMAGENET, kernel_size: int = 3,
         upsample_kernel: int = 2) -> keras.Model:
    """U-Net with ``depth`` pools (total stride ``2**depth``). At width 64, depth 4, norm
    ``none``, 1 input channel and 2 classes it has the paper's 31,030,658 parameters with the
    ``transposed`` decoder and the paper's 2x2 up-convolution (``upsample_kernel``)."""
    if not 1 <= int(depth) <= 8:
        raise SegtrainError(f"model.depth: {depth!r} pools; use 1 to 8 (the total stride is 2**depth)")
    depth = int(depth)
    inputs, x = stem(input_shape, mean, std, multiple=2 ** depth)
    pool = _POOLS[len(x.shape) - 2]
    skips = []
    for s in range(1, depth + 1):
        x = _double_conv(x, width * 2 ** (s - 1), kernel_size, norm, f"enc{s}")
        skips.append(x)
        x = pool(2, name=f"enc{s}_pool")(x)
    x = _double_conv(x, width * 2 ** depth, kernel_size, norm, "bottleneck")
    for s in range(depth, 0, -1):
        filters = width * 2 ** (s - 1)
        x = upsampler(decoder, 2, filters, upsample_kernel, name=f"dec{s}_{decoder}")(x)
        x = keras.layers.Concatenate(name=f"dec{s}_skip")([skips[s - 1], x])
        x = _double_conv(x, filters, kernel_size, norm, f"dec{s}")
    logits = ConvNormAct(num_classes, 1, norm="none", activation=None, kernel_initializer="glorot_uniform",
                         name="classifier")(x)
    return head(inputs, logits, "unet")

