"""DeepLabV3+ (Chen et al., ECCV 2018): atrous encoder, ASPP, low-level skip, bilinear upsampling.

The encoder is a ``keras.applications`` ResNet50 or MobileNetV2 rebuilt atrous
(``encoders.build_encoder``): for output stride 16 its last stride-2 stage gets stride 1
and dilation 2, for 8 the last two stages (dilation 2, then 4), so ``model.output_stride``
is the real resolution of the features ASPP sees. ASPP runs a 1x1 conv, three 3x3 convs
dilated 6/12/18 (12/24/36 at output stride 8) and image pooling (global average, 1x1 conv,
broadcast back) in parallel, concatenates them and projects with a 1x1 conv. The decoder
upsamples that bilinearly to stride 4, concatenates a 1x1 projection of the encoder's
stride-4 features, applies two 3x3 convs and the classifier, and upsamples x4 bilinearly.
Convs are plain (not separable), as for a ResNet encoder. 2-D only (the encoders are).
A keras-hub backbone (``keras_hub:<preset>``) is not rebuilt atrous: ASPP reads its stride-32
level with the rates scaled to that stride (3/6/9), the skip its stride-4 level.
``width`` scales the head: 4 x ``width`` channels in ASPP and decoder (256 at 64), and
3/4 x ``width`` in the skip projection (48 at 64); ``norm`` applies to the head, the
encoder keeps its own batch norms.
"""

from __future__ import annotations

from typing import Sequence

import keras
from keras import ops

from segtrain.errors import SegtrainError
from segtrain.models.blocks import ConvNormAct
from segtrain.models.encoders import ENCODERS, build_encoder, feature_pyramid, normalisation
from segtrain.models.hub import HUB_STRIDE, is_hub_encoder
from segtrain.models.registry import IMAGENET, head, register_model, stem
from segtrain.models.shapes import matched_shape, spatial_shape
from segtrain.models.upsampling import upsampler

DEEPLAB_ENCODERS = ("resnet50", "mobilenetv2")
OUTPUT_STRIDES = (8, 16)
ASPP_RATES = (6, 12, 18)  # at output stride 16; scaled by 16 / output_stride
LOW_LEVEL = {"resnet50": "conv2_block3_out", "mobilenetv2": "block_3_expand_relu"}  # stride 4


@keras.saving.register_keras_serializable(package="segtrain")
class BroadcastToMatch(keras.layers.Layer):
    """Broadcast ``x`` (spatial size 1, e.g. a global pool) to the spatial size of ``reference``."""

    def call(self, inputs):
        x, reference = inputs
        rank = len(x.shape) - 2
        shape = [ops.shape(x)[0], *spatial_shape(reference, rank), ops.shape(x)[-1]]
        return ops.broadcast_to(x, shape)

    def compute_output_shape(self, input_shapes):
        return matched_shape(*input_shapes)


def aspp(x, filters: int, rates: Sequence[int], norm: str, dropout: float):
    """Atrous spatial pyramid pooling: 1x1, dilated 3x3 per rate, image pooling; concat, 1x1."""
    branches = [ConvNormAct(filters, 1, norm=norm, name="aspp_1x1")(x)]
    for rate in rates:
        branches.append(ConvNormAct(filters, 3, dilation_rate=rate, norm=norm, name=f"aspp_rate{rate}")(x))
    pooled = keras.layers.GlobalAveragePooling2D(keepdims=True, name="aspp_image_pool")(x)
    pooled = ConvNormAct(filters, 1, norm=norm, name="aspp_image_conv")(pooled)
    branches.append(BroadcastToMatch(name="aspp_image_broadcast")([pooled, x]))
    x = keras.layers.Concatenate(name="aspp_concat")(branches)
    x = ConvNormAct(filters, 1, norm=norm, name="aspp_project")(x)
    return keras.layers.Dropout(dropout, name="aspp_dropout")(x)


@register_model("deeplabv3plus", ("bilinear",), ranks=(2,))
def deeplabv3plus(num_classes: int, input_shape: Sequence, decoder: str = "bilinear", norm: str = "batch", *,
                  width: int = 64, mean=IMAGENET, std=IMAGENET, encoder: str = "resnet50",
                  encoder_weights: str = "none", output_stride: int = 16, dropout: float = 0.1) -> keras.Model:
    """DeepLabV3+ on a ResNet50 / MobileNetV2 encoder at output stride 8 or 16; 2-D inputs."""
    if encoder not in DEEPLAB_ENCODERS and not is_hub_encoder(encoder):
        raise SegtrainError(f"model.encoder: deeplabv3plus takes {' or '.join(DEEPLAB_ENCODERS)} or keras_hub:<preset>, "
                            f"got {encoder!r}")
    if output_stride not in OUTPUT_STRIDES:
        raise SegtrainError(f"model.output_stride: deeplabv3plus takes 8 or 16, got {output_stride!r}")
    mean, std = normalisation(encoder, encoder_weights, input_shape, mean, std)
    if is_hub_encoder(encoder):
        output_stride = HUB_STRIDE
        inputs, x = stem(input_shape, mean, std, multiple=output_stride)
        _, low_level, _, _, deepest = feature_pyramid(x, encoder)
    else:
        inputs, x = stem(input_shape, mean, std, multiple=output_stride)
        backbone = build_encoder(x, encoder, encoder_weights, output_stride)
        deepest = backbone.get_layer(ENCODERS[encoder].pyramid[-1]).output
        low_level = backbone.get_layer(LOW_LEVEL[encoder]).output
    if low_level is None:
        raise SegtrainError(f"model.encoder: {encoder} has no stride-4 level for the decoder's skip")
    rates = [max(1, r * 16 // output_stride) for r in ASPP_RATES]
    x = aspp(deepest, 4 * width, rates, norm, dropout)
    x = upsampler(decoder, output_stride // 4, name="decoder_up")(x)
    skip = ConvNormAct(max(1, 3 * width // 4), 1, norm=norm, name="decoder_skip")(low_level)
    x = keras.layers.Concatenate(name="decoder_concat")([x, skip])
    for i in (1, 2):
        x = ConvNormAct(4 * width, 3, norm=norm, name=f"decoder_conv{i}")(x)
    logits = ConvNormAct(num_classes, 1, norm="none", activation=None, kernel_initializer="glorot_uniform",
                         name="classifier")(x)
    return head(inputs, upsampler(decoder, 4, name="up_bilinear")(logits), "deeplabv3plus")
