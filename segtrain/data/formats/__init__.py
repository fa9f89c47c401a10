"""Dataset formats: one module per ``data.format`` and the table that maps names to them.

``voc``, ``camvid``, ``folders``, ``cityscapes``, ``ade20k``, ``coco_stuff`` (2-D images and
masks, ``images.py``), ``nifti`` (3-D volumes), ``series`` (1-D signals), ``geotiff`` (multi-band scenes read by windows); ``palette.py`` (with ``class_tables.py``) and ``decode.py`` are the palette-correct
image and mask decoding under them, ``splits.py`` lists a split through the table.
"""

from segtrain.data.formats.base import DatasetFormat, Decoded, Sample
from segtrain.data.formats.table import FORMATS, get_format, input_channels, register_format, unregister_format

__all__ = ["FORMATS", "DatasetFormat", "Decoded", "Sample", "get_format", "input_channels", "register_format", "unregister_format"]
