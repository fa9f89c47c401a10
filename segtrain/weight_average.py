"""``train.ema``: an exponential moving average of the weights, and the rule for which weights go where.

The average is the Keras optimizer's own (``use_ema``): updated inside the compiled step of every
backend (``tf.function``, the JAX stateless step, the torch step), it starts at the weights after
the first update and is ``momentum * average + (1 - momentum) * weights`` after each later one.
With ``train.accumulate_steps`` N, Keras updates it after every micro-batch; the weights change only
every N, so ``build_optimizer`` gives it ``momentum ** (1 / N)``: ``momentum`` per optimizer update.

The rule: training steps the raw weights; precise BN, validation, ``best.keras``, ``last.keras``
(hence evaluate, predict and export) and the resume arrays see the average as the model's weights.
``swap`` exchanges the model's trainable weights with the optimizer's average slots, so a resume
file holds the average as model weights and the raw weights in the optimizer's slots; restoring it
and swapping again continues exactly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import keras


class WeightAverage:
    """The model's trainable weights paired with their averages (no pairs when ``train.ema`` is off)."""

    def __init__(self, model: keras.Model, optimizer: keras.optimizers.Optimizer):
        inner = getattr(optimizer, "inner_optimizer", optimizer)  # a LossScaleOptimizer (mixed_float16) wraps it
        averages = inner._model_variables_moving_average if inner.use_ema else []  # Keras keeps it private
        self._pairs = [(var, avg) for var, avg in zip(inner._trainable_variables, averages) if avg is not None]

    def swap(self) -> None:
        """Exchange the weights and their averages (an involution: twice is no change)."""
        for var, avg in self._pairs:
            raw, averaged = var.numpy(), avg.numpy()
            var.assign(averaged)
            avg.assign(raw)

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """The averaged weights in the model for the block (a no-op when ``train.ema`` is off)."""
        self.swap()
        try:
            yield
        finally:
            self.swap()
