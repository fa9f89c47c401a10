"""segtrain: semantic segmentation training on TensorFlow + Keras 3."""

from segtrain.errors import SegtrainError

__version__ = "0.1.0"
__all__ = ["SegtrainError", "__version__"]
