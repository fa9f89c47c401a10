"""Which Keras backend segtrain runs on: TensorFlow (the default), JAX or PyTorch.

Keras reads ``KERAS_BACKEND`` once, when it is first imported. segtrain leaves a set
variable alone; where it is unset and the backend Keras would load (the one in
``~/.keras/keras.json``, else TensorFlow) is not installed, it picks TensorFlow, JAX, then
PyTorch, whichever is installed, so that an environment made with ``pip install -e ".[jax]"``
trains with no further setting. Nothing here imports Keras or a backend.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import json
import os
import sys
from pathlib import Path

from segtrain.errors import SegtrainError

BACKENDS = ("tensorflow", "jax", "torch")


def installed(module: str) -> bool:
    """True when ``module`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _keras_json_backend() -> str | None:
    path = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "keras.json"
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("backend")
    except (OSError, ValueError, AttributeError):
        return None


def choose_default_backend() -> None:
    """Set ``KERAS_BACKEND`` to an installed backend when the one Keras would load is not installed.

    Keras would load ``KERAS_BACKEND``, else the backend in ``keras.json`` (which Keras writes,
    naming TensorFlow, on its first import), else TensorFlow.
    """
    if "keras" in sys.modules or os.environ.get("KERAS_BACKEND"):
        return
    if installed(_keras_json_backend() or "tensorflow"):
        return
    for name in BACKENDS:
        if installed(name):
            os.environ["KERAS_BACKEND"] = name
            return


def requested_backend() -> str:
    """The backend Keras will load (or has loaded)."""
    if "keras" in sys.modules:
        import keras  # already loaded: no cost

        return keras.backend.backend()
    return os.environ.get("KERAS_BACKEND") or _keras_json_backend() or "tensorflow"


def check_backend_installed() -> None:
    """One clear line instead of Keras's import traceback when the chosen backend is missing."""
    name = requested_backend()
    if name not in BACKENDS:
        raise SegtrainError(f"KERAS_BACKEND={name}: segtrain runs on {', '.join(BACKENDS)}; set one of those")
    if not installed(name):
        raise SegtrainError(
            f"KERAS_BACKEND={name}, but {name} is not installed: pip install -e \".[{name}]\", "
            f"or set KERAS_BACKEND to an installed backend"
        )


def backend() -> str:
    """The running Keras backend's name (imports Keras)."""
    import keras  # loads the backend: called only once one is chosen

    return keras.backend.backend()


def no_grad():
    """A context with gradient recording off: ``torch.no_grad()`` on PyTorch, nothing elsewhere."""
    if backend() == "torch":
        import torch  # the torch backend is running, so torch is loaded

        return torch.no_grad()
    return contextlib.nullcontext()


def require_tensorflow(what: str) -> None:
    """Raise one line when ``what`` needs TensorFlow and it is not installed."""
    if not installed("tensorflow"):
        raise SegtrainError(f"{what} needs TensorFlow, which is not installed here: pip install -e \".[tensorflow]\"")


class _NoTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "tensorflow":
            raise ModuleNotFoundError(f"No module named {name!r} (hidden by segtrain.backend.tensorflow_hidden)")
        return None


@contextlib.contextmanager
def tensorflow_hidden():
    """Inside, importing TensorFlow fails (unless it is loaded already).

    ``keras.utils.set_random_seed`` imports TensorFlow whenever it is installed, to seed it
    too; a JAX or PyTorch run would pay seconds of start-up and TensorFlow's CUDA probe
    messages for nothing.
    """
    if "tensorflow" in sys.modules:
        yield
        return
    finder = _NoTensorFlow()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
