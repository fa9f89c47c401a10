"""keras-hub inside the zoo: any ``ImageSegmenter`` preset as ``model.name: keras_hub`` and any
backbone with ``pyramid_outputs`` as ``model.encoder: keras_hub:<preset>``.

keras-hub models expect images already resized and normalised by the preset's image
converter and (SegFormer) return logits at that fixed size. The zoo's conventions are raw
0..255 RGB in and logits at the input's size out, so the bridge folds the converter's
``scale`` / ``offset`` into the ``normalize`` layer (``x * scale + offset`` is
``(x - mean) / std`` with ``std = 1 / scale``, ``mean = -offset / scale``), resizes to the
preset's working size as keras-hub's preprocessor does (keras-hub's MiT only works at one
square size, and DeepLabV3's ``UpSampling2D`` fails on sizes unknown inside a compiled
function), and resizes the logits back to the input's size. The preset's class head is kept when its
class count equals ``num_classes`` (weights and all); otherwise keras-hub builds the same
segmenter on the preset's backbone with a fresh head of ``num_classes``.

keras-hub models sit inside a ``HubModel`` layer (one named layer for the backbone or its
pyramid). ``import segtrain.models`` does not import keras-hub; a ``.keras`` file holding
keras-hub layers still loads after it alone, as Keras imports the ``keras_hub`` modules the
file names.
"""

from __future__ import annotations

from typing import Sequence

import keras
from keras import ops

from segtrain.errors import SegtrainError
from segtrain.models.registry import IMAGENET, head, register_model, stem
from segtrain.models.shapes import matched_shape, spatial_shape

HUB_ENCODER = "keras_hub:"  # model.encoder prefix
HUB_STRIDE = 32  # keras-hub backbones' deepest pyramid level


def _keras_hub(key: str):
    try:
        import keras_hub  # optional heavy dependency: only keras_hub models need it
    except ImportError as err:
        raise SegtrainError(f"{key}: keras-hub is not installed; pip install 'segtrain[keras_hub]'") from err
    return keras_hub


@keras.saving.register_keras_serializable(package="segtrain")
class HubModel(keras.layers.Layer):
    """A keras-hub model (or a model made of keras-hub layers) as one named zoo layer."""

    def __init__(self, model: keras.Model, **kwargs):
        super().__init__(**kwargs)
        self.model = model

    def call(self, x, training=None):
        return self.model(x, training=training)

    def compute_output_shape(self, input_shape):
        return self.model.compute_output_shape(input_shape)

    def get_config(self):
        return {**super().get_config(), "model": keras.saving.serialize_keras_object(self.model)}

    @classmethod
    def from_config(cls, config):
        # Keras imports the keras_hub modules the nested config names, so no keras_hub import here
        return cls(keras.saving.deserialize_keras_object(config.pop("model")), **config)


def linear_resize(x, axis: int, size):
    """``x`` resized along ``axis`` to ``size`` by linear interpolation with half-pixel centres
    (``tf.image.resize``'s bilinear, one axis at a time) as gathers, so sizes may be unknown
    inside a compiled function (``keras.ops.image.resize`` refuses symbolic sizes there)."""
    n = ops.shape(x)[axis]
    pos = (ops.cast(ops.arange(size), "float32") + 0.5) * (ops.cast(n, "float32") / ops.cast(size, "float32")) - 0.5
    pos = ops.clip(pos, 0.0, ops.cast(n - 1, "float32"))
    low = ops.floor(pos)
    weight = ops.reshape(ops.cast(pos - low, x.dtype), [-1 if a == axis else 1 for a in range(len(x.shape))])
    low = ops.cast(low, "int32")
    high = ops.minimum(low + 1, n - 1)
    return ops.take(x, low, axis=axis) * (1 - weight) + ops.take(x, high, axis=axis) * weight


@keras.saving.register_keras_serializable(package="segtrain")
class ResizeToMatch(keras.layers.Layer):
    """Bilinear resize of ``x`` to the spatial size of ``reference`` (keras-hub's own output ``Resizing``)."""

    def call(self, inputs):
        x, reference = inputs
        for axis, size in enumerate(spatial_shape(reference, 2), start=1):
            x = linear_resize(x, axis, size)
        return x

    def compute_output_shape(self, input_shapes):
        return matched_shape(*input_shapes)


