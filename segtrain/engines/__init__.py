"""The backend-specific half of the training loop (``segtrain.training`` is the other, shared half).

An engine compiles a training step for the running Keras backend and feeds it batches:
``tensorflow_engine`` (``tf.function`` under a tf.distribute strategy: one device, mirrored
or multi-worker), ``jax_engine`` (``jax.jit`` of a stateless step; data parallel over the
local devices with ``keras.distribution``), ``torch_engine`` (eager autograd). Everything
else (loss, schedule, precise BN, validation, checkpoints, resume, logs) is shared.

``ENGINES`` maps each Keras backend to its engine module, imported only when that backend
runs (each imports its framework, an optional heavy dependency). An engine module provides
``ENGINE`` (its ``Engine`` subclass), ``compile_forward(function, model)``,
``inference_forward(model)``, ``gpu_capabilities()`` and ``thread_settings()``; adding a backend is one module and one line here
(docs/extending_models.md).
"""

from __future__ import annotations

import importlib
import weakref
from collections.abc import Callable
from types import ModuleType

import keras

from segtrain.config import TrainConfig
from segtrain.engines.base import Engine
from segtrain.errors import SegtrainError

ENGINES = {
    "tensorflow": "segtrain.engines.tensorflow_engine",
    "jax": "segtrain.engines.jax_engine",
    "torch": "segtrain.engines.torch_engine",
}


def engine_module(backend: str | None = None) -> ModuleType:
    """The engine module of ``backend`` (default: the running Keras backend), imported on first use."""
    name = backend or keras.backend.backend()
    if name not in ENGINES:
        *others, last = ENGINES
        raise SegtrainError(f"KERAS_BACKEND={name}: segtrain trains on {', '.join(others)} or {last}")
    return importlib.import_module(ENGINES[name])


def make_engine(train: TrainConfig, strategy=None) -> Engine:
    """The engine of the running Keras backend for ``train.distribute`` (``strategy``: TensorFlow only)."""
    return engine_module().ENGINE.create(train, strategy)


def compile_forward(function: Callable, model: keras.Model) -> Callable:
    """``function(images)``, a forward pass that only reads ``model``'s variables, compiled for the running backend.

    Writes to variables inside it (BatchNorm's moving averages in training mode) are not
    kept on JAX and are left to the caller elsewhere.
    """
    return engine_module().compile_forward(function, model)


# model -> its inference forward for the running backend (built once per model)
_INFERENCE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def inference_forward(model: keras.Model) -> Callable:
    """``forward(images) -> logits`` of ``model`` in inference mode, the running backend's fastest
    way (one ``jax.jit`` per model on JAX, eager elsewhere); cached per model."""
    forward = _INFERENCE.get(model)
    if forward is None:
        forward = _INFERENCE[model] = engine_module().inference_forward(model)
    return forward


def gpu_capabilities() -> list[tuple[int, int]]:
    """Compute capability ``(major, minor)`` of each GPU the running Keras backend sees."""
    return engine_module().gpu_capabilities()


def thread_settings() -> dict:
    """The CPU thread pools (and oneDNN, where the backend has it) the running backend uses: the run log
    and the benchmarks record them beside the CPU's model and flags (``segtrain.machine``)."""
    return engine_module().thread_settings()


__all__ = ["ENGINES", "Engine", "compile_forward", "engine_module", "gpu_capabilities", "inference_forward", "make_engine",
           "thread_settings"]
