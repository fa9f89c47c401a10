"""convert-labels: exact round trips on real CamVid / VOC labels, unknown colours, safe interruption."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segtrain.cli import main as cli_main
from segtrain.data.formats import palette as pal
from segtrain.errors import SegtrainError
from segtrain.data.formats.palette import ColorTable
from segtrain.io_utils import TMP_SUFFIX
from segtrain.tools.convert_labels import convert_labels, parse_value_map, value_lut

from conftest import SHARED_DATA, shared_data

REPO = Path(__file__).resolve().parents[1]
DATA = SHARED_DATA
CAMVID_ANNOT = DATA / "camvid" / "trainannot"
VOC_LABELS = DATA / "voc" / "SegmentationClass"
needs_camvid = pytest.mark.usefixtures("camvid_annot")
needs_voc = pytest.mark.usefixtures("voc_labels")


@pytest.fixture
def camvid_annot():
    return shared_data("camvid", "trainannot")  # a skip, or an error under CI=true


@pytest.fixture
def voc_labels():
    return shared_data("voc", "SegmentationClass")

# CamVid colours as listed in the dataset README (SegNet's scripts), index 11 = void (0,0,0).
CAMVID_README_COLOURS = [
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
    (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192), (0, 0, 0),
]


def _load(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.array(im)


def _write_rgb(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb.astype(np.uint8), "RGB").save(path)


@needs_camvid
def test_camvid_colourise_and_back_is_bit_exact(tmp_path):
    src = tmp_path / "annot"
    src.mkdir()
    names = sorted(p.name for p in CAMVID_ANNOT.glob("*.png"))[::60][:6]
    for name in names:
        shutil.copy(CAMVID_ANNOT / name, src / name)
    rgb_dir, back_raw, back_pal = tmp_path / "rgb", tmp_path / "raw", tmp_path / "pal"

    assert cli_main(["convert-labels", "index-to-rgb", str(src), str(rgb_dir), "--palette", "camvid", "--map", "11:255"]) == 0
    # In parallel, to cover the worker pool as well.
    assert cli_main(["convert-labels", "rgb-to-index", str(rgb_dir), str(back_raw), "--palette", "camvid",
                     "--raw", "--map", "255:11", "--jobs", "2"]) == 0
    assert cli_main(["convert-labels", "rgb-to-index", str(rgb_dir), str(back_pal), "--palette", "camvid"]) == 0

    table = np.array(CAMVID_README_COLOURS, dtype=np.uint8)
    for name in names:
        original = _load(src / name)
        assert original.max() == 11 and (original == 11).any(), "test needs void pixels"
        np.testing.assert_array_equal(_load(rgb_dir / name), table[original])  # independent colouring
        with Image.open(back_raw / name) as im:
            assert im.mode == "L"
            np.testing.assert_array_equal(np.array(im), original)
        with Image.open(back_pal / name) as im:
            assert im.mode == "P"
            np.testing.assert_array_equal(np.array(im), np.where(original == 11, 255, original))
            assert im.getpalette()[:33] == table[:11].reshape(-1).tolist()
            assert im.getpalette()[255 * 3 : 256 * 3] == [0, 0, 0]


@needs_camvid
def test_camvid_index_value_outside_table_is_reported(tmp_path):
    src = tmp_path / "annot"
    src.mkdir()
    name = sorted(p.name for p in CAMVID_ANNOT.glob("*.png"))[0]
    shutil.copy(CAMVID_ANNOT / name, src / name)
    void_pixels = int((_load(src / name) == 11).sum())
    with pytest.raises(SegtrainError) as err:
        convert_labels("index-to-rgb", src, tmp_path / "out", palette="camvid")
    assert f"value 11 {void_pixels} px in {name}" in str(err.value)
    assert "--map 11:255" in str(err.value)
    assert not (tmp_path / "out" / name).exists()


@needs_voc
def test_voc_palette_raw_palette_round_trip(tmp_path):
    raw_dir, pal_dir = tmp_path / "raw", tmp_path / "pal"
    convert_labels("palette-to-raw", VOC_LABELS, raw_dir)
    convert_labels("index-to-palette", raw_dir, pal_dir, palette="voc")
    files = sorted(VOC_LABELS.glob("*.png"))
    assert len(files) == 7
    for path in files:
        with Image.open(path) as original:
            assert original.mode == "P"
            indices, palette = np.array(original), original.getpalette()
        assert set(np.unique(indices)) - {255} and 255 in indices
        with Image.open(raw_dir / path.name) as raw:
            assert raw.mode == "L"
            np.testing.assert_array_equal(np.array(raw), indices)
        with Image.open(pal_dir / path.name) as again:
            assert again.mode == "P"
            np.testing.assert_array_equal(np.array(again), indices)
            assert again.getpalette() == palette


def test_palette_to_raw_reads_indices_not_colours(tmp_path):
    """Two indices with the same palette colour stay distinct: the colours are never consulted."""
    indices = np.array([[0, 1, 2, 3], [3, 2, 1, 0]], dtype=np.uint8)
    image = Image.fromarray(indices)
    image.putpalette([10, 20, 30] * 256)  # every index draws the same colour
    (tmp_path / "in").mkdir()
    image.save(tmp_path / "in" / "a.png")
    convert_labels("palette-to-raw", tmp_path / "in", tmp_path / "out")
    np.testing.assert_array_equal(_load(tmp_path / "out" / "a.png"), indices)


def _unknown_colour_inputs(root: Path) -> dict[str, np.ndarray]:
    """Three small CamVid-coloured masks; b and c hold off-table colours. Returns expected indices."""
    rng = np.random.default_rng(0)
    colours = np.vstack([pal.CAMVID_COLORS, [pal.CAMVID_VOID_COLOR]])
    expected = {}
    for name in ("a", "b", "c"):
        idx = rng.integers(0, 12, size=(16, 20))
        rgb = colours[idx].copy()
        expect = np.where(idx == 11, 255, idx).astype(np.uint8)
        if name == "b":
            rgb[2:4, 5:8] = (129, 128, 128)  # 6 px of a JPEG-shifted Sky
            expect[2:4, 5:8] = 255
        if name == "c":
            rgb[0, :3] = (129, 128, 128)  # 3 px
            rgb[5, 5] = (1, 2, 3)  # 1 px
            expect[0, :3] = 255
            expect[5, 5] = 255
        _write_rgb(root / "sub" / f"{name}.png", rgb)
        expected[f"sub/{name}.png"] = expect
    return expected


def test_unknown_colour_error_names_colour_count_and_file(tmp_path, capsys):
    _unknown_colour_inputs(tmp_path / "in")
    with pytest.raises(SegtrainError) as err:
        convert_labels("rgb-to-index", tmp_path / "in", tmp_path / "out", palette="camvid", raw=True)
    message = str(err.value)
    assert "\n" not in message
    assert "(129,128,128) 9 px in sub/b.png, sub/c.png" in message
    assert "(1,2,3) 1 px in sub/c.png" in message
    assert "2 of 3 files" in message
    # Clean files are written, files with unknown colours are not.
    assert (tmp_path / "out" / "sub" / "a.png").exists()
    assert not (tmp_path / "out" / "sub" / "b.png").exists()

    # The CLI prints the same as one line and exits 1.
    assert cli_main(["convert-labels", "rgb-to-index", str(tmp_path / "in"), str(tmp_path / "out2"), "--palette", "camvid"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: 2 colours not in the camvid table")


def test_unknown_void_maps_to_255_and_reports(tmp_path, capsys):
    expected = _unknown_colour_inputs(tmp_path / "in")
    rc = cli_main(["convert-labels", "rgb-to-index", str(tmp_path / "in"), str(tmp_path / "out"),
                   "--palette", "camvid", "--raw", "--unknown", "void"])
    assert rc == 0
    assert "mapped 10 pixels of 2 unknown colours in 2 files to void 255" in capsys.readouterr().err
    for name, expect in expected.items():
        np.testing.assert_array_equal(_load(tmp_path / "out" / name), expect)


def test_value_map_and_reduce_zero_label_against_reference(tmp_path):
    values = np.array([[0, 1, 2, 150], [254, 255, 11, 3]], dtype=np.uint8)
    (tmp_path / "in").mkdir()
    Image.fromarray(values).save(tmp_path / "in" / "m.png")
    convert_labels("remap", tmp_path / "in", tmp_path / "out", reduce_zero_label=True, value_map=parse_value_map(["11:255", "3:7"]))
    # By hand: 0 -> 255, v -> v-1, 255 stays, then the explicit 11 -> 255 and 3 -> 7 win.
    expected = np.array([[255, 0, 1, 149], [253, 255, 255, 7]], dtype=np.uint8)
    np.testing.assert_array_equal(_load(tmp_path / "out" / "m.png"), expected)
    assert value_lut({}, False).tolist() == list(range(256))
    with pytest.raises(SegtrainError, match="--map 3:300"):
        parse_value_map(["3:300"])


def test_colour_table_files(tmp_path):
    yaml_file = tmp_path / "t.yaml"
    yaml_file.write_text("classes:\n  road: [128, 64, 128]\n  car: '#4000ff'\nvoid: [0, 0, 0]\n")
    table = ColorTable.load(yaml_file)
    assert table.names == ("road", "car")
    assert table.colors.tolist() == [[128, 64, 128], [64, 0, 255]]
    assert table.void_color == (0, 0, 0)
    json_file = tmp_path / "t.json"
    json_file.write_text(json.dumps({"classes": {"a": [1, 2, 3], "b": [1, 2, 3]}}))
    with pytest.raises(SegtrainError, match="share colour"):
        ColorTable.load(json_file)
    bad = tmp_path / "bad.yaml"
    bad.write_text("classes:\n  a: [1, 2, 300]\n")
    with pytest.raises(SegtrainError, match="classes.a"):
        ColorTable.load(bad)

    # A file table drives the conversion: (64,0,255) -> 1, void colour -> 255.
    rgb = np.array([[[128, 64, 128], [64, 0, 255], [0, 0, 0]]], dtype=np.uint8)
    _write_rgb(tmp_path / "in" / "x.png", rgb)
    convert_labels("rgb-to-index", tmp_path / "in", tmp_path / "out", palette=yaml_file, raw=True)
    assert _load(tmp_path / "out" / "x.png").tolist() == [[0, 1, 255]]


def test_shipped_example_table_equals_builtin_camvid():
    table = ColorTable.load(REPO / "configs" / "palettes" / "camvid.yaml")
    assert table.names == pal.CAMVID_CLASSES
    assert table.colors.tolist() == [list(c) for c in CAMVID_README_COLOURS[:11]]
    assert table.void_color == CAMVID_README_COLOURS[11]


def test_rgb_lookup_matches_naive_loop_and_rgb_to_index():
    rng = np.random.default_rng(1)
    colours = pal.VOC_COLORS
    idx = rng.integers(0, 22, size=(40, 50))
    rgb = np.vstack([colours, [pal.VOC_VOID_COLOR]]).astype(np.uint8)[idx]
    rgb[rng.random((40, 50)) < 0.05] = (7, 7, 7)  # unknown
    naive = np.full((40, 50), 255, dtype=np.uint8)
    for i, c in enumerate(colours):
        naive[np.all(rgb == c, axis=-1)] = i
    naive_unknown = ~np.any(np.all(rgb[:, :, None] == np.vstack([colours, [pal.VOC_VOID_COLOR]]), axis=-1), axis=-1)
    mask, unknown = pal.RgbLookup(colours, pal.VOC_VOID_COLOR)(rgb)
    np.testing.assert_array_equal(mask, naive)
    np.testing.assert_array_equal(unknown, naive_unknown)
    ref_mask, ref_unknown = pal.rgb_to_index(rgb, colours, pal.VOC_VOID_COLOR)
    np.testing.assert_array_equal(mask, ref_mask)
    np.testing.assert_array_equal(unknown, ref_unknown)


def test_never_overwrites_input_and_dry_run_writes_nothing(tmp_path, capsys):
    src = tmp_path / "in"
    _write_rgb(src / "a.png", np.zeros((4, 4, 3)))
    with pytest.raises(SegtrainError, match="--in-place"):
        convert_labels("rgb-to-index", src, src, palette="camvid")
    with pytest.raises(SegtrainError, match="inside INPUT_DIR"):
        convert_labels("rgb-to-index", src, src / "out", palette="camvid")
    with pytest.raises(SegtrainError, match="same result when run again"):
        convert_labels("remap", src, in_place=True, value_map={1: 2})
    before = (src / "a.png").read_bytes()
    assert cli_main(["convert-labels", "rgb-to-index", str(src), str(tmp_path / "out"), "--palette", "camvid", "--dry-run"]) == 0
    assert f"{src / 'a.png'} -> {tmp_path / 'out' / 'a.png'}" in capsys.readouterr().out
    assert not (tmp_path / "out").exists()
    # A safe conversion in place: RGB -> palette PNG, and a re-run gives the same file.
    convert_labels("rgb-to-index", src, palette="camvid", in_place=True)
    first = (src / "a.png").read_bytes()
    assert first != before and np.all(_load(src / "a.png") == 255)
    convert_labels("rgb-to-index", src, palette="camvid", in_place=True)
    assert (src / "a.png").read_bytes() == first


def test_module_imports_without_tensorflow():
    code = "import sys, segtrain.tools.convert_labels; assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_killed_conversion_leaves_only_complete_pngs_and_rerun_completes(tmp_path):
    n = 200
    src, out = tmp_path / "in", tmp_path / "out"
    rng = np.random.default_rng(2)
    colours = pal.CAMVID_COLORS
    expected = {}
    for i in range(n):
        idx = rng.integers(0, 11, size=(48, 64)).astype(np.uint8)
        _write_rgb(src / f"d{i % 3}" / f"{i:03d}.png", colours[idx])
        expected[f"d{i % 3}/{i:03d}.png"] = idx
    cmd = [sys.executable, "-m", "segtrain.tools.convert_labels", "rgb-to-index", str(src), str(out),
           "--palette", "camvid", "--raw", "--compress-level", "9"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None and len(list(out.rglob("*.png"))) < 10:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "conversion finished before it could be interrupted"
    done = sorted(out.rglob("*.png"))
    assert 0 < len(done) < n
    for path in done:  # every PNG there is complete and correct
        with Image.open(path) as im:
            im.load()
            np.testing.assert_array_equal(np.array(im), expected[path.relative_to(out).as_posix()])

    rerun = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert f"wrote {n} of {n} files" in rerun.stderr
    assert not list(out.rglob(f"*{TMP_SUFFIX}"))
    assert len(list(out.rglob("*.png"))) == n
    for name, idx in expected.items():
        np.testing.assert_array_equal(_load(out / name), idx)


def test_the_same_table_file_is_a_config_colour_table(tmp_path):
    from segtrain.config import load_config
    from segtrain.data.formats.decode import class_names, read_mask

    (tmp_path / "palettes").mkdir()
    (tmp_path / "palettes" / "t.yaml").write_text("classes:\n  road: [128, 64, 128]\n  car: '#4000ff'\nvoid: [9, 9, 9]\n")
    config = tmp_path / "c.yaml"  # the table path is relative to the config file, like data.root
    config.write_text("data: {format: folders, root: ., num_classes: 2, classes: palettes/t.yaml}\n")
    data_cfg = load_config(config).data
    assert class_names(data_cfg) == ["road", "car"]
    rgb = np.array([[[128, 64, 128], [64, 0, 255], [9, 9, 9]]], dtype=np.uint8)
    _write_rgb(tmp_path / "m.png", rgb)
    assert read_mask(tmp_path / "m.png", data_cfg).tolist() == [[0, 1, 255]]
    config.write_text("data: {format: folders, root: ., num_classes: 3, classes: palettes/t.yaml}\n")
    with pytest.raises(SegtrainError, match="data.num_classes is 3 but data.classes=.*t.yaml has 2 classes"):
        class_names(load_config(config).data)
    with pytest.raises(SegtrainError, match=r"--palette nope.yaml: not a built-in table \(voc, camvid, .*\) and not an existing"):
        ColorTable.load("nope.yaml")
