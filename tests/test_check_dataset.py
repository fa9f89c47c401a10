"""check-dataset: every problem reported with its file, histogram right, exit status, dataset untouched."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segtrain import cli
from segtrain.config import from_dict
from segtrain.data.check import check_dataset
from segtrain.data.synthetic import SAMPLE_CLASSES, ensure_sample_dataset


@pytest.fixture(scope="module")
def sample_root(tmp_path_factory) -> Path:
    return ensure_sample_dataset(tmp_path_factory.mktemp("data") / "sample")


def make_config(root):
    return from_dict({"data": {"format": "voc", "root": str(root), "num_classes": 4, "classes": list(SAMPLE_CLASSES)}})


def snapshot(root: Path) -> dict:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def test_clean_split_histogram_matches_numpy(sample_root):
    report = check_dataset(make_config(sample_root), "val")
    assert report.ok and report.num_samples == report.num_ok == 20
    counts = np.zeros(256, np.int64)
    for path in sorted((sample_root / "SegmentationClass").glob("*.png"))[60:]:
        counts += np.bincount(np.asarray(Image.open(path)).ravel(), minlength=256)
    np.testing.assert_array_equal(report.class_pixels, counts[:4])
    assert report.void_pixels == counts[255] and counts.sum() == 20 * 64 * 64
    assert "circle" in report.format()


def test_every_problem_reported_with_its_file(tmp_path, sample_root, capsys):
    root = tmp_path / "bad"
    shutil.copytree(sample_root, root)
    masks = root / "SegmentationClass"
    (masks / "sample_0060.png").unlink()  # missing mask
    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[:2] = (7, 8, 9)
    Image.fromarray(rgb).save(masks / "sample_0061.png")  # unknown colour
    Image.fromarray(np.full((64, 64), 9, np.uint8), mode="L").save(masks / "sample_0062.png")  # out of range
    Image.fromarray(np.zeros((10, 64), np.uint8), mode="L").save(masks / "sample_0063.png")  # size mismatch
    truncated = masks / "sample_0064.png"
    truncated.write_bytes(truncated.read_bytes()[:60])
    before = snapshot(root)
    report = check_dataset(make_config(root), "val")
    assert report.num_samples == 20 and report.num_ok == 15 and len(report.problems) == 5
    for number, words in zip(range(60, 65), ("missing", "(7,8,9) (128 px)", "values 9", "sample_0063.jpg", "truncated")):
        (line,) = [p for p in report.problems if f"sample_{number:04d}.png" in p]
        assert words in line
    config_file = tmp_path / "c.yaml"
    config_file.write_text(f"data: {{format: voc, root: {root}, num_classes: 4, classes: [a, b, c, d]}}\n")
    assert cli.main(["check-dataset", "--config", str(config_file), "--split", "val"]) == 1
    out = capsys.readouterr().out
    assert "5 problem(s)" in out and out.count("problem: ") == 5
    assert cli.main(["check-dataset", "--config", str(config_file), "--split", "train"]) == 0
    assert snapshot(root) == before  # the dataset folder is never written


def test_missing_root_is_a_problem_not_a_crash(tmp_path):
    report = check_dataset(make_config(tmp_path / "nowhere"), "train")
    assert not report.ok and "nowhere" in report.problems[0]
