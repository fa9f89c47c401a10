"""YAML -> typed, validated config.

A config file is plain UTF-8 YAML read with a safe loader (so ``!!python/...`` tags are
refused) that also refuses a key given twice in one mapping (YAML's default is "last wins").
``_base_: path`` or ``_base_: [a, b]`` pulls in other files first (paths relative to the
including file; later files and the including file override earlier ones, dicts merge key
by key). ``--set a.b=value`` overrides are parsed as YAML scalars/lists and applied last.
A config that sets no ``output_dir`` (itself or through its bases) trains into
``runs/<config folder>/<config file stem>`` under the current directory, as mmsegmentation's work_dirs.
The result is checked against the dataclasses below: an unknown key, a wrong type, a
missing required key or a value out of its range is a ``SegtrainError`` naming the dotted
key and the file. PyYAML reads ``1e-3`` (no dot) as a string; a key that expects a float
takes it as the number it was meant to be.
"""

from __future__ import annotations

import dataclasses
import math
import operator
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from segtrain.errors import SegtrainError
from segtrain.loss_specs import DEFAULT_LOSS, normalize_loss_spec


@dataclass
class DataConfig:
    """Where the dataset is and how samples are decoded and augmented."""

    format: Literal["voc", "camvid", "folders", "nifti", "series"]
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
    vflip: bool = False  # vertical flip with p = 0.5
    rot90: bool = False  # a random multiple of 90 degrees
    rotate: float = 0.0  # random rotation in [-rotate, rotate] degrees (mask padded with void)
    shift: float = 0.0  # random shift up to this fraction of the height/width (mask padded with void)
    brightness: float = 0.0  # random brightness change up to this fraction in [0, 1]
    contrast: float = 0.0  # random contrast change up to this fraction in [0, 1]
    gamma: float = 0.0  # random gamma in [1 - gamma, 1 + gamma], gamma in [0, 1)
    noise: float = 0.0  # Gaussian noise, std up to this fraction of 255
    blur: float = 0.0  # Gaussian blur on half the samples, sigma up to this many pixels
    elastic: float = 0.0  # probability of an elastic distortion (alpha 100, sigma 10)
    grid_distortion: float = 0.0  # probability of a grid distortion (5 steps, limit 0.3)
    augment: list[dict[str, Any]] = field(default_factory=list)  # albumentations transforms: [{name: ..., p: ..., ...}]
    resize: Union[list[int], None] = None  # [h, w] fixed resize for train and val
    val_pad_to: int = 1  # pad validation images to a multiple of this (void-filled masks)
    num_parallel_calls: int = 0  # 0 = tf.data.AUTOTUNE
    cache: bool = False  # keep decoded (image, mask) pairs in memory after their first read
    # Input channels: images 1 (grey), 2, 3 (RGB, the default) or 4 (RGBA); series: columns per
    # signal (default 1); nifti: the channel file names of a case, stacked in this order.
    channels: Union[int, list[str], None] = None
    label: Union[str, None] = None  # nifti: label file of a case; series: "{name}.labels.npy" or a change-point table (desc.txt)
    mask: Union[str, None] = None  # nifti only: region file (e.g. brainmask.nii.gz) that restricts z-scoring and patch sampling
    normalize: Literal["zscore", "none"] = "zscore"  # nifti/series: per-channel z-score (inside data.mask); none = already normalised
    patch: Union[list[int], None] = None  # nifti/series: training patch size, one value per spatial axis
    foreground_fraction: float = 1 / 3  # nifti/series: share of patches centred on a foreground voxel (nnU-Net: 1/3)
    patches_per_case: int = 4  # nifti/series: patches drawn from each case per epoch (an epoch = this x cases)
    cached_cases: int = 2  # nifti/series: decoded cases kept in memory at once (memory does not grow with the dataset)
    # nifti/series patch augmentation (segtrain.data.augment_nd); the 2-D keys above do not apply.
    patch_flip: list[int] = field(default_factory=list)  # spatial axes flipped with p = 0.5, e.g. [0, 1, 2]
    patch_rot90: Union[list[int], None] = None  # the plane of random quarter turns, e.g. [0, 1] (axial for X, Y, Z)
    patch_zoom: float = 0.0  # spatial scale U[1 - z, 1 + z] about the patch centre (label nearest, void fill)
    patch_scale: float = 0.0  # intensity factor U[1 - s, 1 + s] per channel
    patch_shift: float = 0.0  # intensity offset U[-s, s] per channel (z-scored units)
    patch_gamma: float = 0.0  # gamma U[1 - g, 1 + g] per channel
    patch_noise: float = 0.0  # Gaussian noise, std U[0, n] (z-scored units)


