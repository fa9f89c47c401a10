"""`segtrain split-sequences LIST... [--holdout SEQ ... --output DIR]`: hold out whole sequences.

Frames of one video sequence look alike, so a validation split that shares a sequence with the
training split rewards memorising that street (CamVid's val split is sequence 0016E5, as are
204 of its 367 training frames; its test split is mostly Seq05VD, which no training frame
comes from). This prints how many frames each sequence has in each list file (CamVid's
``image_path mask_path`` lines; the sequence is the image name up to its first ``_``, as in
``0016E5_07959.png``), and with ``--holdout`` writes ``<name>_train.txt`` (every other
sequence of all the lists) and ``<name>_val.txt`` (the held-out ones), lines unchanged, for
``data.train_split`` / ``data.val_split`` (configs/camvid/cpu_best_holdout_0006R0.yaml).
"""

from __future__ import annotations

import argparse
import collections
import re
from pathlib import Path

from segtrain.data.formats.base import read_lines
from segtrain.errors import SegtrainError

DEFAULT_PATTERN = r"^([^_]+)_"


def sequence_of(line: str, pattern: re.Pattern) -> str:
    """The sequence of a list line: ``pattern``'s first group in the image file's name."""
    name = Path(line.split()[0]).name
    found = pattern.search(name)
    if found is None:
        raise SegtrainError(f"{name}: no sequence in the name (--pattern {pattern.pattern!r} does not match); pass a --pattern that does")
    return found.group(1)


def split_by_sequence(lines: list[str], holdout: set[str], pattern: re.Pattern) -> tuple[list[str], list[str]]:
    """(lines of the other sequences, lines of the held-out ones), in list order."""
    train, val = [], []
    for line in lines:
        (val if sequence_of(line, pattern) in holdout else train).append(line)
    return train, val


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("lists", nargs="+", type=Path, help="list files, e.g. ROOT/train.txt ROOT/val.txt")
    parser.add_argument("--holdout", nargs="+", default=[], metavar="SEQ", help="sequences to hold out, e.g. 0006R0")
    parser.add_argument("--output", type=Path, help="folder for <name>_train.txt and <name>_val.txt (with --holdout)")
    parser.add_argument("--name", help="file name stem (default: holdout_<SEQ>[_<SEQ>...])")
    parser.add_argument("--pattern", default=DEFAULT_PATTERN, help=f"regex whose first group is the sequence (default {DEFAULT_PATTERN!r})")


def run(args: argparse.Namespace) -> int:
    pattern = re.compile(args.pattern)
    listed = {path: read_lines(path) for path in args.lists}
    counts = {path: collections.Counter(sequence_of(line, pattern) for line in lines) for path, lines in listed.items()}
    for path, counter in counts.items():
        print(f"{path}: {sum(counter.values())} frames: " + ", ".join(f"{s} {n}" for s, n in sorted(counter.items())))
    if not args.holdout:
        return 0
    if args.output is None:
        raise SegtrainError("--holdout: also pass --output DIR, the folder for the two list files")
    known = set().union(*counts.values())
    unknown = sorted(set(args.holdout) - known)
    if unknown:
        raise SegtrainError(f"--holdout {' '.join(unknown)}: no such sequence in the lists; they have {', '.join(sorted(known))}")
    train, val = split_by_sequence([line for lines in listed.values() for line in lines], set(args.holdout), pattern)
    stem = args.name or "holdout_" + "_".join(args.holdout)
    args.output.mkdir(parents=True, exist_ok=True)
    for suffix, lines in (("train", train), ("val", val)):
        path = args.output / f"{stem}_{suffix}.txt"
        path.write_text("".join(line + "\n" for line in lines))
        print(f"wrote {path}: {len(lines)} frames")
    return 0
