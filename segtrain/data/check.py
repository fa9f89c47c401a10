"""`segtrain check-dataset`: decode every sample of a split and report every problem.

A wrong mask found after a day of training costs the day; this scan finds it first. It
reads files only (the dataset folder is never written; the one exception is generating
the missing built-in sample dataset, which is ours), keeps going past bad files, and
prints counts and the per-class pixel histogram. Exit status 1 when anything is wrong.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import numpy as np

from segtrain.config import Config, load_config
from segtrain.data.decode import class_names, read_pair
from segtrain.data.palette import VOID
from segtrain.data.sources import scan_samples, split_name
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
        samples, report.problems = scan_samples(data_cfg, split)
    except SegtrainError as err:
        report.problems.append(str(err))
        return report
    report.num_samples = len(samples) + len(report.problems)
    for sample in samples:
        try:
            _, mask = read_pair(sample.image, sample.mask, data_cfg)
        except SegtrainError as err:
            report.problems.append(str(err))
            continue
        counts = np.bincount(mask.ravel(), minlength=256)
        report.class_pixels += counts[: data_cfg.num_classes]
        report.void_pixels += int(counts[VOID])
        report.num_ok += 1
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="experiment YAML whose data section to check")
    parser.add_argument("--split", action="append", help="split to scan (train, val or a split name); repeatable; default: train and val")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="config override, e.g. data.root=/data/voc")


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.overrides)
    failed = False
    for split in args.split or ["train", "val"]:
        report = check_dataset(config, split)
        print(report.format())
        failed |= not report.ok
    return 1 if failed else 0