@dataclass
class ModelConfig:
    """Which zoo model to build; the registry maps the name to a builder."""

    name: str = "segnet_basic"
    decoder: Union[str, None] = None  # unpool | resize_conv | transposed | bilinear; null = the model's default
    norm: str = "batch"  # batch | layer | group | instance | none
    width: int = 64  # base channel count where the model has one
    context: str = "basic"  # dilated_context: basic | large
    depth: int = 4  # unet: number of pools (total stride 2**depth)
    encoder: Union[str, None] = None  # unet: plain | vgg16 | resnet50 | mobilenetv2 | efficientnetb0; deeplabv3plus: resnet50 | mobilenetv2; null = the model's default
    encoder_weights: str = "none"  # segnet, dilated_*, deeplabv3plus, unet with an encoder: none | imagenet | path to a weights file
    output_stride: int = 16  # deeplabv3plus: 8 | 16
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
class PreciseBNConfig:
    """BatchNorm statistics recomputed over N training batches before validation/checkpoints (segtrain.precise_bn)."""

    batches: int = 16  # 0 = off (the running averages are kept)


@dataclass
class TrainConfig:
    epochs: int = 10
    steps: Union[int, None] = None  # total steps; overrides epochs when set
    batch_size: int = 8
    seed: int = 0
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    class_weights: Union[str, list[float]] = "none"  # none | median_frequency | [w0, w1, ...]
    loss: list[dict[str, Any]] = field(default_factory=lambda: [dict(i) for i in DEFAULT_LOSS])  # see loss_specs
    val_every: int = 1  # validate every N epochs
    checkpoint_every_steps: int = 0  # 0 = only at epoch ends
    # auto: by hardware, see segtrain.precision; none = float32
    mixed_precision: Literal["auto", "none", "mixed_float16", "mixed_bfloat16"] = "auto"
    precise_bn: PreciseBNConfig = field(default_factory=PreciseBNConfig)
    jit_compile: bool = False
    deterministic: bool = False  # tf.config.experimental.enable_op_determinism
    distribute: Literal["none", "mirrored", "multi_worker"] = "none"


@dataclass
class EvaluateConfig:
    """What `segtrain evaluate` scores besides every class: label groups, each as one binary class."""

    groups: dict[str, list[int]] = field(default_factory=dict)  # e.g. BRATS {whole_tumour: [1, 2, 3, 4], core: [1, 3, 4]}


@dataclass
class RuntimeConfig:
    """How a run behaves on restart (not what it trains: runs with different ``runtime`` are the same run)."""

    auto_resume: bool = False  # a plain re-run resumes the run of the same config that output_dir holds


@dataclass
class Config:
    data: DataConfig
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    output_dir: str = "runs/default"
    source: str = "<dict>"  # the file this config came from (not a YAML key)


_NOT_KEYS = {"source"}
_FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")  # '1e-3', which YAML 1.1 leaves a string


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, line: int, first_line: int):
        self.detail = f"key {key!r} given twice (first on line {first_line}); keep one"
        super().__init__(f"line {line}: {self.detail}")


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping key given twice instead of keeping the last."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first: dict = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                line = key_node.start_mark.line + 1
                try:
                    if key in first:
                        raise _DuplicateKey(key, line, first[key])
                    first[key] = line
                except TypeError:
                    continue  # an unhashable key: SafeLoader reports it
        return super().construct_mapping(node, deep=deep)


def _yaml_load(text_or_stream) -> Any:
    return yaml.load(text_or_stream, Loader=_StrictLoader)


