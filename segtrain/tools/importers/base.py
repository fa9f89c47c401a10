"""What every annotation importer shares: the class list, label names -> class indices, and
the shape of one importer's work (plan the outputs, then draw one mask per item).

An annotation tool names classes; a segtrain mask stores indices. The mapping goes through
the dataset's class list by name and nothing else, so a label the list does not know is
reported (file and label), never given a guessed index.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segtrain.data.formats.palette import BUILTIN_TABLES, VOID, ColorTable, is_table_file
from segtrain.errors import SegtrainError

IGNORE_LABEL = "__ignore__"  # labelme's name for "do not train on this" (labelme2voc writes it as 255)
VOID_TARGET = "void"  # --rename NAME=void draws NAME as 255


def load_class_list(spec: str | os.PathLike) -> ColorTable:
    """``--classes``: a built-in table (voc, camvid, ...), a colour-table file (.yaml/.json), a
    names file (one per line, labelme's labels.txt: ``__ignore__`` lines skipped) or 'a,b,c'."""
    text = str(spec)
    if text in BUILTIN_TABLES:
        return ColorTable.builtin(text)
    path = Path(text)
    if is_table_file(text):
        return ColorTable.load(path, flag="--classes")
    if path.is_file():
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise SegtrainError(f"--classes {spec}: cannot read the names file ({err}); give a UTF-8 text file, one class name per line") from None
        names = [line.strip() for line in lines if line.strip() and line.strip() != IGNORE_LABEL]
        source = str(path)
    elif "," in text:
        names, source = [n.strip() for n in text.split(",")], "the --classes list"
    else:
        raise SegtrainError(
            f"--classes {spec}: not a built-in table ({', '.join(BUILTIN_TABLES)}), not an existing file "
            "(a .yaml/.json colour table or a .txt with one name per line) and not a comma-separated list of names"
        )
    if not names or not all(names):
        raise SegtrainError(f"--classes {spec}: empty class name; list at least one name, without empty entries")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise SegtrainError(f"--classes {spec}: class name(s) {repeated} listed twice; give each class once")
    # No colours of its own: drawn with VOC's colour map, as data.classes: [names] is.
    return dataclasses.replace(ColorTable.generic(len(names), names), source=source)


def parse_renames(items: Iterable[str]) -> dict[str, str]:
    """['potted plant=pottedplant', 'other=void'] -> {annotation name: class name or 'void'}."""
    renames: dict[str, str] = {}
    for item in items:
        source, sep, target = str(item).partition("=")
        if not sep or not source.strip() or not target.strip():
            raise SegtrainError(f"--rename {item}: expected ANNOTATION_NAME=CLASS_NAME (or =void), e.g. --rename 'potted plant=pottedplant'")
        renames[source.strip()] = target.strip()
    return renames


class LabelNames:
    """Annotation label name -> class index through the class list: ``index(name)`` is the class,
    ``VOID`` for void names (``__ignore__``, ``--rename X=void``), or None for a name it does not know."""

    def __init__(self, table: ColorTable, renames: dict[str, str] | None = None):
        self.table = table
        self._index = {name: i for i, name in enumerate(table.names)}
        self._index.setdefault(IGNORE_LABEL, VOID)
        for source, target in (renames or {}).items():
            if target == VOID_TARGET:
                if VOID_TARGET in table.names:
                    raise SegtrainError(f"--rename {source}={target}: {table.source} has a class named 'void', so 'void' is ambiguous; rename that class in the class list")
                self._index[source] = VOID
            elif target in self._index:
                self._index[source] = self._index[target]
            else:
                raise SegtrainError(f"--rename {source}={target}: {target!r} is not a class of {table.source}{_did_you_mean(target, table.names)}")

    def index(self, name: str) -> int | None:
        return self._index.get(name)

    def fill_value(self, fill: str | None) -> int:
        """``--fill``: what no annotation covers; a class name, 'void', or (None) the first class."""
        if fill is None:
            return 0
        if fill == VOID_TARGET:
            return VOID
        value = self._index.get(fill)
        if value is None:
            raise SegtrainError(f"--fill {fill}: not a class of {self.table.source} and not 'void'{_did_you_mean(fill, self.table.names)}")
        return value

    def suggestion(self, name: str) -> str:
        return _did_you_mean(name, self.table.names)


def _did_you_mean(name: str, names: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(names), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


OVERLAP_RULES = ("area", "order")
CROWD_RULES = ("class", "void")


@dataclass(frozen=True)
class ImportOptions:
    """Drawing options; each importer reads the ones that apply to its shapes."""

    fill: int = 0  # class index (or VOID) of pixels no annotation covers
    line_width: int = 10  # labelme line / linestrip width in pixels (labelme's own default)
    point_size: int = 5  # labelme point radius in pixels (labelme's own default)
    overlap: str = "area"  # coco: 'area' (larger first, smaller on top) or 'order' (file order, later on top)
    crowd: str = "class"  # coco iscrowd regions: 'class' (drawn as their category) or 'void'

    def __post_init__(self) -> None:
        if self.overlap not in OVERLAP_RULES or self.crowd not in CROWD_RULES:
            raise SegtrainError(f"--overlap {self.overlap} / --crowd {self.crowd}: choose --overlap {'|'.join(OVERLAP_RULES)} and --crowd {'|'.join(CROWD_RULES)}")
        if self.line_width < 1 or self.point_size < 0:
            raise SegtrainError(f"--line-width {self.line_width} / --point-size {self.point_size}: give a width >= 1 and a size >= 0 pixels")


@dataclass(frozen=True)
class Item:
    """One mask to write: ``source`` names it in messages, ``output`` is relative to OUTPUT_DIR."""

    source: str
    output: Path
    payload: Any = None


@dataclass
class Drawn:
    """One drawn mask; ``unknown`` maps label names the class list lacks -> how many shapes used them."""

    item: Item
    mask: np.ndarray | None = None
    unknown: dict[str, int] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class Importer:
    """One annotation tool: ``plan`` lists the masks an input yields (reading nothing it need not),
    ``draw`` makes one; ``classes`` is the tool's own class list where it has one (CVAT's labelmap)."""

    reads: str
    plan: Callable[[Path], list[Item]]
    draw: Callable[[Item, LabelNames, ImportOptions], Drawn]
    classes: Callable[[Path], ColorTable] | None = None
    options: tuple[str, ...] = ()  # the importer-specific CLI options it reads
