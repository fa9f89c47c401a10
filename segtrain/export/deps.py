"""What the export package takes from the rest of segtrain, in one module.

The data layer, the model layers and inference are being reorganised: their import paths
change here and nowhere else in ``segtrain.export``. The data layer's decoder imports
OpenCV and the model layers import Keras, so those two are imported when first used.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segtrain.inference import load_checkpoint, run_config_path  # noqa: F401  (Keras loads on first use)


def read_image(path: Path) -> np.ndarray:
    """An image file's pixels as RGB uint8, decoded as training decodes it."""
    from segtrain.data.decode import read_image  # optional dependency: OpenCV (cv2), imported by the decoder

    return read_image(path)


def split_samples(data_cfg, split: str) -> tuple[list, str]:
    """(the samples of a config's split, the split's name as the user knows it)."""
    from segtrain.data.sources import list_samples, split_name

    return list_samples(data_cfg, split), split_name(data_cfg, split)


def unpools_by_index(model) -> bool:
    """Whether ``model`` unpools by max-pool indices (near-tied windows may flip between runtimes)."""
    from segtrain.models.layers import MaxUnpool  # Keras, with its backend (TensorFlow for export)

    return any(isinstance(layer, MaxUnpool) for layer in model._flatten_layers(include_self=False, recursive=True))