def _read_yaml(path: Path, included_by: Path | None = None, as_written: str = "") -> dict:
    if not path.is_file():
        if included_by is not None:
            raise SegtrainError(f"{included_by}: _base_ {as_written!r} not found (looked for {path}); fix the path, it is relative to this file")
        raise SegtrainError(f"{path}: config file not found; check the --config path")
    raw_bytes = path.read_bytes()
    try:
        text = raw_bytes.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw_bytes[: err.start].count(b"\n") + 1
        raise SegtrainError(
            f"{path}: line {line}: not UTF-8 text (byte 0x{raw_bytes[err.start]:02x}); save the config as UTF-8"
        ) from None
    try:
        data = _yaml_load(text)
    except _DuplicateKey as err:
        raise SegtrainError(f"{path}: {err}") from None
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
    """Make data.root, a data.classes table file, output_dir, a model.encoder_weights path and
    splits written as ./ or ../ paths (list files kept next to the config) absolute against the folder of the file that set them."""
    data = raw.get("data")
    for key in ("train_split", "val_split"):
        if isinstance(data, dict) and isinstance(data.get(key), str) and data[key].startswith(("./", "../")):
            data[key] = str((folder / data[key]).resolve())
    if isinstance(data, dict) and isinstance(data.get("root"), str):
        data["root"] = str((folder / os.path.expanduser(data["root"])).resolve())
    if isinstance(data, dict) and isinstance(data.get("classes"), str) and data["classes"].lower().endswith((".yaml", ".yml", ".json")):
        data["classes"] = str((folder / os.path.expanduser(data["classes"])).resolve())  # a colour-table file
    if isinstance(raw.get("output_dir"), str):
        raw["output_dir"] = str((folder / os.path.expanduser(raw["output_dir"])).resolve())
    model = raw.get("model")  # model.encoder_weights: a path unless none / imagenet
    if isinstance(model, dict) and model.get("encoder_weights") not in (None, "none", "imagenet"):
        model["encoder_weights"] = str((folder / os.path.expanduser(str(model["encoder_weights"]))).resolve())


