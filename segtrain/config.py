"""YAML -> typed, validated config.

A config file is plain YAML read with ``yaml.safe_load`` (so ``!!python/...`` tags are
refused). ``_base_: path`` or ``_base_: [a, b]`` pulls in other files first (paths relative
to the including file; later files and the including file override earlier ones, dicts
merge key by key). ``--set a.b=value`` overrides are parsed as YAML scalars/lists and
applied last. The result is checked against the dataclasses below: an unknown key, a wrong
type or a missing required key is a ``SegtrainError`` naming the dotted key and the file.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from segtrain.errors import SegtrainError


@dataclass
class DataConfig:
    """Where the dataset is and how samples are decoded and augmented."""

    format: Literal["voc", "camvid", "folders"]
    root: str
    num_classes: int
    sample: bool = False  # root is the built-in sample dataset: generate it there if missing
    classes: Union[str, list[str]] = "voc"  # "voc" | "camvid" | list of names
    colors: Union[list[list[int]], None] = None  # RGB per class, for custom datasets
    void_color: Union[list[int], None] = None  # RGB drawn for void (255)
    train_split: str = "train"
    val_split: str = "val"
    ignore_index: int = 255  # the dataset's own void value; mapped to 255 on decode
    label_map: dict[int, int] = field(default_factory=dict)  # raw value -> class, e.g. {255: 1}
    image_dir: str = "JPEGImages"  # voc: images folder; folders: images folder
    mask_dir: str = "SegmentationClass"  # voc: mask folder; folders: masks folder
    # Training augmentation (albumentations). Validation only resizes/pads deterministically.
    crop: Union[list[int], None] = None  # [h, w] random crop (padded with void if smaller)
    scale: list[float] = field(default_factory=lambda: [1.0, 1.0])  # random rescale range
    hflip: bool = True
    color_jitter: float = 0.0  # strength in [0, 1]; 0 disables
    resize: Union[list[int], None] = None  # [h, w] fixed resize for train and val
    val_pad_to: int = 1  # pad validation images to a multiple of this (void-filled masks)
    num_parallel_calls: int = 0  # 0 = tf.data.AUTOTUNE
    cache: bool = False  # keep decoded (image, mask) pairs in memory after their first read


@dataclass
class ModelConfig:
    """Which zoo model to build; the registry maps the name to a builder."""

    name: str = "segnet_basic"
    decoder: Union[str, None] = None  # unpool | resize_conv | transposed | bilinear; null = the model's default
    norm: str = "batch"  # batch | layer | group | instance | none
    width: int = 64  # base channel count where the model has one
    context: str = "basic"  # dilated_context: basic | large
    depth: int = 4  # unet: number of pools (total stride 2**depth)
    encoder: str = "plain"  # unet: plain | vgg16 | resnet50 | mobilenetv2 | efficientnetb0
    encoder_weights: str = "none"  # segnet, dilated_*, unet with a keras.applications encoder: none | imagenet | path
    mean: Union[list[float], None] = field(default_factory=lambda: [123.675, 116.28, 103.53])
    std: Union[list[float], None] = field(default_factory=lambda: [58.395, 57.12, 57.375])


@dataclass
class OptimizerConfig:
    name: Literal["sgd", "adam", "adamw"] = "sgd"
    learning_rate: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    clipnorm: Union[float, None] = None


@dataclass
class ScheduleConfig:
    name: Literal["constant", "poly", "cosine", "step"] = "constant"
    warmup_steps: int = 0
    power: float = 0.9  # poly
    step_size: int = 1000  # step: decay every N steps
    gamma: float = 0.1  # step: decay factor
    min_lr: float = 0.0  # poly / cosine floor


@dataclass
class TrainConfig:
    epochs: int = 10
    steps: Union[int, None] = None  # total steps; overrides epochs when set
    batch_size: int = 8
    seed: int = 0
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    class_weights: Union[str, list[float]] = "none"  # none | median_frequency | [w0, w1, ...]
    val_every: int = 1  # validate every N epochs
    checkpoint_every_steps: int = 0  # 0 = only at epoch ends
    mixed_precision: Literal["none", "mixed_float16", "mixed_bfloat16"] = "none"
    jit_compile: bool = False
    deterministic: bool = False  # tf.config.experimental.enable_op_determinism
    distribute: Literal["none", "mirrored", "multi_worker"] = "none"


@dataclass
class Config:
    data: DataConfig
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output_dir: str = "runs/default"
    source: str = "<dict>"  # the file this config came from (not a YAML key)


_NOT_KEYS = {"source"}


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise SegtrainError(f"{path}: config file not found; check the --config path")
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except yaml.constructor.ConstructorError as err:
        raise SegtrainError(
            f"{path}: line {err.problem_mark.line + 1 if err.problem_mark else '?'}: "
            f"tag not allowed ({err.problem}); configs are plain YAML, remove the tag"
        ) from None
    except yaml.YAMLError as err:
        raise SegtrainError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SegtrainError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    return data


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _resolve_paths(raw: dict, folder: Path) -> None:
    """Make data.root and output_dir absolute against the folder of the file that set them."""
    data = raw.get("data")
    if isinstance(data, dict) and isinstance(data.get("root"), str):
        data["root"] = str((folder / os.path.expanduser(data["root"])).resolve())
    if isinstance(raw.get("output_dir"), str):
        raw["output_dir"] = str((folder / os.path.expanduser(raw["output_dir"])).resolve())


def load_raw(path: str | os.PathLike, _seen: tuple = ()) -> dict:
    """Read one YAML file with its ``_base_`` chain merged in; returns a plain dict."""
    path = Path(path).resolve()
    if path in _seen:
        raise SegtrainError(f"{path}: _base_ includes itself (cycle: {' -> '.join(map(str, _seen))})")
    raw = _read_yaml(path)
    bases = raw.pop("_base_", [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise SegtrainError(f"{path}: key '_base_' must be a path or a list of paths")
    merged: dict = {}
    for base in bases:
        merged = _merge(merged, load_raw(path.parent / base, _seen + (path,)))
    _resolve_paths(raw, path.parent)
    return _merge(merged, raw)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a", "b", "c"], value parsed as YAML)."""
    if "=" not in text:
        raise SegtrainError(f"--set {text!r}: expected key=value, e.g. --set train.epochs=3")
    key, value = text.split("=", 1)
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        raise SegtrainError(f"--set {text!r}: value is not valid YAML") from None
    return key.strip().split("."), parsed


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    raw = dict(raw)
    for text in overrides:
        keys, value = parse_override(text)
        node = raw
        for key in keys[:-1]:
            child = node.get(key)
            node[key] = dict(child) if isinstance(child, dict) else {}
            node = node[key]
        if keys[-1] in ("root", "output_dir") and isinstance(value, str):
            value = str(Path(os.path.expanduser(value)).resolve())  # relative to cwd on the CLI
        node[keys[-1]] = value
    return raw


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check ``value`` against the type hint ``tp``; returns the (lightly coerced) value."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        # A list or mapping can match only one option: let that option name the inner key.
        shaped = [a for a in args if typing.get_origin(a) in (list, dict)]
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
        return _build(tp, value, key, source)
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
    if tp is int and isinstance(value, bool) or not isinstance(value, tp):
        raise SegtrainError(f"{source}: key '{key}': expected {_type_name(tp)}, got {value!r}")
    return value


