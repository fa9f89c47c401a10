"""Learning-rate schedules: linear warmup then constant, poly, cosine or step decay.

One serialisable ``LearningRateSchedule`` keyed by the optimizer's step counter, so the
schedule position is restored exactly by restoring ``optimizer.iterations`` on resume. It
counts optimizer updates: Keras calls it with its micro-batch counter when gradients are
accumulated (``train.accumulate_steps``), which ``micro_batches`` divides back.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from segtrain.config import ScheduleConfig

NAMES = ("constant", "poly", "cosine", "step")


@keras.saving.register_keras_serializable(package="segtrain")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """``base_lr`` ramped linearly over ``warmup_steps``, then decayed over the rest.

    Args:
        base_lr: peak learning rate.
        total_steps: length of the run; poly and cosine reach ``min_lr`` there.
        name: constant | poly | cosine | step.
        warmup_steps: steps 0..warmup-1 use ``base_lr * (step + 1) / warmup_steps``.
        power: poly exponent.
        step_size, gamma: step decay multiplies by ``gamma`` every ``step_size`` steps.
        min_lr: floor for poly and cosine.
        micro_batches: micro-batches per optimizer update (``train.accumulate_steps``); steps count updates.
    """

    def __init__(self, base_lr: float, total_steps: int, name: str = "constant", warmup_steps: int = 0,
                 power: float = 0.9, step_size: int = 1000, gamma: float = 0.1, min_lr: float = 0.0,
                 micro_batches: int = 1):
        if name not in NAMES:
            raise ValueError(f"schedule name must be one of {NAMES}, got {name!r}")
        self.base_lr = float(base_lr)
        self.total_steps = int(total_steps)
        self.name = name
        self.warmup_steps = int(warmup_steps)
        self.power = float(power)
        self.step_size = max(int(step_size), 1)
        self.gamma = float(gamma)
        self.min_lr = float(min_lr)
        self.micro_batches = int(micro_batches)

    def __call__(self, step):
        step = ops.cast(ops.floor_divide(step, self.micro_batches), "float32")
        t = ops.maximum(step - self.warmup_steps, 0.0)
        span = float(max(self.total_steps - self.warmup_steps, 1))
        frac = ops.minimum(t / span, 1.0)
        top, low = self.base_lr, self.min_lr
        if self.name == "poly":
            lr = low + (top - low) * ops.power(1.0 - frac, self.power)
        elif self.name == "cosine":
            lr = low + (top - low) * 0.5 * (1.0 + ops.cos(math.pi * frac))
        elif self.name == "step":
            lr = top * ops.power(self.gamma, ops.floor(t / self.step_size))
        else:
            lr = top * ops.ones_like(step)
        if self.warmup_steps > 0:
            ramp = top * (step + 1.0) / self.warmup_steps
            lr = ops.where(step < self.warmup_steps, ramp, lr)
        return lr

    def get_config(self) -> dict:
        return {"base_lr": self.base_lr, "total_steps": self.total_steps, "name": self.name,
                "warmup_steps": self.warmup_steps, "power": self.power, "step_size": self.step_size,
                "gamma": self.gamma, "min_lr": self.min_lr, "micro_batches": self.micro_batches}


def build_schedule(cfg: ScheduleConfig, base_lr: float, total_steps: int, micro_batches: int = 1) -> WarmupSchedule:
    """Config section ``train.schedule`` -> schedule over a run of ``total_steps`` optimizer updates."""
    return WarmupSchedule(base_lr, total_steps, cfg.name, cfg.warmup_steps, cfg.power,
                          cfg.step_size, cfg.gamma, cfg.min_lr, micro_batches)
