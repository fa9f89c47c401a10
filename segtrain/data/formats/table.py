"""The table of dataset formats: ``data.format`` -> ``DatasetFormat`` (see ``base.py``).

The built-in formats are registered here; a new one is a module with a ``FORMAT`` and one
line below, or, from outside segtrain, ``register_format(DatasetFormat(...))`` before the
config is loaded (docs/extending.md).
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING

from segtrain.data.formats import ade20k, camvid, cityscapes, coco_stuff, folders, geotiff, nifti, series, voc
from segtrain.data.formats.base import DatasetFormat
from segtrain.errors import SegtrainError

if TYPE_CHECKING:  # type hints only: the config checks import this package
    from segtrain.config.schema import DataConfig

FORMATS: dict[str, DatasetFormat] = {}


def register_format(fmt: DatasetFormat, *, replace: bool = False) -> DatasetFormat:
    """Add ``fmt`` to the table under ``fmt.name`` (a name already taken is an error unless ``replace``)."""
    if fmt.name in FORMATS and not replace:
        raise ValueError(f"dataset format {fmt.name!r} is already registered; pass replace=True to override it")
    FORMATS[fmt.name] = fmt
    return fmt


def unregister_format(name: str) -> None:
    """Remove a format from the table (tests that register a toy format clean up with this)."""
    FORMATS.pop(name, None)


def get_format(name: str) -> DatasetFormat:
    """The table's entry for ``data.format``; an unknown name is one error line with the closest names."""
    try:
        return FORMATS[name]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(name), FORMATS, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise SegtrainError(f"key 'data.format': must be one of {', '.join(FORMATS)}, got {name!r}{hint}") from None


def input_channels(data_cfg: DataConfig) -> int:
    """Channels of a model input: the listed channel files or bands, ``data.channels``, or the format's default."""
    if isinstance(data_cfg.channels, list):
        return len(data_cfg.channels)
    if data_cfg.bands is not None:
        return len(data_cfg.bands)
    if data_cfg.channels is None:
        return get_format(data_cfg.format).default_channels
    return data_cfg.channels


for _module in (voc, camvid, folders, nifti, series, cityscapes, ade20k, coco_stuff, geotiff):
    register_format(_module.FORMAT)
