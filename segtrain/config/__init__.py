"""YAML -> typed, checked config: ``schema.py`` (the dataclasses), ``loading.py`` (strict YAML,
``_base_``, ``--set``), ``typed.py`` (a dict against the dataclasses), ``checks.py`` (ranges,
cross-key rules, each format's own keys). Import from here: ``from segtrain.config import load_config``.
"""

from segtrain.config.loading import (
    apply_overrides,
    default_output_dir,
    flatten,
    from_dict,
    load_config,
    load_raw,
    parse_override,
    save_config,
    to_dict,
)
from segtrain.config.schema import (
    Config,
    DataConfig,
    EarlyStoppingConfig,
    EmaConfig,
    EvaluateConfig,
    ModelConfig,
    OptimizerConfig,
    PreciseBNConfig,
    RuntimeConfig,
    ScheduleConfig,
    TimeBudgetConfig,
    TrainConfig,
)
from segtrain.data.formats import input_channels

__all__ = [
    "Config", "DataConfig", "EarlyStoppingConfig", "EmaConfig", "EvaluateConfig", "ModelConfig", "OptimizerConfig", "PreciseBNConfig", "RuntimeConfig", "ScheduleConfig",
    "TimeBudgetConfig", "TrainConfig", "apply_overrides", "default_output_dir", "flatten", "from_dict", "input_channels", "load_config", "load_raw",
    "parse_override", "save_config", "to_dict",
]
