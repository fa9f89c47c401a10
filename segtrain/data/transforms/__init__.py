"""Transforms: 2-D augmentation through albumentations (``image.py``, ``extra.py`` for
``data.augment``), N-D patches and their augmentation (``patches.py``, ``nd.py``)."""
