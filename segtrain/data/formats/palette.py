"""Colour tables: class names and RGB colours, RGB <-> index lookups.

A palette PNG stores class indices; the colours are only for people. ``ColorTable`` is
the one type every part of segtrain draws with and maps RGB colour masks back through:
decoding, ``convert-labels``, ``predict`` and the OpenCV deployment example. A table is
a built-in dataset's (``BUILTIN_TABLES``: voc, camvid, cityscapes, ade20k, coco_stuff) or a
YAML/JSON file (docs/convert_labels.md)::

    classes:            # class name -> colour, in index order (first = 0)
      road: [128, 64, 128]
      car: '#400080'
    void: [0, 0, 0]     # optional: the colour that stands for 255

NumPy only (PyYAML for table files): no TensorFlow.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from pathlib import Path

import numpy as np
import yaml

from segtrain.data.formats.class_tables import (
    ADE20K_CLASSES,
    CITYSCAPES_CLASSES,
    CITYSCAPES_COLORS,
    CITYSCAPES_VOID_COLOR,
    COCO_STUFF_CLASSES,
)
from segtrain.errors import SegtrainError
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
    """(..., 3+) uint8 -> (...) uint32 with one integer per colour (r << 16 | g << 8 | b); extra channels are ignored."""
    rgb = np.asarray(rgb).astype(np.uint8, copy=False)
    packed = np.left_shift(rgb[..., 0], 16, dtype=np.uint32)
    packed |= np.left_shift(rgb[..., 1], 8, dtype=np.uint32)
    packed |= rgb[..., 2]
    return packed


def unpack_rgb(key: int) -> str:
    """A ``pack_rgb`` key as users read it: '(r,g,b)'."""
    key = int(key)
    return f"({key >> 16},{(key >> 8) & 255},{key & 255})"


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
        packed = pack_rgb(rgb)
        mask = np.take(self._table, packed)
        unknown = mask == VOID  # no class colour maps to 255: the void colour or unknown
        if self._void_key is not None and unknown.any():
            np.logical_and(unknown, packed != self._void_key, out=unknown)
        return mask, unknown


Color = tuple[int, int, int]


def _distinct_colors(n: int) -> np.ndarray:
    """VOC's colour map from index 1: distinct colours for datasets without an official palette,
    none of them the void black."""
    return voc_colormap(n + 1)[1:]


# data.classes name -> (class names, colours, void colour)
_BUILTIN: dict[str, tuple[tuple[str, ...], np.ndarray, Color]] = {
    "voc": (VOC_CLASSES, VOC_COLORS, VOC_VOID_COLOR),
    "camvid": (CAMVID_CLASSES, CAMVID_COLORS, CAMVID_VOID_COLOR),
    "cityscapes": (CITYSCAPES_CLASSES, CITYSCAPES_COLORS, CITYSCAPES_VOID_COLOR),
    "ade20k": (ADE20K_CLASSES, _distinct_colors(len(ADE20K_CLASSES)), (0, 0, 0)),
    "coco_stuff": (COCO_STUFF_CLASSES, _distinct_colors(len(COCO_STUFF_CLASSES)), (0, 0, 0)),
}
BUILTIN_TABLES = tuple(_BUILTIN)
TABLE_FILE_SUFFIXES = (".yaml", ".yml", ".json")


@dataclasses.dataclass(frozen=True, eq=False)
class ColorTable:
    """Class names and colours (index = position), plus the colour that stands for void (255).

    ``source`` names where the table came from ('voc', 'camvid', a file or a config key),
    for messages. ``void_color`` None means the table has no void colour (an RGB mask
    then cannot say "void" and an RGB drawing shows void as black).
    """

    names: tuple[str, ...]
    colors: np.ndarray  # (n, 3) uint8
    void_color: Color | None = None
    source: str = "colour table"

    def __post_init__(self) -> None:
        colors = np.asarray(self.colors, dtype=np.uint8).reshape(-1, 3)
        if len(colors) != len(self.names):
            raise SegtrainError(f"{self.source}: {len(self.names)} class names but {len(colors)} colours")
        if len(colors) > VOID:
            raise SegtrainError(f"{self.source}: {len(colors)} classes, but at most {VOID} fit uint8 masks with void {VOID}")
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        object.__setattr__(self, "colors", colors)
        if self.void_color is not None:
            object.__setattr__(self, "void_color", tuple(int(v) for v in self.void_color))

    def __len__(self) -> int:
        return len(self.names)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def builtin(cls, name: str) -> "ColorTable":
        """The table of a built-in dataset: voc (21 classes), camvid (11), cityscapes (19), ade20k (150), coco_stuff (171)."""
        if name in _BUILTIN:
            names, colors, void = _BUILTIN[name]
            return cls(names, colors, void, name)
        raise SegtrainError(f"colour table {name!r}: not one of the built-in tables {', '.join(BUILTIN_TABLES)}")

    @classmethod
    def generic(cls, num_classes: int, names: tuple[str, ...] | list[str] | None = None) -> "ColorTable":
        """VOC's colour map for ``num_classes`` classes (names '0', '1', ... unless given): for data without a table."""
        names = tuple(names) if names is not None else tuple(str(i) for i in range(num_classes))
        return cls(names, voc_colormap(num_classes), VOC_VOID_COLOR, "VOC colour map")

    @classmethod
    def load(cls, spec: str | os.PathLike, flag: str = "--palette") -> "ColorTable":
        """A built-in table's name or a YAML/JSON colour-table file; ``flag`` names the option in errors."""
        if str(spec) in BUILTIN_TABLES:
            return cls.builtin(str(spec))
        path = Path(spec)
        if not path.is_file():
            raise SegtrainError(f"{flag} {spec}: not a built-in table ({', '.join(BUILTIN_TABLES)}) and not an existing YAML/JSON colour-table file")
        return cls.from_file(path)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "ColorTable":
        """Read a colour-table file (format in the module docstring); every problem names the file."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
            if path.suffix.lower() == ".json":
                raw = json.loads(text)
            else:
                raw = yaml.safe_load(text)
        except Exception as err:  # noqa: BLE001 - any read or parse failure is the user's file
            raise SegtrainError(f"{path}: cannot parse colour table ({type(err).__name__}: {err}); fix the syntax") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("classes"), dict) or not raw["classes"]:
            raise SegtrainError(f"{path}: a colour table needs 'classes:' mapping class name -> [r, g, b] (and optional 'void:')")
        extra = sorted(set(raw) - {"classes", "void"})
        if extra:
            raise SegtrainError(f"{path}: unknown key(s) {extra}; a colour table has only 'classes' and 'void'")
        names = tuple(str(n) for n in raw["classes"])
        colors = [parse_color(c, f"{path}: classes.{n}") for n, c in raw["classes"].items()]
        void = None if raw.get("void") is None else parse_color(raw["void"], f"{path}: void")
        if len(colors) > VOID:
            raise SegtrainError(f"{path}: {len(colors)} classes, but at most {VOID} fit uint8 masks with void 255")
        seen: dict[Color, str] = {}
        for name, color in zip(names, colors):
            if color in seen:
                raise SegtrainError(f"{path}: classes {seen[color]!r} and {name!r} share colour {color}; give each class its own colour")
            seen[color] = name
        if void in seen:
            raise SegtrainError(f"{path}: void colour {void} is also the colour of class {seen[void]!r}; change one of them")
        return cls(names, np.asarray(colors, np.uint8).reshape(-1, 3), void, str(path))

    # ------------------------------------------------------------------ use
    def pil_palette(self) -> list[int]:
        """The flat 768-entry palette of a palette PNG drawn with this table."""
        return pil_palette(self.colors, self.void_color)

    def colorize(self, mask: np.ndarray) -> np.ndarray:
        """(H, W) class indices -> (H, W, 3) uint8 RGB; void and values beyond the table draw in the void colour."""
        return index_to_rgb(mask, self.colors, self.void_color if self.void_color is not None else (0, 0, 0))

    def to_index(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """RGB mask -> ``(mask, unknown)`` as ``rgb_to_index`` documents."""
        return rgb_to_index(rgb, self.colors, self.void_color)


def parse_color(value: object, where: str) -> Color:
    """[r, g, b] with integers 0..255, or '#rrggbb' -> (r, g, b); anything else names ``where``."""
    if isinstance(value, str) and value.startswith("#") and len(value) == 7:
        try:
            return tuple(int(value[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]
        except ValueError:
            pass
    if (
        isinstance(value, (list, tuple))
        and len(value) == 3
        and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in value)
    ):
        return tuple(value)  # type: ignore[return-value]
    raise SegtrainError(f"{where}: colour {value!r} is not [r, g, b] with integers 0..255 or '#rrggbb'")


def is_table_file(spec: str) -> bool:
    """Whether ``spec`` names a colour-table file (by suffix) rather than a built-in table."""
    return Path(str(spec)).suffix.lower() in TABLE_FILE_SUFFIXES
