"""Running an importer over its input: plan every mask, draw each, write palette PNGs atomically,
and report every problem of the run in one error at the end (as convert-labels does for colours).

A file that uses a label the class list lacks is not written under ``unknown='error'``; the
error names each such label with its files and the closest class name, so one run shows all
there is to fix.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from segtrain.data.formats.palette import ColorTable
from segtrain.errors import SegtrainError
from segtrain.io_utils import PNG_COMPRESS_LEVEL, Progress, describe_findings, make_output_dir, remove_stale_temporaries, write_png
from segtrain.tools.importers import IMPORTERS
from segtrain.tools.importers.base import ImportOptions, Item, LabelNames, load_class_list



@dataclass
class ImportReport:
    """Totals of one import; ``unknown`` maps label name -> (shapes or pixels, files)."""

    kind: str
    table: ColorTable
    items: list[Item]
    dry_run: bool = False
    written: int = 0
    unknown: dict[str, tuple[int, set[str]]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def describe_unknown(self, names: LabelNames) -> str:
        """Each label with its first files and the closest class name, labels in most files first:
        'tv/monitor' in a.json, b.json (+2 more files) (did you mean 'tvmonitor'?); ..."""
        items = sorted(self.unknown.items(), key=lambda kv: (-len(kv[1][1]), kv[0]))
        return describe_findings([(repr(label), files, names.suggestion(label)) for label, (_, files) in items])


def _check_outputs(items: list[Item], input_path: Path, output_dir: Path) -> None:
    if input_path.is_dir() and (output_dir.resolve() == input_path.resolve() or input_path.resolve() in output_dir.resolve().parents):
        raise SegtrainError(f"OUTPUT_DIR {output_dir} is or lies inside INPUT {input_path}; choose a folder outside it, so no input is ever overwritten")
    claimed: dict[Path, str] = {}
    for item in items:
        if item.output in claimed:
            raise SegtrainError(f"{claimed[item.output]} and {item.source} would both be written to {output_dir / item.output}; rename one of them")
        claimed[item.output] = item.source


def import_annotations(
    kind: str,
    input_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    classes: str | os.PathLike | ColorTable | None = None,
    renames: dict[str, str] | None = None,
    unknown: str = "error",
    fill: str | None = None,
    options: ImportOptions | None = None,
    raw: bool = False,
    dry_run: bool = False,
    compress_level: int = PNG_COMPRESS_LEVEL,
    progress: bool | None = None,
) -> ImportReport:
    """Import ``kind`` annotations (labelme, coco, cvat) at ``input_path`` as palette PNGs in ``output_dir``.

    ``classes`` is the class list (see ``load_class_list``); CVAT defaults to its labelmap.
    ``fill`` overrides ``options.fill`` by class name or 'void'. Raises ``SegtrainError`` after
    drawing everything if any file failed or used an unknown label (under ``unknown='error'``).
    """
    if kind not in IMPORTERS:
        raise SegtrainError(f"importer {kind!r}: choose one of {', '.join(IMPORTERS)}")
    if unknown not in ("error", "void"):
        raise SegtrainError(f"--unknown {unknown}: choose 'error' or 'void'")
    importer, input_path, output_dir = IMPORTERS[kind], Path(input_path), Path(output_dir)
    if classes is None:
        if importer.classes is None:
            raise SegtrainError(f"--classes is missing: {kind} files name their labels, give the class list they map to (voc, a .yaml/.json/.txt file, or 'background,cat,dog')")
        table = importer.classes(input_path)
    else:
        table = classes if isinstance(classes, ColorTable) else load_class_list(classes)
    names = LabelNames(table, renames)
    options = options or ImportOptions()
    if fill is not None:
        options = dataclasses.replace(options, fill=names.fill_value(fill))
    if not 0 <= compress_level <= 9:
        raise SegtrainError(f"--compress-level {compress_level}: choose 0 (fastest) .. 9 (smallest)")
    items = importer.plan(input_path)
    _check_outputs(items, input_path, output_dir)
    if not dry_run:
        make_output_dir(output_dir, "OUTPUT_DIR")
        for folder in {(output_dir / item.output).parent for item in items}:
            if folder.is_dir():
                remove_stale_temporaries(folder)
    report = ImportReport(kind, table, items, dry_run=dry_run)
    palette = None if raw else table.pil_palette()
    start = time.perf_counter()
    with Progress(len(items), kind, unit="files", enabled=sys.stderr.isatty() if progress is None else progress) as bar:
        for item in items:
            drawn = importer.draw(item, names, options)
            bar.update()
            if drawn.error:
                report.errors.append(drawn.error)
                continue
            for label, count in drawn.unknown.items():
                total, files = report.unknown.get(label, (0, set()))
                report.unknown[label] = (total + count, files | {item.source})
            if dry_run or (drawn.unknown and unknown == "error"):
                continue
            write_png(output_dir / item.output, drawn.mask, palette=palette, compress_level=compress_level)
            report.written += 1
    report.seconds = time.perf_counter() - start
    if report.errors:
        more = f" (+{len(report.errors) - 1} more like it)" if len(report.errors) > 1 else ""
        raise SegtrainError(f"{len(report.errors)} of {len(items)} {kind} inputs could not be imported, the first: {report.errors[0]}{more}")
    if report.unknown and unknown == "error":
        files = len(set().union(*(f for _, f in report.unknown.values())))
        raise SegtrainError(
            f"{len(report.unknown)} label(s) not in the class list {table.source} ({files} of {len(items)} files"
            f"{'' if dry_run else ', those not written'}): {report.describe_unknown(names)}; "
            "add them to --classes, map them with --rename 'NAME=CLASS' (or NAME=void), or pass --unknown void to draw them as 255"
        )
    return report


def summary(report: ImportReport) -> str:
    """One line describing a finished import (and the labels drawn as void, if any)."""
    verb = "would write" if report.dry_run else "wrote"
    count = len(report.items) if report.dry_run else report.written
    line = f"{report.kind}: {verb} {count} of {len(report.items)} masks ({len(report.table)} classes of {report.table.source}) in {report.seconds:.1f} s"
    if report.unknown:
        labels = ", ".join(repr(label) for label in sorted(report.unknown))
        line += f"; drew unknown label(s) {labels} as void 255"
    return line
