"""Dilated front-end and context module (Yu and Koltun, "Multi-Scale Context Aggregation by
Dilated Convolutions", ICLR 2016).

The front-end is VGG-16 with pool4 and pool5 removed: conv5 is dilated by 2 and the fc6
equivalent (a 7x7 conv) by 4, so the output stride is 8. The context module stacks 3x3
convs with dilations 1, 1, 2, 4, 8, 16, 1 (each followed by ReLU, no norm, so the
identity initialisation passes the front-end's logits through unchanged at the start)
and a final 1x1 conv; ``basic`` keeps ``num_classes`` channels, ``large`` widens them to
2, 2, 4, 8, 16, 32, 32 x ``num_classes``. The final x8 upsampling of the logits is
``bilinear`` (fixed, the paper), ``resize_conv`` or ``transposed`` (three learned x2
steps of ``num_classes`` channels); ``unpool`` has no encoder indices to use here.
"""

from __future__ import annotations

from typing import Sequence

import keras

from segtrain.errors import SegtrainError
from segtrain.models.blocks import ConvNormAct, IdentityInit
from segtrain.models.encoders import VGG16_CONVS, normalisation, transfer_vgg16
from segtrain.models.registry import IMAGENET, head, register_model, stem
from segtrain.models.upsampling import upsampler

DILATED_DECODERS = ("bilinear", "resize_conv", "transposed")  # no encoder indices to unpool with; default first
CONTEXT_DILATIONS = (1, 1, 2, 4, 8, 16, 1)
LARGE_MULTIPLIERS = (2, 2, 4, 8, 16, 32, 32)
_POOLS = {1: keras.layers.MaxPooling1D, 2: keras.layers.MaxPooling2D, 3: keras.layers.MaxPooling3D}


def frontend(x, num_classes: int, norm: str, width: int, fc_width: int, dropout: float):
    """VGG-16 front-end at output stride 8; returns logits (``num_classes`` channels)."""
    pool = _POOLS[len(x.shape) - 2]
    w = width
    for s, (n, f) in enumerate([(2, w), (2, 2 * w), (3, 4 * w)], start=1):
        for i in range(1, n + 1):
            x = ConvNormAct(f, 3, norm=norm, name=f"conv{s}_{i}")(x)
        x = pool(2, name=f"pool{s}")(x)
    for i in range(1, 4):
        x = ConvNormAct(8 * w, 3, norm=norm, name=f"conv4_{i}")(x)
    for i in range(1, 4):
        x = ConvNormAct(8 * w, 3, dilation_rate=2, norm=norm, name=f"conv5_{i}")(x)
    x = ConvNormAct(fc_width, 7, dilation_rate=4, norm=norm, name="fc6")(x)
    x = keras.layers.Dropout(dropout, name="drop6")(x)
    x = ConvNormAct(fc_width, 1, norm=norm, name="fc7")(x)
    x = keras.layers.Dropout(dropout, name="drop7")(x)
    return ConvNormAct(num_classes, 1, norm="none", activation=None, kernel_initializer="glorot_uniform",
                       name="final")(x)


def context_module(x, num_classes: int, context: str, seed: int = 0):
    """Identity-initialised dilated context module on logits; returns refined logits."""
    if context not in ("basic", "large"):
        raise SegtrainError(f"model.context: unknown context {context!r}; use basic or large")
    widths = [num_classes] * 7 if context == "basic" else [m * num_classes for m in LARGE_MULTIPLIERS]
    noise = 0.0 if context == "basic" else 1e-3  # breaks symmetry between duplicated channels
    for i, (f, d) in enumerate(zip(widths, CONTEXT_DILATIONS), start=1):
        x = ConvNormAct(f, 3, dilation_rate=d, norm="none",
                        kernel_initializer=IdentityInit(noise, seed=seed + i), name=f"ctx{i}")(x)
    return ConvNormAct(num_classes, 1, norm="none", activation=None,
                       kernel_initializer=IdentityInit(noise, seed=seed + 8), name="ctx_final")(x)


def upsample_x8(x, decoder: str, num_classes: int, kernel_size: int):
    """x8 in one fixed ``bilinear`` step, or in three learned x2 steps of ``num_classes`` channels."""
    if decoder == "bilinear":
        return upsampler(decoder, 8, name="up_bilinear")(x)
    for i in range(1, 4):
        x = upsampler(decoder, 2, num_classes, kernel_size, name=f"up{i}_{decoder}")(x)
    return x


def _dilated(name, num_classes, input_shape, decoder, norm, width, mean, std, fc_width, dropout,
             upsample_kernel, encoder_weights, context=None):
    mean, std = normalisation("vgg16", encoder_weights, input_shape, mean, std)
    inputs, x = stem(input_shape, mean, std, multiple=8)
    x = frontend(x, num_classes, norm, width, 64 * width if fc_width is None else fc_width, dropout)
    if context is not None:
        x = context_module(x, num_classes, context)
    model = head(inputs, upsample_x8(x, decoder, num_classes, upsample_kernel), name)
    if encoder_weights != "none":  # VGG16's 13 convs, and fc6/fc7 from a file with top (docs/models.md)
        names = {v: "conv" + v[len("block"):].replace("_conv", "_") for v in VGG16_CONVS}
        transfer_vgg16(model, encoder_weights, {**names, "fc1": "fc6", "fc2": "fc7"})
    return model


@register_model("dilated_frontend", DILATED_DECODERS)
def dilated_frontend(num_classes: int, input_shape: Sequence, decoder: str = "bilinear", norm: str = "batch", *,
                     width: int = 64, mean=IMAGENET, std=IMAGENET, fc_width: int | None = None,
                     dropout: float = 0.5, upsample_kernel: int = 3, encoder_weights: str = "none") -> keras.Model:
    """VGG-16 dilated front-end (``fc_width`` defaults to 64 x ``width`` = 4096), any rank;
    ``encoder_weights`` (none | imagenet | path) initialises conv1_1..conv5_3 from VGG16."""
    return _dilated("dilated_frontend", num_classes, input_shape, decoder, norm, width, mean, std,
                    fc_width, dropout, upsample_kernel, encoder_weights)


@register_model("dilated_context", DILATED_DECODERS)
def dilated_context(num_classes: int, input_shape: Sequence, decoder: str = "bilinear", norm: str = "batch", *,
                    width: int = 64, mean=IMAGENET, std=IMAGENET, context: str = "basic",
                    fc_width: int | None = None, dropout: float = 0.5, upsample_kernel: int = 3,
                    encoder_weights: str = "none") -> keras.Model:
    """Front-end + context module (``context``: basic | large), any rank."""
    return _dilated("dilated_context", num_classes, input_shape, decoder, norm, width, mean, std,
                    fc_width, dropout, upsample_kernel, encoder_weights, context)
