"""ImageNet-initialised encoders (``model.encoder_weights: none | imagenet | PATH``).

U-Net's ``keras.applications`` encoders (``BACKBONES``) load through ``backbone``; what
follows is about VGG16, whose convs are also SegNet's and the dilated front-end's.

SegNet's encoder and the dilated front-end are VGG16's 13 3x3 convolutions; both papers
started them from ImageNet. The weights come from ``keras.applications.VGG16`` (include_top
False): ``imagenet`` downloads them on first use (cached in ``~/.keras/models``), a path
loads the file ``keras.applications`` itself downloads
(``vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5``) or a ``.weights.h5`` saved from a
``keras.applications.VGG16`` model. Nothing else is transferred (the dilated fc6/fc7 start
from scratch).

Those weights expect caffe-style input: BGR, the ImageNet mean subtracted, no scaling. The
zoo's models take RGB, so the first kernel's input channels are reversed and the model's
``normalize`` layer becomes the RGB-ordered mean with std 1: the encoder then computes
exactly VGG16's feature maps on the same photo. Under a norm the conv has no bias, so
VGG16's bias moves to the norm's ``beta`` and ``gamma`` cancels the initial statistics.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import keras
import numpy as np

from segtrain.errors import SegtrainError

CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)  # keras.applications.vgg16.preprocess_input, in RGB order
VGG16_BLOCKS = (2, 2, 3, 3, 3)  # convs per block, in order
VGG16_CONVS = [f"block{b}_conv{i}" for b, n in enumerate(VGG16_BLOCKS, start=1) for i in range(1, n + 1)]


@dataclass(frozen=True)
class Backbone:
    """A ``keras.applications`` encoder: its constructor, the input it expects and its features."""

    build: Callable[..., keras.Model]
    weights_file: str  # the no-top file keras.applications downloads for ``imagenet``
    features: tuple[str, ...]  # layer outputs at strides 2, 4, 8, 16, 32
    mean: tuple | None  # RGB normalisation of 0..255 pixels the weights expect (None: built in)
    std: tuple | None
    bgr_conv: str | None  # first conv, whose kernel is flipped so RGB input gives the BGR result


BACKBONES = {
    "vgg16": Backbone(keras.applications.VGG16, "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
                      ("block2_conv2", "block3_conv3", "block4_conv3", "block5_conv3", "block5_pool"),
                      CAFFE_MEAN_RGB, None, "block1_conv1"),
    "resnet50": Backbone(keras.applications.ResNet50, "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
                         ("conv1_relu", "conv2_block3_out", "conv3_block4_out", "conv4_block6_out", "conv5_block3_out"),
                         CAFFE_MEAN_RGB, None, "conv1_conv"),
    "mobilenetv2": Backbone(keras.applications.MobileNetV2, "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
                            ("block_1_expand_relu", "block_3_expand_relu", "block_6_expand_relu",
                             "block_13_expand_relu", "out_relu"), (127.5,) * 3, (127.5,) * 3, None),
    "efficientnetb0": Backbone(keras.applications.EfficientNetB0, "efficientnetb0_notop.h5",
                               ("block2a_expand_activation", "block3a_expand_activation", "block4a_expand_activation",
                                "block6a_expand_activation", "top_activation"), None, None, None),
}


def check_encoder_weights(weights: str, input_shape: Sequence, width: int, model: str) -> bool:
    """True when ``weights`` asks for a VGG16 transfer that this model can take."""
    if weights in (None, "none"):
        return False
    if weights != "imagenet" and not Path(weights).is_file():
        raise SegtrainError(f"model.encoder_weights: {weights!r} is neither none, imagenet nor an existing "
                            "weights file; pass the path of a VGG16 .h5 / .weights.h5 file")
    if len(input_shape) != 3 or input_shape[-1] != 3 or width != 64:
        raise SegtrainError(f"model.encoder_weights: VGG16 weights fit {model} only on 2-D RGB input with "
                            f"model.width 64 (got input {tuple(input_shape)}, width {width}); set it to none")
    return True


def backbone(name: str, weights: str | None) -> keras.Model:
    """``keras.applications.<name>`` without the classifier (any input size), loaded from
    ``weights`` (``None``: random, ``imagenet``, or a weights file), first kernel flipped to RGB."""
    spec = BACKBONES[name]
    try:
        model = spec.build(include_top=False, weights=weights, input_shape=(None, None, 3))
    except Exception as err:  # download failures arrive as several exception types
        if weights == "imagenet":
            raise SegtrainError(
                f"model.encoder_weights: imagenet: could not download {name}'s ImageNet weights ({err}); "
                f"download {spec.weights_file} on a machine with internet and pass its path instead") from err
        raise SegtrainError(f"model.encoder_weights: {weights}: not a {name} weights file ({err})") from err
    if spec.bgr_conv is not None:
        conv = model.get_layer(spec.bgr_conv)
        conv.kernel.assign(np.asarray(conv.kernel)[:, :, ::-1, :])
    return model


def vgg16(weights: str) -> keras.Model:
    """VGG16 loaded from ``weights`` with its first kernel reading RGB (see the module docstring)."""
    return backbone("vgg16", weights)


def transfer_vgg16(model: keras.Model, source: keras.Model, layer_names: Sequence[str]) -> None:
    """Copy VGG16's 13 convs into ``layer_names`` (ConvNormAct layers, in VGG order) of ``model``."""
    for ours, theirs in zip(layer_names, VGG16_CONVS):
        layer = model.get_layer(ours)
        kernel, bias = source.get_layer(theirs).get_weights()
        layer.kernel.assign(kernel)
        if layer.bias is not None:
            layer.bias.assign(bias)
        if layer.norm_layer is not None:
            _absorb_bias(layer.norm_layer, bias)


def _absorb_bias(norm: keras.layers.Layer, bias: np.ndarray) -> None:
    """Set ``norm`` so that at initialisation it adds ``bias`` and otherwise passes values through."""
    if isinstance(norm, keras.layers.BatchNormalization):  # inference: (z - 0) / sqrt(1 + eps) * gamma + beta
        norm.gamma.assign(np.full(bias.shape, np.sqrt(1.0 + norm.epsilon), "float32"))
    norm.beta.assign(bias)
