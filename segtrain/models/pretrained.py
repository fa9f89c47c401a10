"""ImageNet-initialised VGG16 encoders (``model.encoder_weights: none | imagenet | PATH``).

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

from pathlib import Path
from typing import Sequence

import keras
import numpy as np

from segtrain.errors import SegtrainError

CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)  # keras.applications.vgg16.preprocess_input, in RGB order
VGG16_BLOCKS = (2, 2, 3, 3, 3)  # convs per block, in order
VGG16_CONVS = [f"block{b}_conv{i}" for b, n in enumerate(VGG16_BLOCKS, start=1) for i in range(1, n + 1)]
_NOTOP_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"


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


def vgg16(weights: str) -> keras.Model:
    """``keras.applications.VGG16`` without the classifier, loaded from ``weights``."""
    try:
        return keras.applications.VGG16(include_top=False, weights=weights, input_shape=(None, None, 3))
    except Exception as err:  # download failures arrive as several exception types
        if weights == "imagenet":
            raise SegtrainError(
                f"model.encoder_weights: imagenet: could not download VGG16's ImageNet weights ({err}); "
                f"download {_NOTOP_FILE} on a machine with internet and pass its path instead") from err
        raise SegtrainError(f"model.encoder_weights: {weights}: not a VGG16 weights file ({err})") from err


def transfer_vgg16(model: keras.Model, source: keras.Model, layer_names: Sequence[str]) -> None:
    """Copy VGG16's 13 convs into ``layer_names`` (ConvNormAct layers, in VGG order) of ``model``."""
    for i, (ours, theirs) in enumerate(zip(layer_names, VGG16_CONVS)):
        layer = model.get_layer(ours)
        kernel, bias = source.get_layer(theirs).get_weights()
        if i == 0:
            kernel = kernel[:, :, ::-1, :]  # VGG16 reads BGR; the zoo's models take RGB
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
