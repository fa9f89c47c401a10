"""Data layer in three rooms: ``formats/`` (dataset layouts and decoding, the format table),
``transforms/`` (2-D and N-D augmentation, patches) and ``loading/`` (sample plans, seeds and
batch sources); ``check.py`` is `segtrain check-dataset`."""
