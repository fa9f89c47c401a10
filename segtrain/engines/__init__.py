"""The backend-specific half of the training loop (``segtrain.training`` is the other, shared half).

An engine compiles a training step for the running Keras backend and feeds it batches:
``tensorflow_engine`` (``tf.function`` under a tf.distribute strategy: one device, mirrored
or multi-worker), ``jax_engine`` (``jax.jit`` of a stateless step; data parallel over the
local devices with ``keras.distribution``), ``torch_engine`` (eager autograd). Everything
else (loss, schedule, precise BN, validation, checkpoints, resume, logs) is shared.
"""

from __future__ import annotations

from segtrain.config import TrainConfig
from segtrain.engines.base import Engine


def make_engine(train: TrainConfig, strategy=None) -> Engine:
    """The engine of the running Keras backend for ``train.distribute`` (``strategy``: TensorFlow only)."""
    import keras

    name = keras.backend.backend()
    if name == "tensorflow":
        from segtrain.engines.tensorflow_engine import TensorFlowEngine

        return TensorFlowEngine(train.distribute, strategy, train.jit_compile)
    if strategy is not None:
        from segtrain.errors import SegtrainError

        raise SegtrainError(f"Trainer(strategy=...): tf.distribute strategies need KERAS_BACKEND=tensorflow, not {name}")
    if name == "jax":
        from segtrain.engines.jax_engine import JaxEngine

        return JaxEngine(train.distribute)
    if name == "torch":
        from segtrain.engines.torch_engine import TorchEngine

        return TorchEngine(train.distribute)
    from segtrain.errors import SegtrainError

    raise SegtrainError(f"KERAS_BACKEND={name}: segtrain trains on tensorflow, jax or torch")


def compile_forward(function, model):
    """``function(images)``, a forward pass that only reads ``model``'s variables, compiled for the running backend.

    Writes to variables inside it (BatchNorm's moving averages in training mode) are not
    kept on JAX and are left to the caller elsewhere.
    """
    import keras

    name = keras.backend.backend()
    if name == "tensorflow":
        from segtrain.engines.tensorflow_engine import compile_forward as compile_for
    elif name == "jax":
        from segtrain.engines.jax_engine import compile_forward as compile_for
    else:
        from segtrain.engines.torch_engine import compile_forward as compile_for
    return compile_for(function, model)


__all__ = ["Engine", "compile_forward", "make_engine"]
