"""segtrain: semantic segmentation training on Keras 3 (TensorFlow, JAX or PyTorch)."""

from segtrain.backend import choose_default_backend
from segtrain.errors import SegtrainError

choose_default_backend()  # before anything imports Keras: JAX or PyTorch where TensorFlow is absent

__version__ = "0.1.0"
__all__ = ["SegtrainError", "__version__"]
