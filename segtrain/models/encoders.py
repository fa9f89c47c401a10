"""``keras.applications`` encoders for the zoo: pretrained weights and the input normalisation
they expect, VGG16 weight transfer into the zoo's own VGG-shaped encoders, atrous
(dilated) rebuilds for DeepLab, and feature pyramids for U-Net-style decoders.

``model.encoder_weights`` is ``none`` (fresh initialisation), ``imagenet`` (downloaded by
``keras.applications`` on first use, then cached in ``~/.keras/models``) or the path to a
weights file: the ``include_top=False`` file ``keras.applications`` downloads (e.g.
``vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5``) or a ``.weights.h5`` saved from the
same ``keras.applications`` model built with ``include_top=False``.

Zoo models take raw 0..255 RGB pixels and normalise in their first layer (``registry.stem``).
Weights come with their own preprocessing, which ``normalisation`` returns as a per-channel
RGB mean / std for that layer. Caffe-style weights (VGG16, ResNet50) expect BGR input with
the BGR mean subtracted and no scaling; instead of flipping the channels of every image the
transfer flips the input-channel axis of the first conv kernel, which is exactly equivalent:
``conv(bgr(x) - mean_bgr, K) == conv(x - mean_rgb, K[..., ::-1, :])``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import warnings
from typing import Mapping, Sequence

import h5py
import keras
import numpy as np

from segtrain.errors import SegtrainError
from segtrain.models.hub import HUB_ENCODER, hub_pyramid, is_hub_encoder, preset_normalisation

ENCODER_WEIGHTS = ("none", "imagenet")  # or the path to a weights file
_KEY = "model.encoder_weights"
# keras' caffe preprocessing subtracts (103.939, 116.779, 123.68) from BGR images: in RGB order
CAFFE_MEAN = (123.68, 116.779, 103.939)


@dataclasses.dataclass(frozen=True)
class AtrousStage:
    """How one stride-2 stage of an encoder trades its stride for dilation.

    ``strided``: the layers whose stride 2 becomes 1; ``pads``: ``ZeroPadding2D`` layers in
    front of a strided 'valid' conv, re-padded for the new rate; ``dilated``: a regex of the
    3x3 (depthwise) convs after the stride, whose dilation rate doubles.
    """

    strided: tuple[str, ...]
    pads: tuple[str, ...]
    dilated: str


@dataclasses.dataclass(frozen=True)
class Encoder:
    """One ``keras.applications`` backbone as the zoo uses it."""

    application: str  # the keras.applications constructor
    mean: tuple[float, ...] | None  # RGB, what the pretrained weights expect
    std: tuple[float, ...] | None
    bgr: bool  # the weights were trained on BGR input (caffe): flip the first conv's input channels
    first_conv: str
    pyramid: tuple[str, ...]  # layer outputs at strides 2, 4, 8, 16, 32
    atrous: Mapping[int, AtrousStage] = dataclasses.field(default_factory=dict)  # stage stride -> stage


ENCODERS: dict[str, Encoder] = {
    "vgg16": Encoder("VGG16", CAFFE_MEAN, None, True, "block1_conv1",
                     ("block2_conv2", "block3_conv3", "block4_conv3", "block5_conv3", "block5_pool")),
    "resnet50": Encoder(
        "ResNet50", CAFFE_MEAN, None, True, "conv1_conv",
        ("conv1_relu", "conv2_block3_out", "conv3_block4_out", "conv4_block6_out", "conv5_block3_out"),
        {16: AtrousStage(("conv4_block1_1_conv", "conv4_block1_0_conv"), (), r"conv4_block\d+_2_conv"),
         32: AtrousStage(("conv5_block1_1_conv", "conv5_block1_0_conv"), (), r"conv5_block\d+_2_conv")}),
    "mobilenetv2": Encoder(
        "MobileNetV2", (127.5,) * 3, (127.5,) * 3, False, "Conv1",  # keras 'tf' mode: x / 127.5 - 1
        ("block_1_expand_relu", "block_3_expand_relu", "block_6_expand_relu", "block_13_expand_relu", "out_relu"),
        {16: AtrousStage(("block_6_depthwise",), ("block_6_pad",), r"block_([7-9]|1[0-2])_depthwise"),
         32: AtrousStage(("block_13_depthwise",), ("block_13_pad",), r"block_1[4-6]_depthwise")}),
    # EfficientNet normalises inside the keras.applications model (Rescaling + Normalization).
    "efficientnetb0": Encoder(
        "EfficientNetB0", None, None, False, "stem_conv",
        ("block2a_expand_activation", "block3a_expand_activation", "block4a_expand_activation",
         "block6a_expand_activation", "top_activation")),
}
VGG16_CONVS = tuple(f"block{s}_conv{i}" for s, n in enumerate((2, 2, 3, 3, 3), start=1) for i in range(1, n + 1))


def _encoder(name: str) -> Encoder:
    if name not in ENCODERS:
        raise SegtrainError(f"model.encoder: unknown encoder {name!r}; use one of {', '.join(ENCODERS)}")
    return ENCODERS[name]


def check_weights(weights: str) -> str:
    """``none``, ``imagenet`` or an existing file; anything else is the ``model.encoder_weights`` error."""
    if weights in ENCODER_WEIGHTS or os.path.isfile(os.path.expanduser(str(weights))):
        return weights if weights in ENCODER_WEIGHTS else os.path.expanduser(weights)
    raise SegtrainError(f"{_KEY}: {weights!r} is neither none, imagenet nor an existing weights file; "
                        "use one of those or fix the path")


def normalisation(encoder: str, weights: str, input_shape: Sequence, mean, std) -> tuple:
    """The stem's (mean, std): the weights' own preprocessing when there are weights, else ``mean``/``std``.

    Checks first that ``weights`` exist and that ``input_shape`` is 2-D RGB if there are weights.
    A keras-hub encoder (``keras_hub:<preset>``) brings its preset's weights and image converter.
    """
    if is_hub_encoder(encoder):
        if weights not in (None, "none"):
            raise SegtrainError(f"{_KEY}: {encoder} brings its preset's own weights; remove {_KEY}")
        if len(input_shape) != 3:
            raise SegtrainError(f"model.encoder: {encoder} takes 2-D input (height, width, C), got {tuple(input_shape)}")
        return preset_normalisation(encoder[len(HUB_ENCODER):], "model.encoder", mean, std)
    if check_weights(weights) == "none":
        return mean, std
    spec = _encoder(encoder)
    _check_rgb(spec, input_shape)
    return spec.mean, spec.std


def _check_rgb(spec: Encoder, input_shape: Sequence) -> None:
    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise SegtrainError(f"{_KEY}: {spec.application} weights need 2-D RGB input (height, width, 3), "
                            f"got {tuple(input_shape)}; set {_KEY}: none")


def load_application(encoder: str, weights: str, input_shape: Sequence = (None, None, 3)) -> keras.Model:
    """The ``keras.applications`` model (``include_top=False``) holding ``weights``.

    A failed ``imagenet`` download or a file that does not fit is one ``SegtrainError`` line
    naming ``model.encoder_weights`` and the fix.
    """
    spec, weights = _encoder(encoder), check_weights(weights)
    build = getattr(keras.applications, spec.application)
    if weights == "none":
        return build(include_top=False, weights=None, input_shape=tuple(input_shape))
    _check_rgb(spec, input_shape)
    try:
        with warnings.catch_warnings():  # a file of another architecture: one warning per layer, before the error
            warnings.filterwarnings("ignore", message="Skipping nested container")
            return build(include_top=False, weights=weights, input_shape=tuple(input_shape))
    except Exception as err:  # keras raises plain Exception / ValueError for both failures
        reason = _load_failure(str(err))
        if weights == "imagenet":
            raise SegtrainError(
                f"{_KEY}: imagenet: cannot download the {spec.application} weights ({reason}); download "
                f"that file (include_top=False) on a machine with internet and set {_KEY} to its path"
            ) from err
        raise SegtrainError(
            f"{_KEY}: {weights} does not hold {spec.application} weights ({reason}); pass the include_top=False "
            f"file keras.applications downloads or a .weights.h5 saved from keras.applications.{spec.application}"
        ) from err


# Keras's message for a weights file of another shape; it goes on to print the variable's values.
_SHAPE_MISMATCH = re.compile(r"variable\.shape=(?P<expected>\([^)]*\)), Received: value\.shape=(?P<found>\([^)]*\))"
                             r".*?<Variable path=(?P<path>[^,]+)", re.S)


def _load_failure(message: str) -> str:
    """Keras's load error in a few words: the first variable whose shape differs (expected vs found), no values."""
    mismatch = _SHAPE_MISMATCH.search(message)
    if mismatch:
        return f"{mismatch['path']}: expected shape {mismatch['expected']}, found {mismatch['found']}"
    return " ".join(message.split())[:300]


