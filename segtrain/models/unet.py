"""U-Net (Ronneberger, Fischer and Brox, MICCAI 2015; the 3-D U-Net of Cicek et al., 2016).

``depth`` encoder stages of two 3x3 convs (``width`` x 1, 2, 4, ... channels, norm + ReLU)
each followed by a 2x2 max-pool, a bottleneck of two convs at ``width * 2**depth``, then
``depth`` decoder stages that upsample x2, concatenate the encoder stage's output of the
same resolution (the skip connection) and apply two convs; a 1x1 classifier. Any rank
(1-D signals, 2-D images, 3-D volumes); inputs of any size are padded to a multiple of
``2**depth`` and the logits cropped back.

With ``encoder`` set to a ``keras.applications`` network (``vgg16``, ``resnet50``,
``mobilenetv2``, ``efficientnetb0``; optionally ImageNet-initialised through
``encoder_weights``) or a keras-hub backbone preset (``keras_hub:<preset>``, with its weights) its features at strides 2 to 16 are the skips, its stride-32 output the
bottleneck, and a last decoder stage without skip returns to full resolution (the
segmentation_models layout; ``width`` 16 gives its decoder widths 256, 128, 64, 32, 16).

The decoder's x2 step comes from the zoo's upsampler factory: ``resize_conv`` (default, free
of checkerboard artifacts) and ``transposed`` are learned and halve the channels to the
skip's width (the paper's "up-convolution"); ``bilinear`` is fixed and keeps them. ``unpool``
is not offered: the skips already carry the encoder's spatial detail.
"""

from __future__ import annotations

from typing import Sequence

import keras

from segtrain.errors import SegtrainError
from segtrain.models.blocks import ConvNormAct
from segtrain.models.encoders import ENCODERS, feature_pyramid, normalisation
from segtrain.models.hub import is_hub_encoder
from segtrain.models.registry import IMAGENET, head, register_model, stem
from segtrain.models.upsampling import upsampler

UNET_DECODERS = ("resize_conv", "transposed", "bilinear")  # default first
_POOLS = {1: keras.layers.MaxPooling1D, 2: keras.layers.MaxPooling2D, 3: keras.layers.MaxPooling3D}


def _double_conv(x, filters: int, kernel_size: int, norm: str, name: str):
    x = ConvNormAct(filters, kernel_size, norm=norm, name=f"{name}_conv1")(x)
    return ConvNormAct(filters, kernel_size, norm=norm, name=f"{name}_conv2")(x)


@register_model("unet", UNET_DECODERS)
def unet(num_classes: int, input_shape: Sequence, decoder: str = "resize_conv", norm: str = "batch", *,
         width: int = 64, depth: int = 4, mean=IMAGENET, std=IMAGENET, kernel_size: int = 3,
         upsample_kernel: int = 2, encoder: str | None = "plain", encoder_weights: str = "none") -> keras.Model:
    """U-Net with ``depth`` pools (total stride ``2**depth``). At width 64, depth 4, norm
    ``none``, 1 input channel and 2 classes it has the paper's 31,030,658 parameters with the
    ``transposed`` decoder and the paper's 2x2 up-convolution (``upsample_kernel``).

    ``encoder`` other than ``plain`` (or None) is a ``keras.applications`` network (``ENCODERS``: 2-D
    RGB only, stride 32, ``depth`` ignored) initialised from ``encoder_weights`` (``none``,
    ``imagenet`` or a file); its own input normalisation replaces ``mean``/``std``."""
    if encoder not in (None, "plain"):
        return _backbone_unet(num_classes, input_shape, decoder, norm, width, kernel_size, upsample_kernel,
                              encoder, encoder_weights, mean, std)
    if encoder_weights not in (None, "none"):
        raise SegtrainError("model.encoder_weights: the plain U-Net encoder has no pretrained weights; "
                            f"set model.encoder to one of {', '.join(ENCODERS)} or the weights to none")
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
    return _decode(inputs, x, skips, num_classes, decoder, norm, width, kernel_size, upsample_kernel)


def _decode(inputs, x, skips, num_classes, decoder, norm, width, kernel_size, upsample_kernel):
    """Decoder stage ``s`` (deepest first) upsamples x2 to stride ``2**(s-1)``, concatenates
    ``skips[s-1]`` (None: no skip at that stride) and applies two convs of ``width * 2**(s-1)``."""
    for s in range(len(skips), 0, -1):
        filters = width * 2 ** (s - 1)
        x = upsampler(decoder, 2, filters, upsample_kernel, name=f"dec{s}_{decoder}")(x)
        if skips[s - 1] is not None:
            x = keras.layers.Concatenate(name=f"dec{s}_skip")([skips[s - 1], x])
        x = _double_conv(x, filters, kernel_size, norm, f"dec{s}")
    logits = ConvNormAct(num_classes, 1, norm="none", activation=None, kernel_initializer="glorot_uniform",
                         name="classifier")(x)
    return head(inputs, logits, "unet")


def _backbone_unet(num_classes, input_shape, decoder, norm, width, kernel_size, upsample_kernel, encoder,
                   encoder_weights, mean, std):
    if encoder not in ENCODERS and not is_hub_encoder(encoder):
        raise SegtrainError(f"model.encoder: unknown encoder {encoder!r}; use plain, keras_hub:<preset> "
                            f"or one of {', '.join(ENCODERS)}")
    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise SegtrainError(f"model.encoder: {encoder} takes 2-D RGB input, got {tuple(input_shape)}; use plain")
    mean, std = normalisation(encoder, encoder_weights, input_shape, mean, std)
    inputs, x = stem(input_shape, mean, std, multiple=32)
    *skips, x = feature_pyramid(x, encoder, encoder_weights)  # strides 2, 4, 8, 16 and the deepest, 32
    return _decode(inputs, x, [None] + skips, num_classes, decoder, norm, width, kernel_size, upsample_kernel)
