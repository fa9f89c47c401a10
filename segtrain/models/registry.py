"""Model name -> builder, plus the input stem and output crop every zoo model shares.

Configs name models (``model.name: segnet_basic``); this table maps the name to code, so
no config value is ever imported or evaluated. Each model registers the decoders it
accepts (names from ``upsampling.DECODERS``, its default first) and the ranks (spatial
axes) it builds; the registry checks both before the builder runs, so builders never see
a decoder or a rank they cannot build, and tests can ask it for every valid combination.
Every builder has the signature
``builder(num_classes, input_shape, decoder, norm, *, width, mean, std, ...)`` and
returns a ``keras.Model`` whose inputs are raw pixel values and whose outputs are logits
of the input's spatial size.
"""

from __future__ import annotations

import functools
import inspect
from typing import Callable, Sequence

import keras

from segtrain.errors import SegtrainError
from segtrain.models.padding import CropToMatch, PadToMultiple
from segtrain.models.upsampling import DECODERS

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
IMAGENET = "imagenet"  # default for mean/std: ImageNet for 3-channel 2-D inputs, else none

_BUILDERS: dict[str, Callable[..., keras.Model]] = {}
_DECODERS: dict[str, tuple[str, ...]] = {}
_RANKS: dict[str, tuple[int, ...]] = {}
RANKS = (1, 2, 3)
_RANK_INPUTS = {1: "(length, C)", 2: "(height, width, C)", 3: "(depth, height, width, C)"}


def register_model(name: str, decoders: Sequence[str], ranks: Sequence[int] = RANKS):
    """Decorator: make ``builder`` available to configs as ``model.name: <name>``.

    ``decoders`` are the ``model.decoder`` values it accepts, ``ranks`` the numbers of
    spatial axes its input may have; the returned builder raises the ``model.decoder`` or
    ``model.name`` error for any other before building anything.
    """
    unknown = set(decoders) - set(DECODERS)
    if unknown:
        raise ValueError(f"{name}: {sorted(unknown)} are not decoders; DECODERS has {DECODERS}")
    if not set(ranks) <= set(RANKS):
        raise ValueError(f"{name}: ranks {tuple(ranks)} must be among {RANKS}")
    _DECODERS[name] = tuple(decoders)
    _RANKS[name] = tuple(ranks)

    def wrap(builder):
        signature = inspect.signature(builder)

        @functools.wraps(builder)
        def checked(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            check_decoder(bound.arguments["decoder"], name)
            check_rank(bound.arguments["input_shape"], name)
            return builder(*args, **kwargs)

        _BUILDERS[name] = checked
        return checked

    return wrap


def list_models() -> list[str]:
    """Every registered model name, sorted."""
    return sorted(_BUILDERS)


def get_builder(name: str) -> Callable[..., keras.Model]:
    """The builder registered as ``name``, or the one-line ``model.name`` error."""
    if name not in _BUILDERS:
        raise SegtrainError(f"model.name: unknown model {name!r}; use one of {', '.join(list_models())}")
    return _BUILDERS[name]


def decoders_of(name: str) -> tuple[str, ...]:
    """The decoders model ``name`` accepts, its default first."""
    get_builder(name)
    return _DECODERS[name]


def ranks_of(name: str) -> tuple[int, ...]:
    """The numbers of spatial axes model ``name`` builds (1: signals, 2: images, 3: volumes)."""
    get_builder(name)
    return _RANKS[name]


def check_decoder(decoder: str, model: str) -> None:
    """The one-line ``model.decoder`` error when ``model`` does not accept ``decoder``."""
    allowed = _DECODERS[model]
    if decoder not in allowed:
        why = "is not applicable to" if decoder in DECODERS else "is not a decoder of"
        raise SegtrainError(f"model.decoder: {decoder!r} {why} {model}; use one of {', '.join(allowed)}")


def check_rank(input_shape: Sequence, model: str) -> None:
    """The one-line ``model.name`` error when ``model`` does not build inputs of this rank.

    Shapes of no rank at all are left to ``stem``, which says what a shape must look like.
    """
    rank, allowed = len(tuple(input_shape)) - 1, _RANKS[model]
    if rank in RANKS and rank not in allowed:
        dims = "/".join(f"{r}-D" for r in allowed)
        inputs = " or ".join(_RANK_INPUTS[r] for r in allowed)
        raise SegtrainError(f"model.name: {model} is {dims} only (input {inputs}), got {tuple(input_shape)}")


def _stat(value, channels: int, key: str) -> list[float]:
    values = [float(v) for v in (value if isinstance(value, (list, tuple)) else [value])]
    if len(values) == 1:
        values *= channels
    if len(values) != channels:
        raise SegtrainError(
            f"{key} has {len(values)} values but the input has {channels} channels; "
            f"give {channels} values (or one) or null for no normalisation"
        )
    return values


def stem(input_shape: Sequence, mean, std, multiple: int):
    """Raw-pixel input -> (keras.Input, normalised tensor zero-padded to ``multiple``)."""
    input_shape = tuple(input_shape)
    if not 2 <= len(input_shape) <= 4 or input_shape[-1] is None:
        raise SegtrainError(
            f"input_shape {input_shape}: expected (length, C), (height, width, C) or "
            "(depth, height, width, C) with a known channel count C"
        )
    channels, rank = int(input_shape[-1]), len(input_shape) - 1
    imagenet_ok = channels == 3 and rank == 2
    if isinstance(mean, str) and mean == IMAGENET:
        mean = IMAGENET_MEAN if imagenet_ok else None
    if isinstance(std, str) and std == IMAGENET:
        std = IMAGENET_STD if imagenet_ok else None
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    if mean is not None or std is not None:
        mean = _stat(0.0 if mean is None else mean, channels, "model.mean")
        std = _stat(1.0 if std is None else std, channels, "model.std")
        if min(std) <= 0:
            raise SegtrainError(f"model.std must be positive, got {std}")
        x = keras.layers.Normalization(mean=mean, variance=[s * s for s in std], name="normalize")(x)
    if multiple > 1:
        x = PadToMultiple(multiple, name="pad_to_stride")(x)
    return inputs, x


def head(inputs, logits, name: str) -> keras.Model:
    """Crop the padded logits back to the input's size and wrap up the model."""
    return keras.Model(inputs, CropToMatch(name="crop_to_input")([logits, inputs]), name=name)
