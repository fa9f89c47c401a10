"""`segtrain check-dataset`: decode every sample of a split and report every problem.

A wrong mask found after a day of training costs the day; this scan finds it first. It
reads files only (the dataset folder is never written; the one exception is generating
the missing built-in sample dataset, which is ours), keeps going past bad files (for NIfTI
cases also files of one case on different grids; for series, bad change points), and
prints counts and the per-class pixel histogram. It also reports images that belong to two
splits (a test id in the training list scores memorised images). Exit status 1 when
anything is wrong.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import numpy as np

from segtrain.config import Config, load_config
from segtrain.data.formats import Sample, get_format
from segtrain.data.formats.decode import class_names
from segtrain.data.formats.palette import VOID
from segtrain.data.formats.splits import scan_samples, split_name
from segtrain.errors import SegtrainError


@dataclass
class CheckReport:
    """What a scan of one split found: problems (one line each) and the class pixel counts."""

    split: str
    num_samples: int = 0
    num_ok: int = 0
    problems: list[str] = field(default_factory=list)
    class_pixels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    void_pixels: int = 0
    class_names: list[str] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list, repr=False)  # every listed sample with both files

    @property
    def ok(self) -> bool:
        return not self.problems

    def format(self) -> str:
        lines = [f"split '{self.split}': {self.num_samples} samples, {self.num_ok} ok, {len(self.problems)} problem(s)"]
        lines += [f"  problem: {p}" for p in self.problems]
        total = int(self.class_pixels.sum()) + self.void_pixels
        if total:
            width = max(len(n) for n in self.class_names + ["void (255)"])
            lines.append("  class pixels:")
            rows = list(zip(range(len(self.class_names)), self.class_names, self.class_pixels.tolist()))
            for index, name, count in rows + [(VOID, "void (255)", self.void_pixels)]:
                lines.append(f"    {index:>3} {name:<{width}} {count:>12} {100.0 * count / total:6.2f} %")
        return "\n".join(lines)


def check_dataset(config: Config, split: str) -> CheckReport:
    """Scan ``split`` (``train``/``val`` or a split name) and collect every problem instead of stopping at one."""
    data_cfg = config.data
    names = class_names(data_cfg)
    report = CheckReport(split=split_name(data_cfg, split), class_names=names)
    report.class_pixels = np.zeros(data_cfg.num_classes, dtype=np.int64)
    try:
        report.samples, report.problems = scan_samples(data_cfg, split)
    except SegtrainError as err:
        report.problems.append(str(err))
        return report
    report.num_samples = len(report.samples) + len(report.problems)
    read = get_format(data_cfg.format).read  # the whole sample, with every check of its format
    for sample in report.samples:
        try:
            mask = read(sample, data_cfg).label
        except SegtrainError as err:
            report.problems.append(str(err))
            continue
        counts = np.bincount(mask.ravel(), minlength=256)
        report.class_pixels += counts[: data_cfg.num_classes]
        report.void_pixels += int(counts[VOID])
        report.num_ok += 1
    return report


def _overlap_problem(split: str, mine: list[Sample], other: str, theirs: list[Sample]) -> str | None:
    """One line if the two splits list the same image file (VOC ids, CamVid paths, folder files)."""
    their_images = {s.image.resolve() for s in theirs}
    shared = [s.name for s in mine if s.image.resolve() in their_images]
    if not shared:
        return None
    examples = ", ".join(shared[:5]) + (", ..." if len(shared) > 5 else "")
    return (f"split '{split}': {len(shared)} of {len(mine)} samples are also in split '{other}' ({examples}); "
            f"remove them from one of the two lists, or scores on '{split}' include images seen in '{other}'")


def check_splits(config: Config, splits: list[str]) -> list[CheckReport]:
    """``check_dataset`` for each split, plus a problem line for each split sharing images with another.

    Each checked split is compared with the checked splits before it and with the configured
    train and val splits (listed, not decoded, when they are not among those checked).
    """
    reports: list[CheckReport] = []
    for split in splits:
        if split_name(config.data, split) not in [r.split for r in reports]:
            reports.append(check_dataset(config, split))
    listed = {r.split: r.samples for r in reports}
    for split in ("train", "val"):
        name = split_name(config.data, split)
        if name not in listed:
            try:
                listed[name] = scan_samples(config.data, split)[0]
            except SegtrainError:
                pass  # a missing reference split is not the checked splits' problem
    names = list(listed)
    for i, report in enumerate(reports):
        for other in names[:i] + names[len(reports):]:
            problem = _overlap_problem(report.split, report.samples, other, listed[other])
            if problem:
                report.problems.append(problem)
    return reports


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="experiment YAML whose data section to check")
    parser.add_argument("--split", action="append", help="split to scan (train, val or a split name); repeatable; default: train and val")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="config override, e.g. data.root=/data/voc")


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.overrides)
    reports = check_splits(config, args.split or ["train", "val"])
    for report in reports:
        print(report.format())
    problems = [p for report in reports for p in report.problems]
    if problems:
        more = f" (and {len(problems) - 1} more, listed above)" if len(problems) > 1 else ""
        raise SegtrainError(f"{problems[0]}{more}")
    return 0
