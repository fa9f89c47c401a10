"""A plain dict -> the schema's dataclasses, checked type by type against their hints.

An unknown key, a wrong type or a missing required key is a ``SegtrainError`` naming the
dotted key and the file. PyYAML reads ``1e-3`` (no dot) as a string; a key that expects a
float takes it as the number it was meant to be.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Any, Literal, Union

from segtrain.errors import SegtrainError

NOT_KEYS = {"source"}  # dataclass fields that are not YAML keys
_FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")  # '1e-3', which YAML 1.1 leaves a string


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check ``value`` against the type hint ``tp``; returns the (lightly coerced) value."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        # A list or mapping can match only one option (a section is a mapping): let that option name the inner key.
        shaped = [a for a in args if typing.get_origin(a) in (list, dict) or dataclasses.is_dataclass(a)]
        for option in shaped:
            if isinstance(value, (list, tuple) if typing.get_origin(option) is list else dict):
                return _coerce(value, option, key, source)
        for option in args:
            try:
                return _coerce(value, option, key, source)
            except SegtrainError:
                pass
        allowed = " or ".join(_type_name(a) for a in args)
        raise SegtrainError(f"{source}: key '{key}': expected {allowed}, got {value!r}")
    if origin is Literal:
        if value not in args:
            raise SegtrainError(f"{source}: key '{key}': must be one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if tp is type(None):
        if value is not None:
            raise SegtrainError(f"{source}: key '{key}': expected null, got {value!r}")
        return None
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key, source)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise SegtrainError(f"{source}: key '{key}': expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise SegtrainError(f"{source}: key '{key}': expected a mapping, got {value!r}")
        return {
            _coerce(k, args[0], f"{key}.{k}", source): _coerce(v, args[1], f"{key}.{k}", source)
            for k, v in value.items()
        }
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
        return float(value)
    if tp is int and isinstance(value, bool) or not isinstance(value, tp):
        raise SegtrainError(f"{source}: key '{key}': expected {_type_name(tp)}, got {value!r}")
    return value


def build(cls: type, raw: Any, prefix: str, source: str) -> Any:
    if not isinstance(raw, dict):
        raise SegtrainError(f"{source}: key '{prefix}': expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)} - NOT_KEYS
    unknown = sorted(set(raw) - names)
    if unknown:
        where = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise SegtrainError(
            f"{source}: unknown key '{where}'; allowed keys here: {', '.join(sorted(names))}"
        )
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in NOT_KEYS:
            continue
        key = f"{prefix}.{f.name}" if prefix else f.name
        if f.name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise SegtrainError(f"{source}: missing required key '{key}'")
            continue
        kwargs[f.name] = _coerce(raw[f.name], hints[f.name], key, source)
    return cls(**kwargs)
