"""Image and mask decoding: files -> uint8 images (RGB or ``data.channels``) and uint8 class-index masks.

A palette ('P') PNG stores class indices, so its mask is ``np.asarray(Image.open(path))``
and nothing else: never convert it to RGB or grey first. ``tf.io.decode_png(channels=1)``
and ``cv2.imread`` expand the palette into colours (VOC class 18 reads as grey 112), which
looks plausible and trains garbage. 'L' masks are their values; RGB(A) masks go through
the dataset's colour table and an unknown colour is an error, never a silent class 0. A
mask stored in a lossy format (JPEG, WebP: judged by the bytes, not the file name) is refused.
After decoding, the format's own raw value -> class table applies (Cityscapes' label ids ->
train ids, ADE20K's reduce-zero-label, COCO-Stuff's 182 ids -> 171 classes), the dataset's
void value becomes 255, ``data.label_map`` is applied on top, and any value that is neither
a class nor 255 is an error naming the file.

8-bit RGB images and 8-bit grey masks in PNG files (CamVid, Cityscapes, ADE20K's annotations)
are decoded by OpenCV with the GIL released (``png_decode.py``: same arrays, chosen by the
file's header, so never for a palette); everything else by Pillow.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from PIL import Image, ImageFile

from segtrain.data.formats.png_decode import read_png
from segtrain.data.formats.palette import BUILTIN_TABLES, VOID, ColorTable, is_table_file, pack_rgb, unpack_rgb
from segtrain.errors import SegtrainError
from segtrain.io_utils import open_image

if TYPE_CHECKING:  # type hints only: the config checks import this package
    from segtrain.config.schema import DataConfig

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, not a grey stripe
_IDENTITY = np.arange(256, dtype=np.uint8)
# Lossy encodings move class indices at edges (a VOC mask as JPEG: ~4 % of pixels change class,
# often to another valid class, so no value check can catch it). WebP is refused whole: telling
# its lossless variant apart needs the chunk headers, and a mask has no reason to be WebP.
_LOSSY_FORMATS = {"JPEG": "JPEG", "MPO": "JPEG", "WEBP": "WebP"}


def color_table(data_cfg: DataConfig) -> ColorTable:
    """The dataset's ``ColorTable``: ``data.classes`` (a built-in table, a colour-table file or a
    list of names, drawn with VOC's colour map), with ``data.colors`` / ``data.void_color`` on top."""
    key = (
        tuple(data_cfg.classes) if isinstance(data_cfg.classes, list) else data_cfg.classes,
        data_cfg.num_classes,
        None if data_cfg.colors is None else tuple(map(tuple, data_cfg.colors)),
        None if data_cfg.void_color is None else tuple(data_cfg.void_color),
    )
    return _color_table(*key)


@functools.lru_cache(maxsize=8)
def _color_table(classes, num_classes: int, colors, void_color) -> ColorTable:
    if isinstance(classes, tuple):
        table = ColorTable.generic(len(classes), classes)
    elif is_table_file(classes):
        table = ColorTable.load(classes, flag="data.classes")
    elif classes in BUILTIN_TABLES:
        table = ColorTable.builtin(classes)
    else:
        raise SegtrainError(
            f"data.classes: unknown built-in class table {classes!r}; use one of {', '.join(BUILTIN_TABLES)}, "
            "a colour-table file (.yaml/.json) or a list of names"
        )
    if len(table) != num_classes:
        raise SegtrainError(
            f"data.num_classes is {num_classes} but data.classes={classes} has "
            f"{len(table)} classes; set num_classes to {len(table)} or list your own classes"
        )
    if colors is not None:
        if len(colors) != num_classes or any(len(c) != 3 for c in colors):
            raise SegtrainError(
                f"data.colors: expected {num_classes} [r, g, b] colours, one per class, got {[list(c) for c in colors]}"
            )
        table = dataclasses.replace(table, colors=np.asarray(colors, dtype=np.uint8), source="data.colors")
    if void_color is not None:
        table = dataclasses.replace(table, void_color=void_color)
    return table


