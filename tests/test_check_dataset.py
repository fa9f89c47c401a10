"""check-dataset: every problem reported with its file, histogram right, exit status, dataset untouched."""

import shutil
from pathlib import Path

import numpy as np
from conftest import sample_config
from PIL import Image

from segtrain import cli
from segtrain.data.check import check_dataset, check_splits


def make_config(root):
    return sample_config(root)


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


def write_split(root: Path, split: str, ids) -> None:
    (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))


def test_ids_shared_between_splits_are_a_problem(tmp_path, sample_root, capsys):
    root = tmp_path / "leaky"
    shutil.copytree(sample_root, root)
    ids = [f"sample_{n:04d}" for n in range(80)]
    write_split(root, "train", ids[:60] + ids[60:63])  # 3 val ids leaked into train
    write_split(root, "test", ids[70:80])
    write_split(root, "trainval", ids[:78])  # holds 8 of the 10 test ids
    reports = check_splits(make_config(root), ["train", "val"])
    assert [r.ok for r in reports] == [True, False]
    (line,) = reports[1].problems
    assert line.startswith("split 'val': 3 of 20 samples are also in split 'train' (sample_0060, sample_0061, sample_0062)")
    config_file = tmp_path / "c.yaml"
    config_file.write_text(f"data: {{format: voc, root: {root}, num_classes: 4, classes: [a, b, c, d], train_split: trainval}}\n")
    assert cli.main(["check-dataset", "--config", str(config_file), "--split", "test"]) == 1
    out = capsys.readouterr().out
    assert "split 'test': 8 of 10 samples are also in split 'trainval' (sample_0070, sample_0071, sample_0072, sample_0073, sample_0074, ...)" in out
    assert "split 'test': 10 of 10 samples are also in split 'val'" in out  # val is 60..79: test 70..79 is inside it
    write_split(root, "train", ids[:60])
    assert all(r.ok for r in check_splits(make_config(root), ["train", "val"]))


def test_lossy_mask_is_a_check_dataset_problem(tmp_path, sample_root):
    root = tmp_path / "jpeg"
    shutil.copytree(sample_root, root)
    mask = root / "SegmentationClass" / "sample_0065.png"
    Image.open(mask).convert("L").save(mask, format="JPEG", quality=90)
    report = check_dataset(make_config(root), "val")
    (line,) = report.problems
    assert line.startswith(f"{mask}: mask is stored as JPEG") and report.num_ok == 19
