"""SegNet (VGG-16 encoder) and SegNet-Basic (Badrinarayanan, Kendall and Cipolla).

Each decoder stage upsamples x2, then convolves. The ``decoder`` switch picks how:

- ``unpool``: ``MaxUnpool`` with the mirrored encoder pool's indices (the paper), then convs;
- ``bilinear``: fixed linear upsampling, then convs;
- ``resize_conv``: the stage's first conv becomes a nearest resize-convolution;
- ``transposed``: the stage's first conv becomes a stride-2 transposed convolution.

The learned upsamplers replace (not add to) the first conv, with the same kernel size,
so all four decoders have the same parameter count and compare on equal terms. Inputs
of any size are padded to a multiple of the total stride and the logits cropped back.
"""

from __future__ import annotations

from typing import Sequence

import keras

from segtrain.models.blocks import ConvNormAct, make_norm
from segtrain.models.encoders import VGG16_CONVS, normalisation, transfer_vgg16
from segtrain.models.pooling import MaxPoolWithIndices
from segtrain.models.registry import IMAGENET, head, register_model, stem
from segtrain.models.upsampling import DECODERS, LEARNED_DECODERS, upsampler


def up_stage(x, pooled, decoder: str, filters: Sequence[int], kernel_size: int, norm: str,
             activation: str | None, name: str):
    """One decoder stage: x2 upsampling, then ``len(filters)`` convs.

    ``pooled`` is ``(indices, pre_pool_tensor)`` of the mirrored encoder pool (used by
    ``unpool`` only).
    """
    up = upsampler(decoder, 2, filters[0], kernel_size, use_bias=norm == "none", kernel_initializer="he_normal",
                   name=f"{name}_{decoder}")
    x = up([x, *pooled]) if decoder == "unpool" else up(x)
    first = 0
    if decoder in LEARNED_DECODERS:  # the upsampler was the stage's first conv
        norm_layer = make_norm(norm, filters[0], name=f"{name}_{decoder}_norm")
        if norm_layer is not None:
            x = norm_layer(x)
        if activation:
            x = keras.layers.Activation(activation, name=f"{name}_{decoder}_act")(x)
        first = 1
    for i, f in enumerate(filters[first:], start=first + 1):
        x = ConvNormAct(f, kernel_size, norm=norm, activation=activation, name=f"{name}_conv{i}")(x)
    return x


def _encoder_decoder(num_classes, input_shape, decoder, norm, mean, std, stages, kernel_size,
                     decoder_activation, name):
    """``stages``: list of conv widths per encoder stage; the decoder mirrors them."""
    inputs, x = stem(input_shape, mean, std, multiple=2 ** len(stages))
    pools = []
    for s, widths in enumerate(stages, start=1):
        for i, f in enumerate(widths, start=1):
            x = ConvNormAct(f, kernel_size, norm=norm, name=f"enc{s}_conv{i}")(x)
        pre = x
        x, indices = MaxPoolWithIndices(2, name=f"enc{s}_pool")(x)
        pools.append((indices, pre))
    for s in range(len(stages), 0, -1):
        widths = list(stages[s - 1])
        widths[-1] = stages[s - 2][-1] if s > 1 else widths[-1]
        x = up_stage(x, pools[s - 1], decoder, widths, kernel_size, norm, decoder_activation, f"dec{s}")
    logits = ConvNormAct(num_classes, 1, norm="none", activation=None, kernel_initializer="glorot_uniform",
                         name="classifier")(x)
    return head(inputs, logits, name)


@register_model("segnet_basic", DECODERS)
def segnet_basic(num_classes: int, input_shape: Sequence, decoder: str = "unpool", norm: str = "batch", *,
                 width: int = 64, mean=IMAGENET, std=IMAGENET, kernel_size: int = 7) -> keras.Model:
    """SegNet-Basic: 4 x (7x7 conv ``width`` + norm + ReLU + 2x2 pool), mirrored linear decoder
    (no ReLU in the decoder, as in the paper), 1x1 classifier; ~1.4M parameters at width 64.
    Any rank (1-D, 2-D, 3-D)."""
    return _encoder_decoder(num_classes, input_shape, decoder, norm, mean, std, [[width]] * 4,
                            kernel_size, None, "segnet_basic")


@register_model("segnet", DECODERS)
def segnet(num_classes: int, input_shape: Sequence, decoder: str = "unpool", norm: str = "batch", *,
           width: int = 64, mean=IMAGENET, std=IMAGENET, encoder_weights: str = "none") -> keras.Model:
    """SegNet: VGG-16 encoder (13 3x3 convs, 5 pools; widths ``width`` x 1, 2, 4, 8, 8) and the
    mirrored decoder with norm + ReLU, 1x1 classifier (~29.4M parameters at width 64).
    ``encoder_weights`` (none | imagenet | path) initialises the encoder from VGG16."""
    w = width
    stages = [[w] * 2, [2 * w] * 2, [4 * w] * 3, [8 * w] * 3, [8 * w] * 3]
    mean, std = normalisation("vgg16", encoder_weights, input_shape, mean, std)
    model = _encoder_decoder(num_classes, input_shape, decoder, norm, mean, std, stages, 3, "relu", "segnet")
    if encoder_weights != "none":
        transfer_vgg16(model, encoder_weights, {v: "enc" + v[len("block"):] for v in VGG16_CONVS})
    return model