def class_names(data_cfg: DataConfig) -> list[str]:
    """Class names in index order, from the dataset's colour table."""
    return list(color_table(data_cfg).names)


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """Scale a high-bit-depth grey array to 0..255 by its type's range (16-bit PNGs, float TIFFs)."""
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind == "f":
        scale = 255.0 if array.max(initial=0) <= 1.0 else 1.0
        return np.clip(np.rint(array * scale), 0, 255).astype(np.uint8)
    return np.clip(np.rint(array.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)  # 16-bit values


_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}  # data.channels -> the Pillow mode an image is read in


def read_image(path: str | Path, channels: int = 3) -> np.ndarray:
    """Any image file -> uint8 (H, W, channels), whatever its mode (L, P, RGBA, CMYK, 16-bit, float).

    ``channels`` is ``data.channels``: 3 reads RGB, 1 grey (colour images by luminance, as
    Pillow's ``convert("L")``), 2 grey + alpha, 4 RGBA (opaque where the file has no alpha).
    """
    fast = read_png(path, channels)  # 8-bit RGB/grey PNGs without the GIL (png_decode.py)
    if fast is not None:
        return fast[..., None] if fast.ndim == 2 else fast
    return image_array(open_image(Path(path)), channels)


def image_array(im: Image.Image, channels: int = 3) -> np.ndarray:
    """A decoded Pillow image -> uint8 (H, W, channels), as ``read_image`` reads files (also for uploads)."""
    if channels not in _MODES:
        raise SegtrainError(f"data.channels: images have 1, 2, 3 or 4 channels, got {channels}")
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        grey = _to_uint8(np.asarray(im))
        if channels in (2, 4):  # opaque alpha
            return np.stack([grey] * (channels - 1) + [np.full_like(grey, 255)], axis=2)
        return np.repeat(grey[..., None], channels, axis=2)
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode != _MODES[channels]:
        im = im.convert(_MODES[channels])
    array = np.asarray(im, dtype=np.uint8)
    return array[..., None] if array.ndim == 2 else array


def class_lookup(class_values: Sequence[int], known: int) -> np.ndarray:
    """A format's raw value -> class table: ``class_values[i]`` becomes class ``i``, every other
    value below ``known`` (the dataset's unused or void ids) becomes 255, and values from ``known``
    up stay as they are, so ``read_mask`` names them as out of range instead of hiding them."""
    table = np.arange(256, dtype=np.uint8)
    table[:known] = VOID
    table[np.asarray(class_values)] = np.arange(len(class_values))
    return table


def lookup_table(data_cfg: DataConfig, base: np.ndarray | None = None) -> np.ndarray:
    """raw value -> class: the format's table ``base`` (identity without one), the dataset's void
    value -> 255, then ``data.label_map`` on top (its keys are raw values too)."""
    table = np.arange(256, dtype=np.uint8) if base is None else base.copy()
    table[data_cfg.ignore_index] = VOID
    for raw, value in data_cfg.label_map.items():
        if not (0 <= raw <= 255 and (0 <= value < data_cfg.num_classes or value == VOID)):
            raise SegtrainError(
                f"data.label_map: entry {raw}: {value} must map a value 0..255 to a class 0..{data_cfg.num_classes - 1} or 255"
            )
        table[raw] = value
    return table


def _describe_counts(values: np.ndarray, counts: np.ndarray, limit: int = 8) -> str:
    order = np.argsort(-counts, kind="stable")[:limit]
    text = ", ".join(f"{values[i]} ({counts[i]} px)" for i in order)
    return text + (f", ... {len(values) - limit} more" if len(values) > limit else "")