def load_preset(kind: str, preset: str, key: str, **kwargs):
    """``keras_hub.models.<kind>.from_preset(preset)``, or one line naming the preset and the offline fix."""
    keras_hub = _keras_hub(key)
    try:
        return getattr(keras_hub.models, kind).from_preset(preset, dtype=keras.config.dtype_policy().name, **kwargs)
    except Exception as err:  # keras-hub raises ValueError, OSError, requests/kaggle errors, ... for a preset it cannot get
        reason = " ".join(str(err).split())[:200]
        raise SegtrainError(
            f"{key}: cannot load keras-hub {kind} preset {preset!r} ({type(err).__name__}: {reason}); offline, run "
            f"keras_hub.models.{kind}.from_preset({preset!r}).save_to_preset('/path/to/folder') on a machine with "
            f"internet and set {key}: /path/to/folder"
        ) from err


def preset_normalisation(preset: str, key: str, mean, std) -> tuple:
    """The preset's image converter as the stem's (mean, std); ``mean``/``std`` when it has none."""
    keras_hub = _keras_hub(key)
    try:
        converter = keras_hub.layers.ImageConverter.from_preset(preset)
    except Exception:  # no image_converter.json in the preset: keep the zoo's normalisation
        return mean, std
    return converter_normalisation(converter, mean, std)


def converter_normalisation(converter, mean, std) -> tuple:
    """``x * scale + offset`` as ``(x - mean) / std`` per RGB channel."""
    if converter is None or (converter.scale is None and converter.offset is None):
        return mean, std
    scale = converter.scale if converter.scale is not None else 1.0
    offset = converter.offset if converter.offset is not None else 0.0
    scale = [float(s) for s in (scale if isinstance(scale, (list, tuple)) else [scale] * 3)]
    offset = [float(o) for o in (offset if isinstance(offset, (list, tuple)) else [offset] * 3)]
    return [-o / s for o, s in zip(offset, scale)], [1.0 / s for s in scale]


def _fixed_size(backbone: keras.Model) -> tuple | None:
    size = tuple(backbone.input.shape[1:3])
    return None if None in size else size


def _head_layers(segmenter) -> list:
    """The segmenter's layers after its backbone (its own output ``Resizing`` left out: the bridge resizes)."""
    layers = [layer for layer in segmenter.layers if not isinstance(layer, keras.layers.InputLayer)]
    if layers[0] is not segmenter.backbone or len(segmenter.outputs) != 1:
        raise SegtrainError(f"model.preset: {type(segmenter).__name__} is not backbone -> head -> one output; "
                            "segtrain bridges segmenters built that way (SegFormer, DeepLabV3)")
    return [layer for layer in layers[1:] if not isinstance(layer, keras.layers.Resizing)]


def _copy(layer: keras.layers.Layer, x):
    """``layer`` applied to ``x`` as a new layer with the same config and weights (the segmenter's own
    layers stay in its graph; the zoo model shares nothing with it)."""
    copy = type(layer).from_config(layer.get_config())
    y = copy(x)
    copy.set_weights(layer.get_weights())
    return y


def segmenter_preset(preset: str, num_classes: int):
    """The preset's ``ImageSegmenter``, with a fresh ``num_classes`` head when its own has another count."""
    segmenter = load_preset("ImageSegmenter", preset, "model.preset")
    if getattr(segmenter, "num_classes", None) != num_classes:
        segmenter = type(segmenter)(backbone=segmenter.backbone, num_classes=num_classes,
                                    preprocessor=segmenter.preprocessor)
    return segmenter


