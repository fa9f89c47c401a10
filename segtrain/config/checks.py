"""Checks of a typed config before anything runs: value ranges (one table), cross-key rules,
and each dataset format's own keys (asked of the format table)."""

from __future__ import annotations

import math
import operator
from pathlib import Path
from typing import Any

from segtrain.config.schema import Config
from segtrain.data.formats import FORMATS, DatasetFormat, get_format, input_channels
from segtrain.data.transforms.extra import build_extra
from segtrain.errors import SegtrainError
from segtrain.loss_specs import normalize_loss_spec
from segtrain.tracking.table import check_loggers


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
    ("data.crop_class_balance", lambda v: 0.0 <= v <= 1.0, "a share of crops in [0, 1]"),
    ("data.grid_distortion", lambda v: 0.0 <= v <= 1.0, "a probability in [0, 1]"),
    ("data.val_pad_to", *_at_least(1)),
    ("data.num_parallel_calls", lambda v: v >= 0, "0 (the default: one batch per core in tf.data, a thread per core in the NumPy loader) or a positive number"),
    ("data.decode_processes", lambda v: v >= 0, "0 (decode on threads) or a positive number of worker processes"),
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
    ("train.accumulate_steps", *_at_least(1)),
    ("train.early_stopping.patience", *_at_least(1)),
    ("train.early_stopping.min_delta", lambda v: 0 <= v < math.inf, "a finite number >= 0"),
    ("train.ema.momentum", lambda v: 0 < v < 1, "in (0, 1), e.g. 0.999"),
    ("train.time_budget.minutes", lambda v: 0 < v < math.inf, "a positive number of minutes, e.g. 60"),
    ("train.time_budget.probe_steps", *_at_least(2)),
    ("evaluate.change_point_margin", lambda v: 0 <= v < 1, "a fraction of the series length in [0, 1), e.g. 0.01"),
    ("runtime.log_images", lambda v: v >= 0, "0 (no prediction strips) or a number of val images"),
]


def _check_ranges(config: Config) -> None:
    for key, ok, meaning in _RANGES:
        section, _, name = key.rpartition(".")
        parent = operator.attrgetter(section)(config)
        if parent is None:  # a section that is off (null), e.g. train.ema
            continue
        value = getattr(parent, name)
        if not ok(value):
            raise SegtrainError(f"{config.source}: key '{key}' must be {meaning}, got {value!r}")
    out = Path(config.output_dir)
    if out.exists() and not out.is_dir():
        raise SegtrainError(f"{config.source}: key 'output_dir': {out} is a file, not a folder; choose another output_dir")


def check_values(config: Config) -> None:
    """Every check that needs no file: ranges, cross-key rules, the format's own keys, data.augment, losses."""
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
    _check_format_keys(config)
    _check_normalization(config)
    check_loggers(config.runtime.loggers, src)
    if data.augment:
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
    _check_regions(config)
    config.train.loss = normalize_loss_spec(config.train.loss, src, head=config.model.head)
    if config.model.output_stride not in (8, 16):
        raise SegtrainError(f"{src}: key 'model.output_stride' must be 8 or 16, got {config.model.output_stride}")
    if config.train.precise_bn.batches < 0:
        raise SegtrainError(f"{src}: key 'train.precise_bn.batches' must be 0 (off) or more, got {config.train.precise_bn.batches}")
    if config.train.batch_size < 1 or config.train.epochs < 1:
        raise SegtrainError(f"{src}: keys 'train.batch_size' and 'train.epochs' must be at least 1")
    _check_time_budget(config)


def _check_time_budget(config: Config) -> None:
    """``train.time_budget`` decides the length alone, plans in one process, and probes inside the warmup
    of a schedule that decays over the run (so the probe steps train alike whatever length is planned)."""
    train, src = config.train, config.source
    budget = train.time_budget
    if budget is None:
        return
    if train.steps is not None:
        raise SegtrainError(f"{src}: keys 'train.steps' and 'train.time_budget' both set the run length; "
                            "remove train.steps (or set it to null)")
    if train.distribute == "multi_worker":
        raise SegtrainError(f"{src}: key 'train.time_budget' plans in one process; workers would each plan "
                            "another length. Use train.steps with train.distribute: multi_worker")
    warmup_batches = train.schedule.warmup_steps * train.accumulate_steps
    if train.schedule.name in ("poly", "cosine") and warmup_batches < budget.probe_steps:
        raise SegtrainError(
            f"{src}: key 'train.time_budget.probe_steps' ({budget.probe_steps}) must fall inside the warmup of "
            f"the {train.schedule.name} schedule (train.schedule.warmup_steps: {train.schedule.warmup_steps}), "
            "whose length is planned after them; raise warmup_steps or lower probe_steps")


def _check_regions(config: Config) -> None:
    """``model.head: sigmoid`` needs ``data.regions`` (and they need it): classes in range, no class weights."""
    src, regions, head = config.source, config.data.regions, config.model.head
    if head == "sigmoid" and not regions:
        raise SegtrainError(f"{src}: key 'data.regions' is needed with model.head: sigmoid (one output per region), "
                            "e.g. {whole: [1, 2, 3, 4], core: [1, 3, 4], enhancing: [4]}")
    if regions and head != "sigmoid":
        raise SegtrainError(f"{src}: key 'data.regions' trains one sigmoid per region; set model.head: sigmoid, or "
                            "remove data.regions (evaluate.groups scores label groups of a softmax model)")
    top = config.data.num_classes - 1
    for name, classes in regions.items():
        if not classes or min(classes) < 0 or max(classes) > top or len(set(classes)) != len(classes):
            raise SegtrainError(f"{src}: key 'data.regions.{name}' must list distinct classes in 0..{top}, got {classes}")
    if head == "sigmoid" and config.train.class_weights != "none":
        raise SegtrainError(f"{src}: key 'train.class_weights' has no meaning for model.head: sigmoid (each region is "
                            "its own binary problem); set it to none")


def format_of(config: Config) -> DatasetFormat:
    """The format table's entry for ``data.format``; an unknown name is an error naming the file."""
    try:
        return get_format(config.data.format)
    except SegtrainError as err:
        raise SegtrainError(f"{config.source}: {err}") from None


def _check_format_keys(config: Config) -> None:
    """The format's own checks, and no key that only other formats read (``DatasetFormat.own_keys``)."""
    fmt = format_of(config)
    fmt.check_config(config)
    others = sorted({key for f in FORMATS.values() for key in f.own_keys} - set(fmt.own_keys))
    for key in others:
        if getattr(config.data, key) is not None:
            owners = [f.name for f in FORMATS.values() if key in f.own_keys]
            where = f"format {owners[0]}" if len(owners) == 1 else f"formats {', '.join(owners[:-1])} and {owners[-1]}"
            raise SegtrainError(f"{config.source}: key 'data.{key}' applies to {where} only; remove it for format {fmt.name}")


def _check_normalization(config: Config) -> None:
    """``model.mean`` / ``model.std``: one value, or one per input channel, or null."""
    channels = input_channels(config.data)
    for key in ("mean", "std"):
        value = getattr(config.model, key)
        if isinstance(value, list) and len(value) not in (1, channels):
            raise SegtrainError(
                f"{config.source}: key 'model.{key}' has {len(value)} values but the input has {channels} channel(s) (data.channels); "
                f"give {channels} values (or one), or null for no normalisation"
            )
