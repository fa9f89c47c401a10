"""COCO JSON (instances or stuff) -> one class-index mask per image, decoded by pycocotools.

Polygons, uncompressed and compressed RLE go through ``pycocotools.mask`` (the COCO API's
own ``annToRLE`` rules), so a pixel is in an annotation exactly when COCO says it is.
Overlaps: with ``overlap='area'`` (the default) annotations are drawn largest first, so a
smaller object on top of a larger one (a cup on a table, a person on a field of grass) stays
visible; equal areas keep file order. With ``overlap='order'`` the file order decides, a later
annotation over an earlier one. ``iscrowd`` regions are drawn as their category
(``crowd='class'``) or as void 255 (``crowd='void'``), in the same order. Categories map to
classes by name; pixels no annotation covers get ``--fill``. Masks are named after the
image's file name: ``val2017/000000000139.jpg`` -> ``000000000139.png``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from segtrain.data.formats.palette import VOID
from segtrain.errors import SegtrainError
from segtrain.tools.importers.base import Drawn, Importer, ImportOptions, Item, LabelNames

def _load(path: Path) -> dict:
    if not path.is_file():
        raise SegtrainError(f"INPUT {path}: not a file; give the COCO annotation .json (e.g. annotations/instances_val2017.json)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SegtrainError(f"{path}: cannot read COCO JSON ({type(err).__name__}: {err}); fix the file") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations", "categories")):
        raise SegtrainError(f"{path}: not a COCO annotation file (needs 'images', 'annotations' and 'categories' lists)")
    return data


def plan(path: Path) -> list[Item]:
    """One item per image of the file (images without annotations too), carrying its annotations."""
    _mask_api()  # a missing pycocotools is said before anything is read
    data = _load(path)
    try:
        categories = {c["id"]: str(c["name"]) for c in data["categories"]}
        images = {im["id"]: im for im in data["images"]}
        by_image: dict[object, list[dict]] = {image_id: [] for image_id in images}
        for ann in data["annotations"]:
            if ann["image_id"] not in images:
                raise SegtrainError(f"{path}: annotation {ann.get('id')} names image_id {ann['image_id']}, which is not in 'images'; fix the file")
            if ann["category_id"] not in categories:
                raise SegtrainError(f"{path}: annotation {ann.get('id')} names category_id {ann['category_id']}, which is not in 'categories'; fix the file")
            by_image[ann["image_id"]].append(ann)
        items = []
        for image_id, image in images.items():
            name = str(image["file_name"])
            size = (int(image["height"]), int(image["width"]))
            items.append(Item(name, Path(Path(name).name).with_suffix(".png"), (path, size, by_image[image_id], categories)))
    except (KeyError, TypeError, ValueError) as err:
        raise SegtrainError(f"{path}: malformed COCO entry ({type(err).__name__}: {err}); every image needs id, file_name, height, width and every annotation id, image_id, category_id, segmentation") from None
    if not items:
        raise SegtrainError(f"{path}: no images listed; nothing to import")
    return items


def _mask_api():
    """pycocotools.mask, or one line saying how to install it."""
    try:
        from pycocotools import mask  # optional extra: pip install segtrain[coco]
    except ImportError:
        raise SegtrainError('convert-labels coco needs pycocotools: pip install "segtrain[coco]" (or pip install pycocotools)') from None
    return mask


def to_rle(segmentation: object, height: int, width: int) -> dict | None:
    """An annotation's segmentation as one RLE (None when it has no polygon of 3+ points), as the COCO API reads it."""
    mask_api = _mask_api()
    if isinstance(segmentation, list):  # polygons [[x0, y0, x1, y1, ...], ...]
        if any(not isinstance(p, list) or len(p) % 2 for p in segmentation):
            raise ValueError("a polygon must be a flat list [x0, y0, x1, y1, ...] with an even number of values")
        # Under 3 points a polygon has no area (and 2 points would be read as a box by pycocotools).
        polygons = [[float(v) for v in p] for p in segmentation if len(p) >= 6]
        return mask_api.merge(mask_api.frPyObjects(polygons, height, width)) if polygons else None
    if isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        if [int(v) for v in segmentation["size"]] != [height, width]:
            raise ValueError(f"RLE size {segmentation['size']} is not the image's [height, width] [{height}, {width}]")
        counts = segmentation["counts"]
        if isinstance(counts, list):  # uncompressed RLE
            return mask_api.frPyObjects(segmentation, height, width)
        return {"size": [height, width], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    raise ValueError("segmentation is neither a list of polygons nor an RLE {'size', 'counts'}")


def draw(item: Item, names: LabelNames, options: ImportOptions) -> Drawn:
    mask_api = _mask_api()
    path, (height, width), annotations, categories = item.payload
    drawn = []  # (area, value, rle) in file order
    unknown: dict[str, int] = {}
    for ann in annotations:
        name = categories[ann["category_id"]]
        value = names.index(name)
        if value is None:
            unknown[name] = unknown.get(name, 0) + 1
            value = VOID
        if ann.get("iscrowd") and options.crowd == "void":
            value = VOID
        try:
            rle = to_rle(ann.get("segmentation"), height, width)
        except (ValueError, TypeError) as err:
            return Drawn(item, error=f"{path}: annotation {ann.get('id')} of {item.source}: {err}; fix the segmentation")
        if rle is not None:
            drawn.append((int(mask_api.area(rle)), value, rle))
    if options.overlap == "area":
        drawn.sort(key=lambda entry: -entry[0])  # stable: equal areas keep file order
    mask = np.full((height, width), options.fill, dtype=np.uint8)
    for _, value, rle in drawn:
        mask[mask_api.decode(rle).astype(bool)] = value
    return Drawn(item, mask, unknown)


IMPORTER = Importer(reads="a COCO annotation .json file", plan=plan, draw=draw, options=("overlap", "crowd"))