def _build(cls: type, raw: Any, prefix: str, source: str) -> Any:
    if not isinstance(raw, dict):
        raise SegtrainError(f"{source}: key '{prefix}': expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)} - _NOT_KEYS
    unknown = sorted(set(raw) - names)
    if unknown:
        where = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise SegtrainError(
            f"{source}: unknown key '{where}'; allowed keys here: {', '.join(sorted(names))}"
        )
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in _NOT_KEYS:
            continue
        key = f"{prefix}.{f.name}" if prefix else f.name
        if f.name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise SegtrainError(f"{source}: missing required key '{key}'")
            continue
        kwargs[f.name] = _coerce(raw[f.name], hints[f.name], key, source)
    return cls(**kwargs)


def from_dict(raw: dict, source: str = "<dict>") -> Config:
    """Validate a plain dict (already merged) into a ``Config``."""
    config = _build(Config, raw, "", source)
    config.source = source
    config.output_dir = str(Path(os.path.expanduser(config.output_dir)).resolve())
    _check_values(config)
    return config


def _check_values(config: Config) -> None:
    src, data = config.source, config.data
    if not 1 <= data.num_classes <= 255:
        raise SegtrainError(f"{src}: key 'data.num_classes' must be in 1..255, got {data.num_classes}")
    if not 0 <= data.ignore_index <= 255:
        raise SegtrainError(f"{src}: key 'data.ignore_index' must be in 0..255, got {data.ignore_index}")
    if isinstance(data.classes, list) and len(data.classes) != data.num_classes:
        raise SegtrainError(
            f"{src}: key 'data.classes' lists {len(data.classes)} names but data.num_classes is {data.num_classes}"
        )
    for key in ("crop", "resize"):
        value = getattr(data, key)
        if value is not None and (len(value) != 2 or min(value) < 1):
            raise SegtrainError(f"{src}: key 'data.{key}' must be [height, width] with positive sizes, got {value}")
    if len(data.scale) != 2 or not 0 < data.scale[0] <= data.scale[1]:
        raise SegtrainError(f"{src}: key 'data.scale' must be [min, max] with 0 < min <= max, got {data.scale}")
    weights = config.train.class_weights
    if isinstance(weights, str) and weights not in ("none", "median_frequency"):
        raise SegtrainError(
            f"{src}: key 'train.class_weights' must be none, median_frequency or a list of numbers, got {weights!r}"
        )
    if isinstance(weights, list) and len(weights) != data.num_classes:
        raise SegtrainError(
            f"{src}: key 'train.class_weights' has {len(weights)} values but data.num_classes is {data.num_classes}"
        )
    if config.train.batch_size < 1 or config.train.epochs < 1:
        raise SegtrainError(f"{src}: keys 'train.batch_size' and 'train.epochs' must be at least 1")


def load_config(path: str | os.PathLike, overrides: list[str] | None = None) -> Config:
    """Load ``path`` with its ``_base_`` chain, apply ``--set`` overrides, validate."""
    raw = load_raw(path)
    merged = apply_overrides(raw, overrides or [])
    try:
        return from_dict(merged, source=str(path))
    except SegtrainError:
        try:
            from_dict(raw, source=str(path))
        except SegtrainError:
            raise  # the file itself is wrong: blame the file
        # The file is fine on its own, so an override broke it: say which.
        from_dict(merged, source=f"{path} with --set {' '.join(overrides or [])}")
        raise


def to_dict(config: Config) -> dict:
    out = dataclasses.asdict(config)
    for key in _NOT_KEYS:
        out.pop(key, None)
    return out


def save_config(config: Config, path: str | os.PathLike) -> None:
    """Write the fully resolved config (what actually ran) as YAML."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        yaml.safe_dump(to_dict(config), fh, sort_keys=False)
