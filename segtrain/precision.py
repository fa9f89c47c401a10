"""Which Keras dtype policy a run uses (``train.mixed_precision``), and float32 copies of models.

``auto`` picks by the hardware the step will run on:

* a visible GPU: ``mixed_bfloat16`` from compute capability 8.0 (Ampere and later: bf16
  tensor cores, no loss scaling), ``mixed_float16`` from 7.0 (Volta/Turing tensor cores;
  the optimizer is loss-scaled), ``float32`` below;
* no GPU: ``mixed_bfloat16`` when the CPU has native bf16 arithmetic (the ``avx512_bf16``
  or ``amx_bf16`` flag in ``/proc/cpuinfo``, where oneDNN runs bf16 convolutions about
  1.5-1.9x faster), ``float32`` otherwise (emulated bf16 is slower than float32), and
  ``float32`` for 3-D data on TensorFlow, whose CPU bf16 3-D convolutions abort.

``none`` is float32. Mixed policies keep the variables in float32, so a float32 copy of
a model (``float32_copy``) has exactly the same weights: evaluation uses one so that its
numbers do not depend on the precision a run was trained in.
"""

from __future__ import annotations

from pathlib import Path

import keras

import segtrain.models  # noqa: F401  (registers the zoo's layers, which float32_copy deserialises)
from segtrain.engines import gpu_capabilities  # backend-specific: each engine module asks its framework
from segtrain.errors import SegtrainError

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The CPU feature flags Linux reports (empty where there is no /proc/cpuinfo)."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def auto_policy(gpus: list[tuple[int, int]], flags: set[str], spatial_rank: int = 2, backend: str = "tensorflow") -> tuple[str, str]:
    """``(policy, reason)`` for ``auto`` given the GPUs' capabilities, the CPU's flags, the
    samples' spatial axes and the Keras backend."""
    if gpus:
        lowest = min(gpus)
        where = f"GPU compute capability {lowest[0]}.{lowest[1]}"
        if lowest >= (8, 0):
            return "mixed_bfloat16", where
        if lowest >= (7, 0):
            return "mixed_float16", where
        return "float32", where + " (no tensor cores)"
    native = sorted(flags & set(BF16_CPU_FLAGS))
    if native and _bf16_crashes(spatial_rank, backend):
        return "float32", f"CPU with {' and '.join(native)}, but {BF16_3D_CRASH}"
    if native:
        return "mixed_bfloat16", f"CPU with {' and '.join(native)}"
    return "float32", "CPU without avx512_bf16/amx_bf16"


# Measured on an AMD EPYC with avx512_bf16, TensorFlow 2.21: a 3-D convolution's gradient in
# bfloat16 on the CPU aborts the process ("double free or corruption"); 1-D, 2-D and JAX are fine.
BF16_3D_CRASH = "TensorFlow's CPU bfloat16 3-D convolutions abort the process (oneDNN)"


def _bf16_crashes(spatial_rank: int, backend: str) -> bool:
    return spatial_rank == 3 and backend == "tensorflow"


def resolve_policy(setting: str, spatial_rank: int = 2) -> tuple[str, str]:
    """``train.mixed_precision`` -> ``(Keras policy name, why)`` for samples with ``spatial_rank`` axes."""
    if setting == "auto":
        return auto_policy(gpu_capabilities(), cpu_flags(), spatial_rank, keras.backend.backend())
    if setting == "mixed_bfloat16" and _bf16_crashes(spatial_rank, keras.backend.backend()) and not gpu_capabilities():
        raise SegtrainError(f"train.mixed_precision: mixed_bfloat16 with 3-D data on this CPU: {BF16_3D_CRASH}; "
                            "use none (float32), or KERAS_BACKEND=jax")
    if setting == "none":
        return "float32", "train.mixed_precision: none"
    return setting, f"train.mixed_precision: {setting}"


def _float32_config(node):
    """A serialized model with every dtype policy replaced by float32."""
    if isinstance(node, dict):
        if node.get("class_name") in ("DTypePolicy", "FloatDTypePolicy") and isinstance(node.get("config"), dict):
            return {**node, "config": {**node["config"], "name": "float32"}}
        return {key: _float32_config(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_float32_config(value) for value in node]
    return node


def is_float32(model: keras.Model) -> bool:
    return all(layer.dtype_policy.name == "float32" for layer in model._flatten_layers(include_self=True))


def float32_copy(model: keras.Model) -> keras.Model:
    """``model`` itself when it already computes in float32, else a float32 twin with the same weights."""
    if is_float32(model):
        return model
    config = _float32_config(keras.saving.serialize_keras_object(model))
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")  # sub-layers made in __init__ take the global policy
    try:
        twin = keras.saving.deserialize_keras_object(config)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    twin.set_weights(model.get_weights())
    return twin


class Float32Mirror:
    """A float32 model that follows a (possibly mixed-precision) model's weights.

    Calling it returns the model itself when that computes in float32, else a twin built
    once and given the current weights: validation during training then computes exactly
    what ``segtrain evaluate`` computes on the saved checkpoint.
    """

    def __init__(self, model: keras.Model):
        self.model = model
        self._twin: keras.Model | None = None

    def __call__(self) -> keras.Model:
        if self._twin is None:
            self._twin = float32_copy(self.model)
        elif self._twin is not self.model:
            self._twin.set_weights(self.model.get_weights())
        return self._twin
