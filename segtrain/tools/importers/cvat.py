"""A CVAT "Segmentation mask 1.1" export -> palette PNGs with class indices.

The export is a folder with ``labelmap.txt`` (``# label:color_rgb:parts:actions``, one
``name:r,g,b:parts:actions`` line per label, in label order; the datumaro format CVAT
writes) and ``SegmentationClass/*.png`` colour masks. The labelmap is the colour table:
each mask colour becomes its label, the label becomes a class by name through ``--classes``
(default: the labelmap itself, in its order). A colour the labelmap does not list is an
error naming the file: CVAT writes only labelmap colours, so it means the mask changed after export. Without labelmap.txt the export
uses the VOC labels and colours, as CVAT documents. Palette masks are read by their colours;
single-channel masks are labelmap indices.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from segtrain.data.formats.palette import VOC_CLASSES, VOC_COLORS, VOID, ColorTable, voc_colormap
from segtrain.errors import SegtrainError
from segtrain.io_utils import is_image_file, open_image
from segtrain.tools.importers.base import Drawn, Importer, ImportOptions, Item, LabelNames

LABELMAP = "labelmap.txt"
MASKS = "SegmentationClass"


def parse_labelmap(path: Path) -> ColorTable:
    """labelmap.txt -> the export's colour table (names in file order); every bad line is named."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise SegtrainError(f"{path}: cannot read the labelmap ({err}); export the task again from CVAT") from None
    names, colors = [], []
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(":")
        if len(fields) != 4:
            raise SegtrainError(f"{path}:{number}: {line!r} has {len(fields)} ':'-separated fields, a labelmap line has 4 (label:r,g,b:parts:actions)")
        name, color = fields[0], fields[1]
        if name in names:
            raise SegtrainError(f"{path}:{number}: label {name!r} is listed twice; keep one line per label")
        try:
            rgb = tuple(int(v) for v in color.split(",")) if color else None
            if rgb is not None and (len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb)):
                raise ValueError
        except ValueError:
            raise SegtrainError(f"{path}:{number}: colour {color!r} of label {name!r} is not r,g,b with integers 0..255") from None
        names.append(name)
        colors.append(rgb)
    if not names:
        raise SegtrainError(f"{path}: lists no labels; export the task again from CVAT")
    if all(c is None for c in colors):  # no colours at all: the VOC colour map by position, as datumaro does
        colors = [tuple(int(v) for v in c) for c in voc_colormap(len(names))]
    missing = [n for n, c in zip(names, colors) if c is None]
    if missing:
        raise SegtrainError(f"{path}: label(s) {missing} have no colour while others do; give each an r,g,b colour")
    return ColorTable(tuple(names), np.asarray(colors, dtype=np.uint8), None, str(path))


def labelmap_table(export: Path) -> ColorTable:
    """The export's own class list: its labelmap.txt, or the VOC labels when it has none."""
    path = export / LABELMAP
    if path.is_file():
        return parse_labelmap(path)
    return ColorTable(VOC_CLASSES, VOC_COLORS, None, f"VOC labels ({export} has no {LABELMAP})")


def plan(export: Path) -> list[Item]:
    """Every mask under SegmentationClass/, written as the same relative name .png."""
    masks = export / MASKS
    if not masks.is_dir():
        raise SegtrainError(f"INPUT {export}: no {MASKS}/ folder; give the unzipped 'Segmentation mask 1.1' export")
    source = labelmap_table(export)
    files = []
    for folder, dirs, found in os.walk(masks):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files += [Path(folder, n) for n in found if not n.startswith(".") and is_image_file(Path(n))]
    if not files:
        raise SegtrainError(f"INPUT {masks}: no mask images found")
    return [Item(p.relative_to(masks).as_posix(), p.relative_to(masks).with_suffix(".png"), (p, source)) for p in sorted(files)]


def draw(item: Item, names: LabelNames, options: ImportOptions) -> Drawn:
    path, source = item.payload
    try:
        image = open_image(path)
    except SegtrainError as err:
        return Drawn(item, error=str(err))
    if image.mode in ("L", "I", "I;16"):  # a single-channel mask holds labelmap positions
        labels = np.asarray(image).astype(np.int64)
        bad = labels >= len(source)
        what = f"values {sorted(np.unique(labels[bad]).tolist())[:5]} beyond the {len(source)} labels"
    else:
        rgb = np.asarray(image.convert("RGB"))
        labels, bad = source.to_index(rgb)
        what = "colours " + ", ".join(f"({r},{g},{b})" for r, g, b in np.unique(rgb[bad], axis=0)[:5].tolist())
    if bad.any():
        return Drawn(item, error=f"{path}: {int(bad.sum())} pixels have {what} of {source.source}; the mask changed after export "
                                 "(resized or saved lossy?): export it again, or fix it with convert-labels rgb-to-index --unknown void")
    # labelmap position -> class index by name; a label the class list lacks draws as void and is reported.
    lut = np.full(256, VOID, dtype=np.uint8)
    present = np.bincount(labels.ravel(), minlength=len(source))
    unknown: dict[str, int] = {}
    for position, name in enumerate(source.names):
        value = names.index(name)
        lut[position] = VOID if value is None else value
        if value is None and present[position]:
            unknown[name] = int(present[position])
    mask = lut[labels]
    return Drawn(item, mask, unknown)


IMPORTER = Importer(reads="an unzipped CVAT 'Segmentation mask 1.1' export folder", plan=plan, draw=draw, classes=labelmap_table)