def working_size(segmenter, preset: str) -> tuple[int, int]:
    """The size keras-hub runs the segmenter at: its backbone's fixed input size, else the
    image converter's ``image_size`` (what keras-hub's own preprocessor resizes to)."""
    converter = getattr(getattr(segmenter, "preprocessor", None), "image_converter", None)
    size = _fixed_size(segmenter.backbone) or getattr(converter, "image_size", None)
    if not size or None in tuple(size):
        raise SegtrainError(f"model.preset: {preset} fixes no image size (no fixed backbone input, no image "
                            "converter image_size); save the preset with an image converter that has one")
    return tuple(int(s) for s in size)


@register_model("keras_hub", ("bilinear",), ranks=(2,))
def keras_hub_segmenter(num_classes: int, input_shape: Sequence, decoder: str = "bilinear", norm: str = "batch", *,
                        width: int = 64, mean=IMAGENET, std=IMAGENET, preset: str | None = None) -> keras.Model:
    """A keras-hub ``ImageSegmenter`` preset taking raw RGB of any size and returning logits at that size.

    Runs at the preset's working size (``working_size``) as keras-hub's preprocessor does;
    ``width`` and ``norm`` do not apply (the preset fixes the architecture) and ``mean``/``std``
    only when the preset has no image converter.
    """
    if not preset:
        raise SegtrainError("model.preset: keras_hub needs a preset: a keras-hub name (e.g. segformer_b0_ade20k_512), "
                            "a local folder made with save_to_preset, hf://... or kaggle://...")
    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise SegtrainError(f"model.name: keras_hub segmenters take 2-D RGB input (height, width, 3), got {tuple(input_shape)}")
    segmenter = segmenter_preset(preset, num_classes)
    preprocessor = getattr(segmenter, "preprocessor", None)
    mean, std = converter_normalisation(getattr(preprocessor, "image_converter", None), mean, std)
    inputs, x = stem(input_shape, mean, std, multiple=1)
    x = keras.layers.Resizing(*working_size(segmenter, preset), interpolation="bilinear", name="resize_to_preset")(x)
    x = HubModel(segmenter.backbone, name="keras_hub_backbone")(x)
    for layer in _head_layers(segmenter):
        x = _copy(layer, x)
    return head(inputs, ResizeToMatch(name="resize_logits")([x, inputs]), "keras_hub")


def is_hub_encoder(encoder: str | None) -> bool:
    """``model.encoder`` names a keras-hub backbone preset (``keras_hub:<preset>``)."""
    return isinstance(encoder, str) and encoder.startswith(HUB_ENCODER)


def hub_pyramid(x, encoder: str) -> list:
    """The backbone's features at strides 2, 4, 8, 16 and 32 of ``x`` (None where it has no level).

    ``x`` is normalised (``preset_normalisation``) and padded to a multiple of 32. The strides
    come from the pyramid's shapes on a probe, so any ``pyramid_outputs`` naming works.
    """
    preset = encoder[len(HUB_ENCODER):]
    backbone = load_preset("Backbone", preset, "model.encoder")
    if _fixed_size(backbone):
        raise SegtrainError(f"model.encoder: {encoder} only takes {_fixed_size(backbone)} inputs (keras-hub's MiT works "
                            "at one square size); use it through model.name: keras_hub with a SegFormer preset")
    pyramid = getattr(backbone, "pyramid_outputs", None)
    if not pyramid:
        raise SegtrainError(f"model.encoder: {encoder} has no pyramid_outputs; use a keras-hub backbone that "
                            "has (ResNet, EfficientNet, ConvNeXt, ...)")
    probe = keras.Model(backbone.inputs, list(pyramid.values()))
    shapes = probe.compute_output_shape((1, HUB_STRIDE * 2, HUB_STRIDE * 2, x.shape[-1]))
    strides = [HUB_STRIDE * 2 // shape[1] for shape in shapes]
    if strides[-1] != HUB_STRIDE or len(set(strides)) != len(strides):
        raise SegtrainError(f"model.encoder: {encoder}'s pyramid has strides {strides}; U-Net and DeepLabV3+ "
                            f"need distinct levels ending at stride {HUB_STRIDE}")
    features = HubModel(probe, name="keras_hub_encoder")(x)
    by_stride = dict(zip(strides, features))
    return [by_stride.get(stride) for stride in (2, 4, 8, 16, 32)]

