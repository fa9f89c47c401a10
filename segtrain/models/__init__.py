"""The model zoo: build a segmentation model by name (see ``docs/models.md``).

Importing it also registers segtrain's losses, metrics and schedules with Keras, so one
``import segtrain.models`` lets ``keras.models.load_model`` read any segtrain ``.keras`` file.
"""

from __future__ import annotations

import inspect
from typing import Sequence

import keras

from segtrain import keras_metrics, losses, schedules  # noqa: F401  (register every serialisable segtrain object)
from segtrain.errors import SegtrainError
from segtrain.heads import output_channels
from segtrain.models import deeplab, dilated, hub, segnet, unet  # noqa: F401  (register the builders)
from segtrain.models.registry import decoders_of, get_builder, list_models, ranks_of
from segtrain.models.upsampling import DECODERS

__all__ = ["build_model", "build_model_from_config", "list_models", "decoders_of", "ranks_of", "DECODERS"]


def build_model(name: str, num_classes: int, input_shape: Sequence, decoder: str | None = None,
                norm: str = "batch", **kwargs) -> keras.Model:
    """Build zoo model ``name`` (raw-pixel input -> logits at the input's spatial size).

    ``input_shape`` is ``(length, C)``, ``(height, width, C)`` or ``(depth, height, width, C)``;
    spatial sizes may be ``None``. ``decoder=None`` takes the model's default (``unpool`` for
    SegNets, ``bilinear`` for dilated nets). Extra keyword arguments go to the builder
    (``width``, ``mean``, ``std``, ``context``, ...).
    """
    builder = get_builder(name)
    if decoder is not None:
        kwargs["decoder"] = decoder
    return builder(num_classes, tuple(input_shape), norm=norm, **kwargs)


def build_model_from_config(config, input_shape: Sequence) -> keras.Model:
    """Build the model a ``Config`` names (``model.*`` keys; one output per class, or per region for a sigmoid head)."""
    m = config.model
    kwargs = {"width": m.width, "mean": m.mean, "std": m.std}
    accepted = inspect.signature(get_builder(m.name)).parameters
    for key in ("context", "depth", "encoder", "encoder_weights", "output_stride", "preset"):  # keys only some models take
        if key in accepted and getattr(m, key) is not None:
            kwargs[key] = getattr(m, key)
    for key, unset in (("encoder", None), ("encoder_weights", "none"), ("preset", None)):  # never silently ignored
        if key not in accepted and getattr(m, key) != unset:
            takers = ", ".join(n for n in list_models() if key in inspect.signature(get_builder(n)).parameters)
            raise SegtrainError(f"model.{key}: {m.name} does not take it; remove it or use one of {takers}")
    return build_model(m.name, output_channels(config), input_shape, decoder=m.decoder, norm=m.norm, **kwargs)