def _first_conv_kernel(spec: Encoder, name: str, values: list[np.ndarray]) -> list[np.ndarray]:
    if spec.bgr and name == spec.first_conv:
        return [values[0][..., ::-1, :].copy(), *values[1:]]
    return values


def _read_legacy_h5(path: str) -> dict[str, list[np.ndarray]] | None:
    """Layer name -> weights of a file in the legacy HDF5 layout (the files ``keras.applications``
    downloads, with or without top); ``None`` for anything else (e.g. ``.weights.h5``)."""
    try:
        f = h5py.File(path, "r")
    except OSError:
        return None
    with f:
        if "layer_names" not in f.attrs:
            return None
        layers = {}
        for layer in map(_text, f.attrs["layer_names"]):
            layers[layer] = [np.asarray(f[layer][_text(w)]) for w in f[layer].attrs["weight_names"]]
        return layers


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def vgg16_weights(weights: str) -> dict[str, list[np.ndarray]]:
    """VGG16 layer name -> [kernel, bias] from ``imagenet`` or a file; a legacy file with top
    (``vgg16_weights_tf_dim_ordering_tf_kernels.h5``) also gives ``fc1`` and ``fc2``."""
    weights = check_weights(weights)
    stored = None if weights in ENCODER_WEIGHTS else _read_legacy_h5(weights)
    if stored is None:
        source = load_application("vgg16", weights)
        return {layer.name: layer.get_weights() for layer in source.layers if layer.weights}
    missing = [name for name in VGG16_CONVS if len(stored.get(name, ())) != 2]
    if missing:
        raise SegtrainError(f"{_KEY}: {weights} has no VGG16 layer {missing[0]}; pass the file "
                            "keras.applications downloads for VGG16 or a .weights.h5 saved from keras.applications.VGG16")
    return stored


