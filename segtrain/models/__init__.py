"""The model zoo: build a segmentation model by name (see ``docs/models.md``)."""

from __future__ import annotations

import inspect
from typing import Sequence

import keras

from segtrain.errors import SegtrainError
from segtrain.models import dilated, segnet, unet  # noqa: F401  (register the builders)
from segtrain.models.layers import DECODERS
from segtrain.models.registry import decoders_of, get_builder, list_models

__all__ = ["build_model", "build_model_from_config", "list_models", "decoders_of", "DECODERS"]


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
    """Build the model a ``Config`` names (``model.*`` keys and ``data.num_classes``)."""
    m = config.model
    kwargs = {"width": m.width, "mean": m.mean, "std": m.std}
    accepted = inspect.signature(get_builder(m.name)).parameters
    if m.encoder_weights not in (None, "none") and "encoder_weights" not in accepted:
        raise SegtrainError(f"model.encoder_weights: {m.name} has no pretrained encoder to initialise; "
                            "use segnet, dilated_frontend / dilated_context or unet, or set it to none")
    if m.encoder != "plain" and "encoder" not in accepted:
        raise SegtrainError(f"model.encoder: {m.name} has a fixed encoder; only unet takes one, set it to plain")
    kwargs.update({key: getattr(m, key) for key in ("context", "depth", "encoder", "encoder_weights") if key in accepted})
    return build_model(m.name, config.data.num_classes, input_shape, decoder=m.decoder, norm=m.norm, **kwargs)
