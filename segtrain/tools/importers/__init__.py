"""Annotation importers for `segtrain convert-labels`: one module per tool, this table names them.

A new tool is one module exposing ``IMPORTER`` (``base.Importer``: plan the masks, draw one)
plus one line here; ``run.import_annotations`` does the rest (class list, writing, report).
"""

from segtrain.tools.importers import coco, cvat, labelme
from segtrain.tools.importers.base import Importer

IMPORTERS: dict[str, Importer] = {
    "labelme": labelme.IMPORTER,
    "coco": coco.IMPORTER,
    "cvat": cvat.IMPORTER,
}