def transfer_vgg16(model: keras.Model, weights: str, names: Mapping[str, str]) -> list[str]:
    """Copy VGG16's weights into ``model``'s layers ``names[vgg16_layer]``; returns the VGG16 layers copied.

    Kernels always transfer (the first one with its input channels flipped to RGB); biases
    transfer where the target layer has one (zoo convs followed by a norm have none: the
    norm's beta takes that role). ``fc1`` / ``fc2`` in ``names`` transfer when the weights
    have them (a file with top): a dense kernel becomes the conv kernel of the same size
    (``Flatten`` reads (h, w, c) in row-major order, so fc1's 25088 rows are 7 x 7 x 512).
    """
    stored, spec = vgg16_weights(weights), ENCODERS["vgg16"]
    copied = []
    for vgg_name, name in names.items():
        if vgg_name not in stored:
            continue
        kernel, bias = _first_conv_kernel(spec, vgg_name, stored[vgg_name])
        target = model.get_layer(name)
        shape = tuple(target.kernel.shape)
        if kernel.ndim == 2 and kernel.shape[-1] == shape[-1] and kernel.size == np.prod(shape):
            kernel = kernel.reshape(shape)  # fully connected -> convolution
        if shape != kernel.shape:
            raise SegtrainError(f"{_KEY}: layer {name} has a {shape} kernel but VGG16's {vgg_name} is "
                                f"{kernel.shape}; VGG16 weights need model.width 64 (and fc_width 4096 with top)")
        target.kernel.assign(kernel)
        if getattr(target, "bias", None) is not None:
            target.bias.assign(bias)
        copied.append(vgg_name)
    return copied


