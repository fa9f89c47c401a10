"""`segtrain convert-labels`: label PNGs between RGB colour, palette and raw index forms, and
annotation import (labelme, COCO, CVAT; ``segtrain.tools.importers``) into palette PNGs.

Converting labels is where they get silently corrupted (JPEG-shifted colours, a void
colour forgotten, a class off by one), so every colour or value the table cannot
represent is reported, never guessed; every output is written atomically, so an
interrupted run leaves only complete PNGs and can simply be run again.

Also runnable as ``python -m segtrain.tools.convert_labels``; ``convert_labels`` and
``Converter`` are the Python API. Imports only numpy and Pillow (no TensorFlow).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from segtrain.data.formats import palette as pal
from segtrain.data.formats.palette import ColorTable
from segtrain.errors import SegtrainError
from segtrain.io_utils import (
    IMAGE_EXTENSIONS,
    PNG_COMPRESS_LEVEL,
    Progress,
    describe_findings,
    is_image_file,
    make_output_dir,
    open_image,
    remove_stale_temporaries,
    write_png,
)
from segtrain.tools.importers import IMPORTERS
from segtrain.tools.importers.base import CROWD_RULES, OVERLAP_RULES, ImportOptions, parse_renames
from segtrain.tools.importers.run import import_annotations
from segtrain.tools.importers.run import summary as import_summary

MODES = ("rgb-to-index", "palette-to-raw", "index-to-palette", "index-to-rgb", "remap")
UNKNOWN_POLICIES = ("error", "void")


# --------------------------------------------------------------------------- value maps


def parse_value_map(items: Iterable[str]) -> dict[int, int]:
    """['11:255', '0:3'] -> {11: 255, 0: 3}; values are uint8 labels."""
    mapping: dict[int, int] = {}
    for item in items:
        parts = str(item).split(":")
        try:
            src, dst = (int(p) for p in parts)
            if not (0 <= src <= 255 and 0 <= dst <= 255):
                raise ValueError
        except ValueError:
            raise SegtrainError(f"--map {item}: expected SRC:DST with integers 0..255, e.g. --map 11:255") from None
        if src in mapping and mapping[src] != dst:
            raise SegtrainError(f"--map {item}: value {src} is already mapped to {mapping[src]}; give each value once")
        mapping[src] = dst
    return mapping


def value_lut(value_map: dict[int, int] | None = None, reduce_zero_label: bool = False) -> np.ndarray:
    """The 256-entry label table: reduce-zero-label (0->255, v->v-1, 255 stays) then --map overrides.

    Both are defined on the values as found (the input values, or for rgb-to-index the
    class indices the colours look up to), so ``--map`` entries always win.
    """
    lut = np.arange(256, dtype=np.uint8)
    if reduce_zero_label:
        lut[0] = pal.VOID
        lut[1:255] = np.arange(0, 254, dtype=np.uint8)
    for src, dst in (value_map or {}).items():
        lut[src] = dst
    return lut


# --------------------------------------------------------------------------- per-image conversion


@dataclass
class FileResult:
    """What happened to one file; ``unknown`` maps colour key (r<<16|g<<8|b) or value -> pixels."""

    src: Path
    dst: Path
    written: bool = False
    unknown: dict[int, int] = field(default_factory=dict)
    error: str | None = None


class Converter:
    """One conversion (mode, table, value map, unknown policy) applied image by image.

    ``convert_image`` is pure (PIL image in, PIL image out); ``convert_file`` adds the
    atomic write. Picklable: the 16 MiB colour lookup is built lazily in each process.
    """

    def __init__(
        self,
        mode: str,
        palette: str | os.PathLike | ColorTable = "voc",
        *,
        raw: bool = False,
        unknown: str = "error",
        value_map: dict[int, int] | None = None,
        reduce_zero_label: bool = False,
        compress_level: int = PNG_COMPRESS_LEVEL,
    ):
        if mode not in MODES:
            raise SegtrainError(f"mode {mode!r}: choose one of {', '.join(MODES)}")
        if unknown not in UNKNOWN_POLICIES:
            raise SegtrainError(f"--unknown {unknown}: choose 'error' or 'void'")
        if raw and mode in ("index-to-palette", "index-to-rgb"):
            raise SegtrainError(f"--raw does not apply to {mode}, which writes a {mode.split('-')[-1]} PNG; drop --raw or use remap --raw")
        if not 0 <= compress_level <= 9:
            raise SegtrainError(f"--compress-level {compress_level}: choose 0 (fastest) .. 9 (smallest)")
        self.mode = mode
        self.table = palette if isinstance(palette, ColorTable) else ColorTable.load(palette)
        self.raw = raw or mode == "palette-to-raw"
        self.unknown = unknown
        self.lut = value_lut(value_map, reduce_zero_label)
        self.identity = bool(np.all(self.lut == np.arange(256)))
        self.compress_level = compress_level
        self.palette = self.table.pil_palette()
        self._lookup: pal.RgbLookup | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_lookup": None}

    def _valid_values(self) -> np.ndarray:
        """Which label values the output form can represent (index-to-* modes)."""
        valid = np.zeros(256, dtype=bool)
        valid[: len(self.table.colors)] = True
        # A palette PNG keeps 255 whatever its colour; RGB can show void only with a void colour.
        valid[pal.VOID] = self.mode == "index-to-palette" or self.table.void_color is not None
        return valid

    def convert_image(self, image: Image.Image, name: str = "image") -> tuple[Image.Image, dict[int, int]]:
        """Convert one opened label image; returns the output image and its unknown colours/values.

        With ``unknown='error'`` the returned image still has the unknown pixels at 255,
        the caller decides not to write it.
        """
        if self.mode == "rgb-to-index":
            return self._rgb_to_index(image, name)
        values = _index_array(image, name, self.mode)
        if self.mode in ("palette-to-raw", "remap"):
            out = self.lut[values]
            if self.raw:
                return Image.fromarray(out), {}
            result = Image.fromarray(out)
            if image.mode == "P":
                result.putpalette(image.getpalette())
            return result, {}
        # index-to-palette / index-to-rgb: look up once per value, count unknowns via a histogram.
        lut = self.lut
        bad = ~self._valid_values()[lut]
        unknown: dict[int, int] = {}
        if bad.any():
            hist = np.bincount(values.ravel(), minlength=256)
            unknown = {int(v): int(hist[v]) for v in np.flatnonzero(bad & (hist > 0))}
            if unknown:
                lut = np.where(bad, np.uint8(pal.VOID), lut).astype(np.uint8)
        out = lut[values]
        if self.mode == "index-to-rgb":
            return Image.fromarray(self.table.colorize(out)), unknown
        result = Image.fromarray(out)
        result.putpalette(self.palette)
        return result, unknown

    def _rgb_to_index(self, image: Image.Image, name: str) -> tuple[Image.Image, dict[int, int]]:
        if image.mode in ("L", "I", "I;16", "1", "LA"):
            raise SegtrainError(f"{name}: is a single-channel ({image.mode}) image, not an RGB colour mask; use palette-to-raw, remap or index-to-*")
        if image.mode not in ("RGB", "RGBA"):
            image = image.convert("RGB")  # palette / other colour images: their colours are the labels here
        rgb = np.asarray(image)
        if self._lookup is None:
            self._lookup = pal.RgbLookup(self.table.colors, self.table.void_color)
        out, unknown_mask = self._lookup(rgb)
        if not self.identity:
            out = np.take(self.lut, out)
        unknown: dict[int, int] = {}
        if unknown_mask.any():
            colours = rgb[unknown_mask][:, :3]
            keys, counts = np.unique(pal.pack_rgb(colours), return_counts=True)
            unknown = dict(zip(keys.tolist(), counts.tolist()))
            out[unknown_mask] = pal.VOID  # unknown means void, whatever --map says about 255
        result = Image.fromarray(out)
        if not self.raw:
            result.putpalette(self.palette)
        return result, unknown

    def convert_file(self, src: Path, dst: Path, *, dry_run: bool = False) -> FileResult:
        """Read ``src``, convert, write ``dst`` atomically unless unknowns forbid it or ``dry_run``."""
        result = FileResult(Path(src), Path(dst))
        try:
            with open_image(src) as image:
                out, result.unknown = self.convert_image(image, str(src))
        except SegtrainError as err:
            result.error = str(err)
            return result
        if dry_run or (result.unknown and self.unknown == "error"):
            return result
        write_png(Path(dst), out, compress_level=self.compress_level)
        result.written = True
        return result


def _index_array(image: Image.Image, name: str, mode: str) -> np.ndarray:
    """The label values of an index image: palette indices for 'P' (never its colours)."""
    if image.mode in ("P", "L"):
        return np.asarray(image)
    if image.mode in ("I", "I;16", "I;16B", "I;16L"):
        values = np.asarray(image)
        if values.size and (values.min() < 0 or values.max() > 255):
            raise SegtrainError(f"{name}: label values {values.min()}..{values.max()} do not fit uint8; remap them below 256 first")
        return values.astype(np.uint8)
    hint = "use rgb-to-index for colour masks" if image.mode in ("RGB", "RGBA") else "save it as a palette (P) or greyscale (L) PNG"
    raise SegtrainError(f"{name}: has image mode {image.mode}, but {mode} needs a palette (P) or single-channel (L) index PNG; {hint}")


# --------------------------------------------------------------------------- folders


def plan_files(input_dir: Path, output_dir: Path, *, in_place: bool = False) -> list[tuple[Path, Path]]:
    """(input, output) pairs: every label image under ``input_dir``, same relative name, '.png'.

    Hidden files and folders are skipped. Refuses anything that would overwrite an input
    (unless ``in_place``) or feed outputs back in as inputs on the next run.
    """
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    if not input_dir.is_dir():
        raise SegtrainError(f"INPUT_DIR {input_dir}: not a folder; give the folder holding the label images")
    src_root, dst_root = input_dir.resolve(), output_dir.resolve()
    if src_root == dst_root and not in_place:
        raise SegtrainError(f"OUTPUT_DIR {output_dir} is INPUT_DIR; choose another folder, or pass --in-place to overwrite the labels")
    if src_root != dst_root and src_root in dst_root.parents:
        raise SegtrainError(f"OUTPUT_DIR {output_dir} lies inside INPUT_DIR {input_dir}, so a re-run would read the outputs as inputs; choose a folder outside it")
    sources = []
    for folder, dirs, files in os.walk(input_dir):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        sources += [Path(folder, f) for f in files if not f.startswith(".") and is_image_file(Path(f))]
    if not sources:
        raise SegtrainError(f"INPUT_DIR {input_dir}: no label images ({', '.join(IMAGE_EXTENSIONS)}) found; check the path")
    sources.sort()
    # Outputs can land on inputs only if the output tree contains the input tree.
    overlap = dst_root == src_root or dst_root in src_root.parents
    resolved_sources = {p.resolve() for p in sources} if overlap else set()
    pairs: list[tuple[Path, Path]] = []
    claimed: dict[Path, Path] = {}
    for src in sources:
        dst = output_dir / src.relative_to(input_dir).with_suffix(".png")
        if dst in claimed:
            raise SegtrainError(f"{claimed[dst]} and {src} would both be written to {dst}; rename one of them")
        if overlap and not in_place and dst.resolve() in resolved_sources:
            raise SegtrainError(f"{dst} would overwrite an input file; choose an OUTPUT_DIR outside INPUT_DIR")
        claimed[dst] = src
        pairs.append((src, dst))
    return pairs


def _remove_stale_temporaries(pairs: Sequence[tuple[Path, Path]]) -> int:
    """Delete temporaries that a killed earlier run left next to its outputs."""
    return sum(len(remove_stale_temporaries(folder)) for folder in {dst.parent for _, dst in pairs} if folder.is_dir())


# --------------------------------------------------------------------------- running


_WORKER: Converter | None = None
_WORKER_DRY_RUN = False


def _init_worker(converter: Converter, dry_run: bool) -> None:
    global _WORKER, _WORKER_DRY_RUN
    _WORKER, _WORKER_DRY_RUN = converter, dry_run


def _work(pair: tuple[Path, Path]) -> FileResult:
    assert _WORKER is not None
    return _WORKER.convert_file(*pair, dry_run=_WORKER_DRY_RUN)


def _results(converter: Converter, pairs: list[tuple[Path, Path]], jobs: int, dry_run: bool) -> Iterator[FileResult]:
    if jobs <= 1 or len(pairs) <= 1:
        for src, dst in pairs:
            yield converter.convert_file(src, dst, dry_run=dry_run)
        return
    # spawn: safe even when the caller has threads (e.g. TensorFlow) running; workers import
    # only this module. Killing the parent kills nothing half-written: renames are atomic.
    context = multiprocessing.get_context("spawn")
    chunk = max(1, min(16, len(pairs) // (jobs * 8)))
    with context.Pool(jobs, initializer=_init_worker, initargs=(converter, dry_run)) as pool:
        yield from pool.imap_unordered(_work, pairs, chunksize=chunk)


def describe_key(key: int, colors: bool) -> str:
    """An unknown key as users see it: '(r,g,b)' for colours, 'value v' for label values."""
    return pal.unpack_rgb(key) if colors else f"value {key}"


@dataclass
class ConversionReport:
    """Totals of one run. ``unknown`` maps colour key / value -> (pixels, names of the files)."""

    mode: str
    table: str
    pairs: list[tuple[Path, Path]]
    dry_run: bool = False
    written: int = 0
    unknown: dict[int, tuple[int, set[str]]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def files(self) -> int:
        return len(self.pairs)

    @property
    def keys_are_colors(self) -> bool:
        return self.mode == "rgb-to-index"

    @property
    def unknown_pixels(self) -> int:
        return sum(pixels for pixels, _ in self.unknown.values())

    @property
    def files_with_unknown(self) -> int:
        return len(set().union(*(names for _, names in self.unknown.values())))

    def add(self, result: FileResult, root: Path) -> None:
        self.written += result.written
        if result.error:
            self.errors.append(result.error)
        name = result.src.relative_to(root).as_posix() if result.unknown else ""
        for key, count in result.unknown.items():
            pixels, names = self.unknown.get(key, (0, set()))
            self.unknown[key] = (pixels + count, names | {name})

    def describe_unknown(self) -> str:
        """'(r,g,b) N px in a.png, b.png (+k more files); ...', most pixels first."""
        items = sorted(self.unknown.items(), key=lambda kv: (-kv[1][0], kv[0]))
        return describe_findings([(f"{describe_key(key, self.keys_are_colors)} {pixels} px", names, "")
                                  for key, (pixels, names) in items])


def convert_labels(
    mode: str,
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    *,
    palette: str | os.PathLike | ColorTable = "voc",
    raw: bool = False,
    unknown: str = "error",
    jobs: int = 1,
    value_map: dict[int, int] | None = None,
    reduce_zero_label: bool = False,
    in_place: bool = False,
    dry_run: bool = False,
    compress_level: int = PNG_COMPRESS_LEVEL,
    progress: bool | None = None,
) -> ConversionReport:
    """Convert every label image under ``input_dir`` into ``output_dir`` (see docs/convert_labels.md).

    All files are processed before any error is raised, so one run reports every
    unknown colour/value (with pixel counts and the first files) and every unreadable
    file; files with unknowns are not written under ``unknown='error'``. Outputs are
    always rewritten (atomically), so re-running after an interruption completes the job.
    """
    converter = Converter(
        mode, palette, raw=raw, unknown=unknown, value_map=value_map,
        reduce_zero_label=reduce_zero_label, compress_level=compress_level,
    )
    if in_place:
        if output_dir is not None and Path(output_dir).resolve() != Path(input_dir).resolve():
            raise SegtrainError(f"--in-place writes into INPUT_DIR {input_dir}; drop OUTPUT_DIR {output_dir} or --in-place")
        changes_values = bool(value_map) or reduce_zero_label or mode == "remap"
        if changes_values or mode == "index-to-rgb" or (mode == "rgb-to-index" and raw):
            raise SegtrainError(
                "--in-place is allowed only for conversions that give the same result when run again on their own "
                "output (rgb-to-index to palette, palette-to-raw, index-to-palette, without --map/--reduce-zero-label), "
                "so an interrupted run can be re-run; write to another OUTPUT_DIR instead"
            )
        output_dir = input_dir
    if output_dir is None:
        raise SegtrainError("OUTPUT_DIR is missing; give an output folder (or --in-place for safe conversions)")
    jobs = (os.cpu_count() or 1) if jobs == 0 else jobs
    if jobs < 0:
        raise SegtrainError(f"--jobs {jobs}: give a positive number of processes (0 = one per CPU)")
    if not dry_run:
        make_output_dir(output_dir, "OUTPUT_DIR")
    pairs = plan_files(Path(input_dir), Path(output_dir), in_place=in_place)
    if not dry_run:
        _remove_stale_temporaries(pairs)
    report = ConversionReport(mode, converter.table.source, pairs, dry_run=dry_run)
    bar = Progress(len(pairs), mode, unit="files", enabled=sys.stderr.isatty() if progress is None else progress)
    start = time.perf_counter()
    root = Path(input_dir)
    try:
        for result in _results(converter, pairs, jobs, dry_run):
            report.add(result, root)
            bar.update()
    finally:
        bar.close()
    report.seconds = time.perf_counter() - start
    if report.errors:
        errors = sorted(report.errors)
        more = f" (+{len(errors) - 1} more like it)" if len(errors) > 1 else ""
        raise SegtrainError(f"{len(errors)} of {report.files} files could not be converted, the first: {errors[0]}{more}")
    if report.unknown and unknown == "error":
        what = ("colour" if report.keys_are_colors else "value") + ("s" if len(report.unknown) > 1 else "")
        fix = (
            "add them to a colour-table file (--palette FILE), fix the masks, or pass --unknown void to map them to 255"
            if report.keys_are_colors
            else "map them with --map VALUE:TARGET (e.g. --map 11:255), or pass --unknown void to map them to 255"
        )
        raise SegtrainError(
            f"{len(report.unknown)} {what} not in the {report.table} table ({report.files_with_unknown} of "
            f"{report.files} files{'' if dry_run else ', those not written'}): {report.describe_unknown()}; {fix}"
        )
    return report


def summary(report: ConversionReport) -> str:
    """One human line (plus the voided colours/values, if any) describing a finished run."""
    verb = "would write" if report.dry_run else "wrote"
    line = f"{report.mode}: {verb} {report.files if report.dry_run else report.written} of {report.files} files in {report.seconds:.1f} s"
    if report.unknown:
        what = ("colour" if report.keys_are_colors else "value") + ("s" if len(report.unknown) > 1 else "")
        line += (
            f"; mapped {report.unknown_pixels} pixels of {len(report.unknown)} unknown {what} in "
            f"{report.files_with_unknown} files to void 255: {report.describe_unknown()}"
        )
    return line


# --------------------------------------------------------------------------- CLI


# Options of the conversion modes and of the importers (default: not given), so that an option
# the chosen mode would ignore is an error instead of silently doing nothing.
_CONVERSION_ONLY = {"palette": None, "value_map": [], "reduce_zero_label": False, "in_place": False, "jobs": 1}
_FLAGS = {"value_map": "--map", "renames": "--rename"}  # options whose dest is not their flag
_IMPORT_ONLY = {"classes": None, "renames": [], "fill": None, "line_width": None, "point_size": None, "overlap": None, "crowd": None}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    importers = "; ".join(f"{name}: {importer.reads}" for name, importer in IMPORTERS.items())
    parser.add_argument("mode", choices=MODES + tuple(IMPORTERS), metavar="MODE", help=f"one of: {', '.join(MODES + tuple(IMPORTERS))}")
    parser.add_argument("input_dir", metavar="INPUT", help=f"folder of label images, searched recursively (importers: {importers})")
    parser.add_argument("output_dir", metavar="OUTPUT_DIR", nargs="?", help="output folder (same relative names, .png); omit with --in-place")
    parser.add_argument("--palette", default=None, help="colour table: voc (default), camvid, or a YAML/JSON file")
    parser.add_argument("--raw", action="store_true", help="write single-channel index PNGs instead of palette PNGs")
    parser.add_argument("--unknown", choices=UNKNOWN_POLICIES, default="error", help="colour/value/label not in the table: error (default) or map to void 255")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (0 = one per CPU)")
    parser.add_argument("--map", dest="value_map", nargs="+", action="extend", default=[], metavar="SRC:DST", help="remap label values, e.g. --map 11:255")
    parser.add_argument("--reduce-zero-label", action="store_true", help="0 -> 255 and v -> v-1 (ADE20K style), before --map overrides")
    parser.add_argument("--in-place", action="store_true", help="overwrite the inputs (only for conversions that are safe to re-run)")
    parser.add_argument("--dry-run", action="store_true", help="read and check everything, print what would be written, write nothing")
    parser.add_argument("--compress-level", type=int, default=PNG_COMPRESS_LEVEL, help="PNG zlib level 0..9 (default 6)")
    progress = parser.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_true", default=None, help="always draw the progress bar")
    progress.add_argument("--no-progress", dest="progress", action="store_false", help="never draw it (default: only on a terminal)")
    imports = parser.add_argument_group("annotation import (labelme, coco, cvat)")
    imports.add_argument("--classes", help="class list the label names map to: voc, camvid, ..., a .yaml/.json colour table, a .txt (one name per line) or 'a,b,c' (cvat default: its labelmap)")
    imports.add_argument("--rename", dest="renames", action="append", default=[], metavar="NAME=CLASS", help="map an annotation label to a class name (or to void), e.g. 'potted plant=pottedplant'")
    imports.add_argument("--fill", help="class name (or void) of pixels no annotation covers (default: the first class)")
    imports.add_argument("--line-width", type=int, help="labelme: width of lines and line strips in pixels (default 10, as labelme)")
    imports.add_argument("--point-size", type=int, help="labelme: radius of points in pixels (default 5, as labelme)")
    imports.add_argument("--overlap", choices=OVERLAP_RULES, help="coco: area (default: larger first, smaller on top) or order (later annotation on top)")
    imports.add_argument("--crowd", choices=CROWD_RULES, help="coco: iscrowd regions drawn as their class (default) or as void")


def _refuse_unused(args: argparse.Namespace) -> None:
    """An option the chosen mode does not read is a mistake worth one line, not a silent no-op."""
    importer = IMPORTERS.get(args.mode)
    if importer is None:
        unused = [k for k, default in _IMPORT_ONLY.items() if getattr(args, k) != default]
    else:
        unused = [k for k, default in _CONVERSION_ONLY.items() if getattr(args, k) != default]
        unused += [k for k in ("line_width", "point_size", "overlap", "crowd") if getattr(args, k) is not None and k not in importer.options]
    if unused:
        flag = _FLAGS.get(unused[0], "--" + unused[0].replace("_", "-"))
        raise SegtrainError(f"{flag}: does not apply to convert-labels {args.mode}; drop it (see docs/convert_labels.md for the options of each mode)")


def _run_import(args: argparse.Namespace) -> int:
    if args.output_dir is None:
        raise SegtrainError("OUTPUT_DIR is missing; give the folder the masks are written to")
    defaults = ImportOptions()
    options = ImportOptions(
        line_width=defaults.line_width if args.line_width is None else args.line_width,
        point_size=defaults.point_size if args.point_size is None else args.point_size,
        overlap=args.overlap or defaults.overlap,
        crowd=args.crowd or defaults.crowd,
    )
    report = import_annotations(
        args.mode, args.input_dir, args.output_dir, classes=args.classes, renames=parse_renames(args.renames),
        unknown=args.unknown, fill=args.fill, options=options, raw=args.raw, dry_run=args.dry_run,
        compress_level=args.compress_level, progress=args.progress,
    )
    if args.dry_run:
        for item in report.items:
            print(f"{item.source} -> {Path(args.output_dir) / item.output}")
    print(import_summary(report), file=sys.stderr)
    return 0


def run(args: argparse.Namespace) -> int:
    _refuse_unused(args)
    if args.mode in IMPORTERS:
        return _run_import(args)
    report = convert_labels(
        args.mode, args.input_dir, args.output_dir,
        palette=args.palette or "voc", raw=args.raw, unknown=args.unknown, jobs=args.jobs,
        value_map=parse_value_map(args.value_map), reduce_zero_label=args.reduce_zero_label,
        in_place=args.in_place, dry_run=args.dry_run, compress_level=args.compress_level,
        progress=args.progress,
    )
    if args.dry_run:
        for src, dst in report.pairs:
            print(f"{src} -> {dst}")
    print(summary(report), file=sys.stderr)
    return 0


if __name__ == "__main__":
    from segtrain.cli import main

    sys.exit(main(["convert-labels", *sys.argv[1:]]))
