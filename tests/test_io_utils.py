"""segtrain.io_utils: atomic files, PNG/JSON, the progress display, image lists, HxW sizes."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segtrain.errors import SegtrainError
from segtrain.io_utils import (
    TMP_SUFFIX,
    Progress,
    atomic_write,
    format_size,
    list_images,
    parse_size,
    progress,
    write_json,
    write_png,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("fsync", [True, False])
def test_atomic_write_replaces_whole_or_not_at_all(tmp_path, fsync):
    target = tmp_path / "sub" / "state.json"
    write_json(target, {"step": 1}, fsync=fsync)  # creates the folder
    assert json.loads(target.read_text()) == {"step": 1}

    def crash(tmp: Path) -> None:
        tmp.write_text('{"step": 2, "half')  # a torn write ...
        assert tmp.name.startswith(".state.json.") and TMP_SUFFIX in tmp.name
        raise KeyboardInterrupt  # ... then the process is interrupted

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, crash, fsync=fsync)
    assert json.loads(target.read_text()) == {"step": 1}  # the old file, whole
    assert [p.name for p in target.parent.iterdir()] == ["state.json"]  # no temporary left
    atomic_write(target, lambda tmp: tmp.write_text("new"), suffix=".keras", fsync=fsync)
    assert target.read_text() == "new"


def test_write_png_is_lossless_and_keeps_palette_indices(tmp_path):
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 5, (7, 9)).astype(np.uint8)
    mask[0, 0] = 255
    palette = [v for i in range(256) for v in (i, 255 - i, 7)]
    write_png(tmp_path / "m.png", mask, palette=palette)
    with Image.open(tmp_path / "m.png") as png:
        assert png.format == "PNG" and png.mode == "P"
        np.testing.assert_array_equal(np.asarray(png), mask)  # indices, not colours
        assert png.getpalette()[:9] == [0, 255, 7, 1, 254, 7, 2, 253, 7]
    rgb = rng.integers(0, 256, (6, 5, 3)).astype(np.uint8)
    write_png(tmp_path / "o.png", rgb)
    with Image.open(tmp_path / "o.png") as png:
        np.testing.assert_array_equal(np.asarray(png), rgb)  # bit-exact: not JPEG


class _Stream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def test_progress_writes_plain_lines_when_not_a_terminal():
    stream = _Stream(tty=False)
    items = list(progress(range(95), "predict", stream=stream))
    assert items == list(range(95))
    text = stream.getvalue()
    assert "\r" not in text and "\x1b" not in text  # no carriage returns, no escape codes
    lines = text.splitlines()
    assert len(lines) == 10  # one per 10 % of the work
    assert lines[-1].startswith("predict 95/95") and lines[0].startswith("predict 10/95")


def test_progress_redraws_one_line_on_a_terminal():
    stream = _Stream(tty=True)
    bar = Progress(3, "convert", unit="files", stream=stream)
    for _ in range(3):
        bar.update()
    bar.close()
    text = stream.getvalue()
    assert text.startswith("\r") and text.endswith("\n") and text.count("\n") == 1
    assert "3/3" in text and "files/s" in text
    silent = _Stream(tty=True)
    list(progress([1, 2], "x", enabled=False, stream=silent))
    assert silent.getvalue() == ""


def test_sizes_are_height_by_width_everywhere():
    assert parse_size("360x480") == (360, 480)
    assert parse_size("512") == (512, 512)
    assert parse_size("8x16x24", rank=None) == (8, 16, 24)
    assert parse_size("8x16x24", rank=3) == (8, 16, 24)
    assert format_size(parse_size("360X480")) == "360x480"
    for bad in ("64x", "0x4", "axb", "1x2x3"):
        with pytest.raises(SegtrainError, match="--window"):
            parse_size(bad, "--window")


def test_list_images_skips_hidden_and_other_files(tmp_path):
    for name in ("b.PNG", "a.jpg", ".hidden.png", "notes.txt", "c.tif"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "d.png").mkdir()
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg", "b.PNG", "c.tif"]


def test_imports_neither_tensorflow_nor_keras():
    code = "import sys, segtrain.io_utils, segtrain.data.formats.palette; assert not {'tensorflow', 'keras'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_per_axis_broadcasts_an_int_and_checks_one_entry_per_axis():
    from segtrain.io_utils import per_axis

    assert per_axis(3, 3, "kernel_size") == (3, 3, 3)
    assert per_axis(np.int64(2), 1, "factor") == (2,)
    assert per_axis([4, 5], 2, "window") == (4, 5)
    with pytest.raises(ValueError, match=r"factor=\(2, 2\) has 2 entries but the input has 3 spatial axes"):
        per_axis((2, 2), 3, "factor")


def test_read_ahead_yields_every_item_once_in_order_and_reraises():
    from segtrain.io_utils import read_ahead

    assert list(read_ahead(lambda x: x * x, range(10), depth=3)) == [x * x for x in range(10)]
    assert list(read_ahead(str, [], depth=3)) == []

    def read(x):
        if x == 4:
            raise SegtrainError("sample 4: broken")
        return x

    got = []
    with pytest.raises(SegtrainError, match="sample 4: broken"):
        for x in read_ahead(read, range(10), depth=2):
            got.append(x)
    assert got == [0, 1, 2, 3]


def test_describe_findings_names_the_first_files_and_counts_the_rest():
    from segtrain.io_utils import describe_findings

    findings = [("'cat'", {"c.json", "a.json", "d.json", "b.json"}, " (did you mean 'Cat'?)"), ("(1,2,3) 5 px", ["x.png"], "")]
    assert describe_findings(findings) == ("'cat' in a.json, b.json, c.json (+1 more files) (did you mean 'Cat'?); "
                                           "(1,2,3) 5 px in x.png")
    assert describe_findings([("v", ["a", "b", "c"], "")]) == "v in a, b, c"  # exactly three: nothing more
    assert describe_findings(findings, limit=1) == "'cat' in a.json, b.json, c.json (+1 more files) (did you mean 'Cat'?); and 1 more"