def load_raw(path: str | os.PathLike, _seen: tuple = (), _as_written: str = "") -> dict:
    """Read one YAML file with its ``_base_`` chain merged in; returns a plain dict."""
    path = Path(path).resolve()
    if path in _seen:
        raise SegtrainError(f"{path}: _base_ includes itself (cycle: {' -> '.join(map(str, _seen))})")
    raw = _read_yaml(path, _seen[-1] if _seen else None, _as_written)
    bases = raw.pop("_base_", [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise SegtrainError(f"{path}: key '_base_' must be a path or a list of paths")
    merged: dict = {}
    for base in bases:
        merged = _merge(merged, load_raw(path.parent / os.path.expanduser(base), _seen + (path,), base))
    _resolve_paths(raw, path.parent)
    return _merge(merged, raw)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a", "b", "c"], value parsed as YAML)."""
    if "=" not in text:
        raise SegtrainError(f"--set {text!r}: expected key=value, e.g. --set train.epochs=3")
    key, value = text.split("=", 1)
    try:
        parsed = _yaml_load(value) if value.strip() else None
    except _DuplicateKey as err:
        raise SegtrainError(f"--set {text!r}: {err.detail}") from None
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
    if tp is float and isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
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


VOLUME_FORMATS = ("nifti", "series")  # data the data layer z-scores itself (data.normalize)
SPATIAL_AXES = {"nifti": 3, "series": 1}  # spatial axes of a sample; 2-D images are the rest


def input_channels(data: DataConfig) -> int:
    """How many channels a model input has: nifti channel files, series columns (default 1), image channels (default 3)."""
    if isinstance(data.channels, list):
        return len(data.channels)
    if data.channels is None:
        return 1 if data.format == "series" else 3
    return data.channels


def from_dict(raw: dict, source: str = "<dict>") -> Config:
    """Validate a plain dict (already merged) into a ``Config``."""
    config = _build(Config, raw, "", source)
    config.source = source
    model_raw = raw.get("model") if isinstance(raw.get("model"), dict) else {}
    if config.data.format in VOLUME_FORMATS:  # inputs arrive z-scored: the ImageNet default does not apply
        for key in ("mean", "std"):
            if key not in model_raw:
                setattr(config.model, key, None)
    config.output_dir = str(Path(os.path.expanduser(config.output_dir)).resolve())
    _check_values(config)
    return config


def _at_least(low: float) -> tuple[Any, str]:
    return (lambda v: v >= low), f"at least {low}"


# Ranges checked before anything runs: (dotted key, predicate, what the predicate means).
# ``not (v > 0)`` style predicates also refuse NaN.
_RANGES: list[tuple[str, Any, str]] = [
    ("data.color_jitter", lambda v: 0.0 <= v <= 1.0, "in [0, 1]"),
    ("data.rotate", lambda v: 0.0 <= v <= 180.0, "in [0, 180] degrees"),
    ("data.shift", lambda v: 0.0 <= v <= 1.0, "in [0, 1] (a fraction of the size)"),
    ("data.brightness", lambda v: 0.0 <= v <= 1.0, "in [0, 1]"),
    ("data.contrast", lambda v: 0.0 <= v <= 1.0, "in [0, 1]"),
    ("data.gamma", lambda v: 0.0 <= v < 1.0, "in [0, 1)"),
    ("data.noise", lambda v: 0.0 <= v <= 1.0, "in [0, 1] (a fraction of 255)"),
    ("data.blur", lambda v: v == 0.0 or 0.1 <= v <= 100.0, "0 (off) or a sigma in [0.1, 100] pixels"),
    ("data.elastic", lambda v: 0.0 <= v <= 1.0, "a probability in [0, 1]"),
    ("data.grid_distortion", lambda v: 0.0 <= v <= 1.0, "a probability in [0, 1]"),
    ("data.val_pad_to", *_at_least(1)),
    ("data.num_parallel_calls", lambda v: v >= 0, "0 (autotune) or a positive number of threads"),
    ("data.foreground_fraction", lambda v: 0.0 <= v <= 1.0, "a fraction in [0, 1]"),
    ("data.patches_per_case", *_at_least(1)),
    ("data.cached_cases", *_at_least(1)),
    ("data.patch_zoom", lambda v: 0.0 <= v < 1.0, "in [0, 1)"),
    ("data.patch_scale", lambda v: 0.0 <= v < 1.0, "in [0, 1)"),
    ("data.patch_shift", lambda v: 0.0 <= v < math.inf, "a finite number >= 0"),
    ("data.patch_gamma", lambda v: 0.0 <= v < 1.0, "in [0, 1)"),
    ("data.patch_noise", lambda v: 0.0 <= v < math.inf, "a finite number >= 0"),
    ("model.width", *_at_least(1)),
    ("train.steps", lambda v: v is None or v >= 1, "at least 1 (or null to train by epochs)"),
    ("train.seed", lambda v: 0 <= v < 2**32, "in 0..2**32-1"),
    ("train.val_every", *_at_least(1)),
    ("train.checkpoint_every_steps", lambda v: v >= 0, "0 (epoch ends only) or a positive number of steps"),
    ("train.optimizer.learning_rate", lambda v: 0 < v < math.inf, "a positive finite number, e.g. 1.0e-3"),
    ("train.optimizer.momentum", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("train.optimizer.weight_decay", lambda v: 0 <= v < math.inf, "a finite number >= 0"),
    ("train.optimizer.clipnorm", lambda v: v is None or 0 < v < math.inf, "a positive number or null"),
    ("train.schedule.warmup_steps", lambda v: v >= 0, "0 or a positive number of steps"),
    ("train.schedule.step_size", *_at_least(1)),
    ("train.schedule.power", lambda v: 0 < v < math.inf, "a positive number"),
    ("train.schedule.gamma", lambda v: 0 < v < math.inf, "a positive number"),
    ("train.schedule.min_lr", lambda v: 0 <= v < math.inf, "a finite number >= 0"),
]


def _check_ranges(config: Config) -> None:
    for key, ok, meaning in _RANGES:
        value = operator.attrgetter(key)(config)
        if not ok(value):
            raise SegtrainError(f"{config.source}: key '{key}' must be {meaning}, got {value!r}")
    out = Path(config.output_dir)
    if out.exists() and not out.is_dir():
        raise SegtrainError(f"{config.source}: key 'output_dir': {out} is a file, not a folder; choose another output_dir")


def _check_values(config: Config) -> None:
    _check_ranges(config)
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
    if data.rot90 and data.crop is None and data.resize is not None and data.resize[0] != data.resize[1]:
        raise SegtrainError(
            f"{src}: key 'data.rot90' needs data.crop or a square data.resize: a quarter turn swaps "
            f"height and width of the {data.resize[0]}x{data.resize[1]} batches"
        )
    _check_channels(config)
    if data.augment:
        from segtrain.data.augment import build_extra  # albumentations only when a list is given

        build_extra(data.augment, src)
    weights = config.train.class_weights
    if isinstance(weights, str) and weights not in ("none", "median_frequency"):
        raise SegtrainError(
            f"{src}: key 'train.class_weights' must be none, median_frequency or a list of numbers, got {weights!r}"
        )
    if isinstance(weights, list) and len(weights) != data.num_classes:
        raise SegtrainError(
            f"{src}: key 'train.class_weights' has {len(weights)} values but data.num_classes is {data.num_classes}"
        )
    config.train.loss = normalize_loss_spec(config.train.loss, src)
    if config.model.output_stride not in (8, 16):
        raise SegtrainError(f"{src}: key 'model.output_stride' must be 8 or 16, got {config.model.output_stride}")
    if config.train.precise_bn.batches < 0:
        raise SegtrainError(f"{src}: key 'train.precise_bn.batches' must be 0 (off) or more, got {config.train.precise_bn.batches}")
    if config.train.batch_size < 1 or config.train.epochs < 1:
        raise SegtrainError(f"{src}: keys 'train.batch_size' and 'train.epochs' must be at least 1")


def _check_patch_keys(config: Config) -> None:
    """data.patch and the patch augmentation axes against the number of spatial axes of nifti/series."""
    src, data = config.source, config.data
    rank = SPATIAL_AXES[data.format]
    if data.patch is not None and (len(data.patch) != rank or min(data.patch) < 1):
        raise SegtrainError(f"{src}: key 'data.patch' must be {rank} positive size(s) for format {data.format}, got {data.patch}")
    if any(not 0 <= a < rank for a in data.patch_flip) or len(set(data.patch_flip)) != len(data.patch_flip):
        raise SegtrainError(f"{src}: key 'data.patch_flip' must list distinct spatial axes in 0..{rank - 1}, got {data.patch_flip}")
    plane = data.patch_rot90
    if plane is not None and (len(plane) != 2 or plane[0] == plane[1] or any(not 0 <= a < rank for a in plane)):
        raise SegtrainError(f"{src}: key 'data.patch_rot90' must be two different spatial axes in 0..{rank - 1} (e.g. [0, 1]) or null, got {plane}")


def _check_channels(config: Config) -> None:
    """data.channels, data.label/mask/patch and model.mean/std against the data format."""
    src, data = config.source, config.data
    if data.format == "nifti":
        if not isinstance(data.channels, list) or not data.channels:
            raise SegtrainError(f"{src}: key 'data.channels' must list the channel files of a case for format nifti, e.g. [t1.nii.gz, flair.nii.gz]")
        if len(set(data.channels)) != len(data.channels):
            raise SegtrainError(f"{src}: key 'data.channels' names a file twice: {data.channels}; list each channel once")
        if data.label is None:
            raise SegtrainError(f"{src}: key 'data.label' must name the label file of a case for format nifti, e.g. seg.nii.gz")
    elif isinstance(data.channels, list):
        raise SegtrainError(f"{src}: key 'data.channels' must be a number of channels for format {data.format}, got {data.channels}")
    elif data.channels is not None and not (1 <= data.channels and (data.format == "series" or data.channels <= 4)):
        allowed = "at least 1" if data.format == "series" else "1 (grey), 2, 3 (RGB) or 4 (RGBA)"
        raise SegtrainError(f"{src}: key 'data.channels' must be {allowed} for format {data.format}, got {data.channels}")
    if data.format == "series" and data.label is None:
        raise SegtrainError(f"{src}: key 'data.label' must be a per-signal label file such as '{{name}}.labels.npy' or a change-point table such as desc.txt for format series")
    if data.format == "series" and data.mask is not None:
        raise SegtrainError(f"{src}: key 'data.mask' applies to format nifti only; remove it for format series")
    if data.format not in VOLUME_FORMATS:
        for key in ("label", "mask", "patch"):
            if getattr(data, key) is not None:
                where = "format nifti" if key == "mask" else "formats nifti and series"
                raise SegtrainError(f"{src}: key 'data.{key}' applies to {where} only; remove it for format {data.format}")
    else:
        _check_patch_keys(config)
    channels = input_channels(data)
    for key in ("mean", "std"):
        value = getattr(config.model, key)
        if isinstance(value, list) and len(value) not in (1, channels):
            raise SegtrainError(
                f"{src}: key 'model.{key}' has {len(value)} values but the input has {channels} channel(s) (data.channels); "
                f"give {channels} values (or one), or null for no normalisation"
            )


def default_output_dir(path: str | os.PathLike) -> Path:
    """``runs/<config folder>/<config file stem>`` under the current directory (``runs/<stem>`` for a
    config directly in ``configs/``): where a config without ``output_dir`` trains. The folder
    keeps ``configs/camvid/unet.yaml`` and ``configs/voc/unet.yaml`` out of each other's runs."""
    path = Path(path).resolve()
    folder = path.parent.name
    return Path.cwd() / "runs" / ("" if folder in ("configs", "") else folder) / path.stem


def load_config(path: str | os.PathLike, overrides: list[str] | None = None) -> Config:
    """Load ``path`` with its ``_base_`` chain, apply ``--set`` overrides, validate."""
    raw = load_raw(path)
    raw.setdefault("output_dir", str(default_output_dir(path)))
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