def _rgb_mask(path: Path, rgb: np.ndarray, data_cfg: DataConfig) -> np.ndarray:
    mask, unknown = color_table(data_cfg).to_index(rgb)
    if unknown.any():
        values, counts = np.unique(pack_rgb(rgb[unknown]), return_counts=True)
        names = np.array([unpack_rgb(v) for v in values])
        raise SegtrainError(
            f"{path}: RGB mask has {len(values)} colour(s) not in the dataset's colour table: "
            f"{_describe_counts(names, counts)}; fix the mask, set data.colors/data.void_color, "
            f"or convert it with `segtrain convert-labels`"
        )
    return mask


def _pillow_mask(path: Path, data_cfg: DataConfig) -> np.ndarray:
    """Any mask file Pillow reads -> its uint8 raw values (H, W)."""
    im = open_image(path)
    if im.format in _LOSSY_FORMATS:  # by content, whatever the file is called
        raise SegtrainError(
            f"{path}: mask is stored as {_LOSSY_FORMATS[im.format]}, a lossy format that changes class "
            f"indices at edges; save masks losslessly as PNG"
        )
    if im.mode in ("PA", "LA"):
        im = im.getchannel(0)
    if im.mode in ("P", "L"):
        return np.asarray(im)  # for 'P' the palette indices, never the colours
    if im.mode in ("1", "I", "I;16", "I;16B", "I;16L", "I;16N"):
        raw = np.asarray(im)
        if raw.max(initial=0) > 255 or raw.min(initial=0) < 0:
            raise SegtrainError(
                f"{path}: 16-bit mask has values outside 0..255 (max {raw.max()}); class masks must be 8-bit indices"
            )
        return raw.astype(np.uint8)
    if im.mode in ("RGB", "RGBA"):
        return _rgb_mask(path, np.asarray(im), data_cfg)
    raise SegtrainError(f"{path}: mask mode {im.mode!r} not supported; save masks as palette, grey or RGB PNGs")


def read_mask(path: str | Path, data_cfg: DataConfig, base: np.ndarray | None = None) -> np.ndarray:
    """A mask file -> uint8 (H, W) class indices with 255 = void, checked against ``data.num_classes``;
    ``base`` is the format's raw value -> class table (``lookup_table``)."""
    path = Path(path)
    raw = read_png(path, 1)  # an 8-bit grey PNG without the GIL (png_decode.py); None: Pillow reads it
    raw = np.ascontiguousarray(_pillow_mask(path, data_cfg) if raw is None else raw)
    table = lookup_table(data_cfg, base)
    # Values that map to neither a class nor void, found by one GIL-free table pass over the
    # pixels; only a bad mask pays for a histogram (to name the values and their pixel counts).
    invalid = ((table >= data_cfg.num_classes) & (table != VOID)).astype(np.uint8)
    if invalid.any() and cv2.countNonZero(cv2.LUT(raw, invalid)):
        counts = np.bincount(table[raw].ravel(), minlength=256)
        values = np.flatnonzero(counts[data_cfg.num_classes : VOID]) + data_cfg.num_classes
        raise SegtrainError(
            f"{path}: mask values {_describe_counts(values, counts[values])} are neither a class "
            f"(0..{data_cfg.num_classes - 1}) nor void 255; check data.num_classes, data.ignore_index and data.label_map"
        )
    if np.array_equal(table, _IDENTITY):
        return np.array(raw, dtype=np.uint8)
    return cv2.LUT(raw, table)


def read_pair(
    image_path: str | Path, mask_path: str | Path, data_cfg: DataConfig, base: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Decode an image (``data.channels`` channels) and its mask (through ``base``, see ``read_mask``)
    and check that they have the same size."""
    channels = 3 if data_cfg.channels is None else data_cfg.channels  # RGB unless data.channels says otherwise
    image, mask = read_image(image_path, channels), read_mask(mask_path, data_cfg, base)
    if image.shape[:2] != mask.shape:
        raise SegtrainError(
            f"{image_path} is {image.shape[1]}x{image.shape[0]} but its mask {mask_path} is "
            f"{mask.shape[1]}x{mask.shape[0]} (width x height); image and mask must have the same size"
        )
    return image, mask