def _atrous_plan(spec: Encoder, output_stride: int) -> dict[str, dict]:
    """Config overrides per layer name that bring the encoder's total stride down to ``output_stride``."""
    plan: dict[str, dict] = {}
    rate = 1
    for stride in sorted(spec.atrous):
        if stride <= output_stride:
            continue
        stage = spec.atrous[stride]
        for name in stage.strided:  # a de-strided spatial kernel keeps the rate it had
            plan[name] = {"strides": (1, 1), "dilation_rate": (rate, rate)}
        for name in stage.pads:
            plan[name] = {"padding": ((rate, rate), (rate, rate))}
        rate *= 2
        plan[stage.dilated] = {"dilation_rate": (rate, rate)}
    return plan


def _overrides(plan: dict[str, dict], name: str) -> dict:
    if name in plan:
        return plan[name]
    for pattern, overrides in plan.items():
        if re.fullmatch(pattern, name):
            return overrides
    return {}


def build_encoder(x, encoder: str, weights: str = "none", output_stride: int = 32) -> keras.Model:
    """``encoder`` rebuilt on tensor ``x`` (its layers join ``x``'s graph) with ``weights``.

    ``output_stride`` < 32 rebuilds the last stage(s) atrous: their stride-2 layers get stride
    1 and the 3x3 convs after them a doubled dilation rate (per removed stride), so the
    pretrained kernels see the same context at a finer resolution (DeepLab's recipe).
    Returns the rebuilt ``keras.Model``; read features with ``get_layer(name).output`` (its
    ``.output`` hangs off a copy of ``x``, not ``x`` itself, so it is useless for a bigger model).
    """
    spec = _encoder(encoder)
    strides = sorted(s // 2 for s in spec.atrous) + [32]  # removing stage s's stride halves the total
    if output_stride not in strides:
        raise SegtrainError(f"model.output_stride: {encoder} supports {', '.join(map(str, strides))}, got {output_stride}")
    source = load_application(encoder, weights, (None,) * (len(x.shape) - 2) + (x.shape[-1],))
    plan = _atrous_plan(spec, output_stride)

    def rebuild(layer):
        config = layer.get_config()
        for key, value in _overrides(plan, layer.name).items():
            if key != "dilation_rate" or max(config["kernel_size"]) > 1:
                config[key] = value
        return layer.__class__.from_config(config)

    rebuilt = keras.models.clone_model(source, input_tensors=x, clone_function=rebuild)
    if weights != "none":
        for layer in source.layers:
            if layer.weights:
                rebuilt.get_layer(layer.name).set_weights(_first_conv_kernel(spec, layer.name, layer.get_weights()))
    return rebuilt


def feature_pyramid(x, encoder: str, weights: str = "none") -> list:
    """``encoder``'s features at strides 2, 4, 8, 16 and 32 of ``x`` (skips for U-Net decoders).

    ``x`` must already be normalised the way ``normalisation(encoder, weights, ...)`` says and
    have sizes divisible by 32. A keras-hub encoder gives None for a stride it has no level at.
    """
    if is_hub_encoder(encoder):
        return hub_pyramid(x, encoder)
    rebuilt = build_encoder(x, encoder, weights)
    return [rebuilt.get_layer(name).output for name in ENCODERS[encoder].pyramid]
