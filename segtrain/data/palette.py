"""Colour tables: class names and RGB colours of the built-in datasets, RGB <-> index lookups.

A palette PNG stores class indices; the colours are only for people. These tables are
what segtrain draws with and what an RGB colour mask is mapped back through.
"""

from __future__ import annotations

import functools

import numpy as np

from segtrain.labels import VOID  # noqa: F401  (re-exported: data code imports it from here)

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)

CAMVID_CLASSES = (
    "Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
    "Pedestrian", "Bicyclist",
)

CAMVID_COLORS = np.array(
    [
        [128, 128, 128], [128, 0, 0], [192, 192, 128], [128, 64, 128], [60, 40, 222],
        [128, 128, 0], [192, 128, 128], [64, 64, 128], [64, 0, 128], [64, 64, 0], [0, 128, 192],
    ],
    dtype=np.uint8,
)
CAMVID_VOID_COLOR = (0, 0, 0)


def voc_colormap(n: int = 256) -> np.ndarray:
    """The standard PASCAL VOC colour map (bit-interleaved), shape (n, 3) uint8."""
    cmap = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


VOC_COLORS = voc_colormap(21)
VOC_VOID_COLOR = tuple(int(v) for v in voc_colormap()[255])  # (224, 224, 192)


def pil_palette(colors: np.ndarray, void_color: tuple[int, int, int] | None = None) -> list[int]:
    """A flat 768-entry palette for ``Image.putpalette``: class colours, then VOC colours for the rest."""
    table = voc_colormap(256).copy()
    table[: len(colors)] = colors
    if void_color is not None:
        table[VOID] = void_color
    return table.reshape(-1).tolist()


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 -> (...) int32 with one integer per colour (r << 16 | g << 8 | b)."""
    rgb = rgb.astype(np.int32, copy=False)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def index_to_rgb(mask: np.ndarray, colors: np.ndarray, void_color: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """Colourise a class-index mask with one table lookup (values beyond the table draw as void)."""
    table = np.tile(np.asarray(void_color, dtype=np.uint8), (256, 1))
    table[: len(colors)] = colors
    return table[mask]


def rgb_to_index(
    rgb: np.ndarray, colors: np.ndarray, void_color: tuple[int, int, int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Map an RGB mask to class indices through the colour table.

    Returns ``(mask, unknown)`` where ``mask`` is uint8 (255 for the void colour and for
    unknown colours) and ``unknown`` is a bool array marking pixels whose colour is in
    neither the table nor the void colour, so callers can refuse or report them. The
    lookup table of each colour table is built once per process (see ``RgbLookup``).
    """
    colors = np.ascontiguousarray(colors, dtype=np.uint8).reshape(-1, 3)
    void = None if void_color is None else tuple(int(v) for v in void_color)
    return _cached_lookup(colors.tobytes(), void)(rgb)


@functools.lru_cache(maxsize=8)
def _cached_lookup(colors: bytes, void_color: tuple[int, int, int] | None) -> "RgbLookup":
    return RgbLookup(np.frombuffer(colors, dtype=np.uint8).reshape(-1, 3), void_color)


def builtin_table(name: str) -> tuple[tuple[str, ...], np.ndarray, tuple[int, int, int]]:
    """(class names, colours (n, 3) uint8, void colour) of a built-in dataset: 'voc' or 'camvid'."""
    if name == "voc":
        return VOC_CLASSES, VOC_COLORS, VOC_VOID_COLOR
    if name == "camvid":
        return CAMVID_CLASSES, CAMVID_COLORS, CAMVID_VOID_COLOR
    raise KeyError(name)


class RgbLookup:
    """RGB -> class index for one colour table: a direct 2**24-entry table.

    Building it costs ~16 MiB and a few milliseconds once; each image then costs one
    packing pass and one gather (several times faster than a sorted search over the
    packed colours), which matters when decoding or converting whole datasets.
    """

    def __init__(self, colors: np.ndarray, void_color: tuple[int, int, int] | None = None):
        colors = np.asarray(colors, dtype=np.uint8).reshape(-1, 3)
        if len(colors) > VOID:
            raise ValueError(f"at most {VOID} classes fit a uint8 mask with void {VOID}, got {len(colors)}")
        self._table = np.full(1 << 24, VOID, dtype=np.uint8)
        self._void_key = None if void_color is None else int(pack_rgb(np.asarray(void_color, dtype=np.uint8)))
        # A colour listed twice keeps its first class.
        keys = pack_rgb(colors)
        self._table[keys[::-1]] = np.arange(len(keys), dtype=np.uint8)[::-1]

    def __call__(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(..., 3+) uint8 -> ``(mask uint8, unknown bool)``, as ``rgb_to_index`` documents."""
        rgb = np.asarray(rgb).astype(np.uint8, copy=False)
        packed = np.left_shift(rgb[..., 0], 16, dtype=np.uint32)
        packed |= np.left_shift(rgb[..., 1], 8, dtype=np.uint32)
        packed |= rgb[..., 2]
        mask = np.take(self._table, packed)
        unknown = mask == VOID  # no class colour maps to 255: the void colour or unknown
        if self._void_key is not None and unknown.any():
            np.logical_and(unknown, packed != self._void_key, out=unknown)
        return mask, unknown
