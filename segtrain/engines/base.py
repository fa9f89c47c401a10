"""What every engine provides, and the parts JAX and PyTorch share (NumPy batches, one process)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import keras
import numpy as np

from segtrain.backend import tensorflow_hidden
from segtrain.config import Config, TrainConfig
from segtrain.data.loading.batches import numpy_batches
from segtrain.errors import SegtrainError

# (batch) -> (mean loss of the global batch, learning rate the step used): floats, or scalars still on the
# device that ``float()`` reads (JAX: the loop reads them one step late, so the next step is already queued)
TrainStep = Callable[[object], tuple[object, object]]


class Engine:
    """One backend's step, batch feeding and compiled forward passes.

    ``chief``: this process writes checkpoints and logs; ``replicas``: devices a global batch
    is split over. The base class is the single-process engine on NumPy batches.
    """

    name = "base"
    chief = True
    replicas = 1
    # The default data layer kept for the whole run (``endless_batches``) rather than built per epoch:
    # tf.data's start-up costs a pipeline per epoch; the NumPy loader's is a thread pool.
    one_pipeline_per_run = False

    @classmethod
    def create(cls, train: TrainConfig, strategy=None) -> Engine:
        """The engine for ``train``; a tf.distribute ``strategy`` only the TensorFlow engine takes."""
        if strategy is not None:
            raise SegtrainError(f"Trainer(strategy=...): tf.distribute strategies need KERAS_BACKEND=tensorflow, "
                                f"not {cls.name}")
        return cls(train.distribute)

    @staticmethod
    def compile_forward(function: Callable, model: keras.Model) -> Callable:
        """``function(images)`` compiled for this engine's backend (its module's ``compile_forward``)."""
        raise NotImplementedError

    def __init__(self, distribute: str):
        if distribute == "multi_worker":
            raise SegtrainError(f"train.distribute: multi_worker runs on KERAS_BACKEND=tensorflow only (this is "
                                f"{self.name}); use mirrored (all local devices) or none")

    def setup(self, seed: int, deterministic: bool) -> None:
        with tensorflow_hidden():  # it would import TensorFlow only to seed it
            keras.utils.set_random_seed(seed)

    def scope(self):
        """Where the model and the optimizer are created (a distribution's variable placement)."""
        return contextlib.nullcontext()

    def epoch_batches(self, dataset, count: int):
        """A context manager over the first ``count`` batches, in the form the step takes."""
        return numpy_batches(dataset, count)

    def endless_batches(self, config: Config, split: str, epoch: int, skip_batches: int):
        """The training batches from ``(epoch, skip_batches)`` on, epoch after epoch, from one default
        pipeline, in the form the step takes; an iterator with ``close()`` (``one_pipeline_per_run`` engines)."""
        raise NotImplementedError

    def make_train_step(self, model: keras.Model, optimizer, loss_share: Callable) -> TrainStep:
        raise NotImplementedError

    def make_finite_check(self, model: keras.Model, optimizer) -> Callable[[object], bool]:
        """``check(batch)``: every float variable finite, and the model's outputs on ``batch``."""
        variables = [v for v in [*model.variables, *optimizer.variables] if "float" in str(v.dtype)]
        forward = self.compile_forward(lambda images: model(images, training=False), model)

        def check(batch) -> bool:
            logits = keras.ops.convert_to_numpy(forward(batch[0]))
            return bool(np.isfinite(logits).all()) and all(np.isfinite(v.numpy()).all() for v in variables)

        return check

    def make_predict(self, model: keras.Model, decode: Callable[[np.ndarray], np.ndarray]) -> Callable[[object], np.ndarray]:
        """``labels(images)``: uint8 class indices, ``decode`` of the logits (``segtrain.heads.Head.decode``)."""

        def labels(images) -> np.ndarray:
            return decode(np.asarray(model.predict_on_batch(images)))

        return labels


def single_device_sum(x):
    """The all-reduce of one process on one program: the global batch is already here."""
    return x
