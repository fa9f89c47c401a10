"""``data.augment``: any albumentations transform by name, checked when the config is loaded.

A wrong name, an unknown argument or a bad value is one line naming ``data.augment[i]``;
transforms that move pixels resample masks nearest and fill with void. Importing this module
does not import albumentations (the config checks import it).
"""

from __future__ import annotations

import difflib
import inspect
import re
from typing import Any

import cv2

from segtrain.errors import SegtrainError
from segtrain.labels import VOID

MASK_INTERPOLATION = cv2.INTER_NEAREST  # a blended class index is another class
_FLOAT_OUTPUT = ("Normalize", "ToFloat")


def _transform_classes(A) -> dict[str, type]:
    """Every concrete albumentations transform class by name."""
    return {
        name: cls for name, cls in vars(A).items()
        if inspect.isclass(cls) and issubclass(cls, A.BasicTransform) and not inspect.isabstract(cls)
    }


def _init_error(err: Exception) -> str:
    """One line from a constructor error; albumentations re-raises pydantic's report as text:
    ``N validation error(s) for InitSchema`` / ``<field>[.<union branch>]`` / ``  <message> [type=...]``."""
    lines = str(err).splitlines()
    if len(lines) >= 3 and re.match(r"\d+ validation errors? for", lines[0]):
        field_name = lines[1].strip().split(".")[0]
        message = lines[2].strip().split(" [type=")[0].removeprefix("Value error, ")
        return f"{field_name}: {message}"
    return " ".join(str(err).split()) or type(err).__name__


def build_extra(specs: list[dict[str, Any]], source: str = "config") -> list:
    """``data.augment`` -> albumentations transforms, masks forced to nearest resampling and void fill.

    Each entry is ``{name: <albumentations class>, p: ..., <its arguments>}``; a wrong name, an
    unknown argument or a bad value is a one-line ``SegtrainError`` naming ``data.augment[i]``.
    """
    import albumentations as A  # a second of start-up: only for configs that list data.augment

    classes = _transform_classes(A)
    transforms = []
    for i, spec in enumerate(specs):
        key = f"{source}: key 'data.augment[{i}]'"
        kwargs = dict(spec)
        name = kwargs.pop("name", None)
        if not isinstance(name, str):
            raise SegtrainError(f"{key}: needs 'name: <albumentations transform>', e.g. {{name: VerticalFlip, p: 0.5}}")
        cls = classes.get(name)
        if name in _FLOAT_OUTPUT:
            raise SegtrainError(f"{key}: {name} makes float images; models take uint8 0..255 pixels and normalise themselves (model.mean/std)")
        if cls is None:
            close = difflib.get_close_matches(name, classes, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else "; see albumentations' list of transforms"
            raise SegtrainError(f"{key}: {name!r} is not an albumentations transform{hint}")
        params = inspect.signature(cls.__init__).parameters
        accepted = [p for p in params if p not in ("self", "args", "kwargs")]
        unknown = sorted(set(kwargs) - set(accepted))
        if unknown:
            raise SegtrainError(f"{key}: {name} has no argument {unknown[0]!r}; it takes {', '.join(accepted)}")
        # Warps resample masks nearest and fill what they move in with void. Dropout-style
        # transforms (fill_mask default None) leave the mask alone unless asked for void.
        forced = {"mask_interpolation": (MASK_INTERPOLATION,), "fill_mask": (VOID,)}
        if "fill_mask" in params and params["fill_mask"].default is None:
            forced["fill_mask"] = (None, VOID)
        for arg, allowed in forced.items():
            if arg not in accepted:
                continue
            if arg in kwargs and kwargs[arg] not in allowed:
                raise SegtrainError(
                    f"{key}: {name}: {arg} must stay {allowed[-1]} (masks are resampled nearest and padded with void 255); remove it"
                )
            kwargs.setdefault(arg, allowed[0])
        try:
            transforms.append(cls(**kwargs))
        except Exception as err:  # albumentations raises ValueError/TypeError/pydantic errors
            raise SegtrainError(f"{key}: {name}: {_init_error(err)}") from None
    return transforms
