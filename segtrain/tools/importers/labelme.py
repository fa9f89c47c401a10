"""labelme JSON -> class-index masks, drawn the way labelme's own ``shapes_to_label`` draws them.

Each shape is rasterised with Pillow's ``ImageDraw`` exactly as labelme's ``shape_to_mask``
does (polygons and rectangles filled with their outline, circles as ellipses around the centre
through the second point, lines and line strips ``line_width`` wide, points as discs of
``point_size``), so a mask here has the pixel set labelme2voc.py would write. Shapes are drawn
in file order, a later shape over an earlier one, as labelme does; pixels no shape covers get
``--fill``. The image size is the JSON's imageHeight / imageWidth (or, in files that lack
them, the header of the image at imagePath).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from segtrain.data.formats.palette import VOID
from segtrain.errors import SegtrainError
from segtrain.tools.importers.base import Drawn, Importer, ImportOptions, Item, LabelNames

Points = list[tuple[float, float]]


class ShapeError(ValueError):
    """A shape that cannot be drawn (wrong point count, bad mask data); named with its file by the caller."""


def _polygon(draw: ImageDraw.ImageDraw, xy: Points, value: int, options: ImportOptions) -> None:
    draw.polygon(xy, outline=value, fill=value)


def _rectangle(draw: ImageDraw.ImageDraw, xy: Points, value: int, options: ImportOptions) -> None:
    (x0, y0), (x1, y1) = xy  # any two opposite corners
    draw.rectangle(((min(x0, x1), min(y0, y1)), (max(x0, x1), max(y0, y1))), outline=value, fill=value)


def _circle(draw: ImageDraw.ImageDraw, xy: Points, value: int, options: ImportOptions) -> None:
    (cx, cy), (px, py) = xy  # centre, a point on the circle
    d = math.hypot(cx - px, cy - py)
    draw.ellipse(((cx - d, cy - d), (cx + d, cy + d)), outline=value, fill=value)


def _line(draw: ImageDraw.ImageDraw, xy: Points, value: int, options: ImportOptions) -> None:
    draw.line(xy, fill=value, width=options.line_width)


def _linestrip(draw: ImageDraw.ImageDraw, xy: Points, value: int, options: ImportOptions) -> None:
    draw.line(xy, fill=value, width=options.line_width, joint="curve")  # round joints, as labelme


def _point(draw: ImageDraw.ImageDraw, xy: Points, value: int, options: ImportOptions) -> None:
    (cx, cy), r = xy[0], options.point_size
    draw.ellipse(((cx - r, cy - r), (cx + r, cy + r)), outline=value, fill=value)


# shape_type -> (how many points: exact count, or minimum as a negative number, drawer)
SHAPES: dict[str | None, tuple[int, Callable[[ImageDraw.ImageDraw, Points, int, ImportOptions], None]]] = {
    None: (-3, _polygon),  # files from labelme before shape_type existed
    "polygon": (-3, _polygon),
    "rectangle": (2, _rectangle),
    "oriented_rectangle": (4, _polygon),
    "circle": (2, _circle),
    "line": (2, _line),
    "linestrip": (-2, _linestrip),
    "point": (1, _point),
}


def _paste_mask(canvas: Image.Image, shape: dict, xy: Points, value: int) -> None:
    """shape_type 'mask': a base64 PNG patch whose top-left corner is the first point (rounded as labelme does)."""
    if len(xy) != 2 or not isinstance(shape.get("mask"), str):
        raise ShapeError("a mask shape needs two corner points and base64 PNG 'mask' data")
    try:
        with Image.open(io.BytesIO(base64.b64decode(shape["mask"], validate=True))) as patch:
            bits = np.asarray(patch.convert("L")) > 0
    except (binascii.Error, OSError, ValueError) as err:
        raise ShapeError(f"its 'mask' is not base64 PNG data ({err})") from None
    x0, y0 = (int(v) for v in np.round(np.asarray(xy[0], dtype=np.float64)))
    canvas.paste(value, (x0, y0, x0 + bits.shape[1], y0 + bits.shape[0]), Image.fromarray(bits.astype(np.uint8) * 255))


def _points(shape: dict) -> Points:
    points = shape.get("points")
    try:
        xy = [(float(x), float(y)) for x, y in points]
        if all(math.isfinite(v) for p in xy for v in p):
            return xy
    except (TypeError, ValueError):
        pass
    raise ShapeError(f"'points' must be a list of [x, y] finite numbers, got {str(points)[:60]}")


def image_size(data: dict, path: Path) -> tuple[int, int]:
    """(height, width) from imageHeight / imageWidth, else from the header of the image at imagePath."""
    height, width = data.get("imageHeight"), data.get("imageWidth")
    if isinstance(height, int) and isinstance(width, int) and height > 0 and width > 0:
        return height, width
    image_path = data.get("imagePath")
    if isinstance(image_path, str) and (path.parent / image_path).is_file():
        with Image.open(path.parent / image_path) as im:  # the header only
            return im.height, im.width
    raise SegtrainError(f"{path}: no imageHeight/imageWidth and no image at imagePath {image_path!r}; the mask size is unknown, save the file again with labelme")


def draw_shapes(shapes: list, size: tuple[int, int], names: LabelNames, options: ImportOptions) -> tuple[np.ndarray, dict[str, int]]:
    """labelme shapes -> (H, W) uint8 class indices, later shapes over earlier; unknown labels drawn as void and counted."""
    canvas = Image.new("L", (size[1], size[0]), options.fill)
    draw = ImageDraw.Draw(canvas)
    unknown: dict[str, int] = {}
    for number, shape in enumerate(shapes):
        label = shape.get("label") if isinstance(shape, dict) else None
        try:
            if not isinstance(label, str):
                raise ShapeError("it is not an object with a 'label' string")
            shape_type = shape.get("shape_type")
            xy = _points(shape)
            value = names.index(label)
            if value is None:
                unknown[label] = unknown.get(label, 0) + 1
                value = VOID
            if shape_type == "mask":
                _paste_mask(canvas, shape, xy, value)
                continue
            if shape_type not in SHAPES:
                raise ShapeError(f"shape_type {shape_type!r} is not one of {', '.join(str(s) for s in SHAPES if s)}, mask")
            count, drawer = SHAPES[shape_type]
            if (count > 0 and len(xy) != count) or (count < 0 and len(xy) < -count):
                need = f"{count}" if count > 0 else f"at least {-count}"
                raise ShapeError(f"a {shape_type or 'polygon'} needs {need} points, it has {len(xy)}")
            drawer(draw, xy, value, options)
        except (ShapeError, ValueError, TypeError) as err:  # Pillow refuses what it cannot draw (NaN points, ...)
            raise ShapeError(f"shape {number} (label {label!r}): {err}") from None
    return np.asarray(canvas), unknown


def plan(input_dir: Path) -> list[Item]:
    """Every labelme .json under ``input_dir`` (hidden files and folders skipped), written as the same relative name .png."""
    if not input_dir.is_dir():
        raise SegtrainError(f"INPUT {input_dir}: not a folder; give the folder holding the labelme .json files")
    files = []
    for folder, dirs, names in os.walk(input_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files += [Path(folder, n) for n in names if n.lower().endswith(".json") and not n.startswith(".")]
    if not files:
        raise SegtrainError(f"INPUT {input_dir}: no .json files found; give the folder labelme saved its annotations in")
    return [Item(p.relative_to(input_dir).as_posix(), p.relative_to(input_dir).with_suffix(".png"), p) for p in sorted(files)]


def draw(item: Item, names: LabelNames, options: ImportOptions) -> Drawn:
    path: Path = item.payload
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return Drawn(item, error=f"{path}: cannot read labelme JSON ({type(err).__name__}: {err}); fix or remove the file")
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        return Drawn(item, error=f"{path}: not a labelme file (no 'shapes' list); remove it from INPUT or fix it")
    try:
        mask, unknown = draw_shapes(data["shapes"], image_size(data, path), names, options)
    except ShapeError as err:
        return Drawn(item, error=f"{path}: {err}; fix the shape in labelme")
    except SegtrainError as err:
        return Drawn(item, error=str(err))
    return Drawn(item, mask, unknown)


IMPORTER = Importer(reads="a folder of labelme .json files", plan=plan, draw=draw, options=("line_width", "point_size"))
