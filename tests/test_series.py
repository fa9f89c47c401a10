"""data.format: series: signal files, per-step labels, TSSB change points -> segment labels."""

import numpy as np
import pytest

from conftest import shared_data
from segtrain.config import from_dict
from segtrain.data.check import check_dataset
from segtrain.data.formats.series import change_points_to_labels, read_series
from segtrain.data.formats.splits import list_samples
from segtrain.errors import SegtrainError


def _config(root, **data):
    data = {"format": "series", "root": str(root), "num_classes": 4, "classes": ["a", "b", "c", "d"],
            "label": "desc.txt", "train_split": ".", "val_split": ".", **data}
    return from_dict({"data": data, "output_dir": str(root / "run")})


def test_change_points_to_labels_by_hand():
    assert change_points_to_labels([3, 7], 10).tolist() == [0, 0, 0, 1, 1, 1, 1, 2, 2, 2]
    assert change_points_to_labels([], 4).tolist() == [0, 0, 0, 0]
    assert change_points_to_labels([1, 9], 10).tolist() == [0] + [1] * 8 + [2]
    for bad in ([0], [10], [5, 5], [6, 2]):
        with pytest.raises(ValueError, match="must increase strictly within 1..9"):
            change_points_to_labels(bad, 10)


def test_a_tssb_style_folder(tmp_path):
    np.savetxt(tmp_path / "Wave.txt", np.sin(np.arange(12.0)))
    np.savetxt(tmp_path / "Flat.txt", np.arange(6.0))
    (tmp_path / "desc.txt").write_text("Wave,4,3,7\nFlat,2\n")
    config = _config(tmp_path)
    samples = list_samples(config.data, "train")
    assert [s.name for s in samples] == ["Wave", "Flat"]  # the table's order
    signal, labels = read_series(samples[0], config.data)
    raw = np.sin(np.arange(12.0))
    np.testing.assert_allclose(signal[:, 0], (raw - raw.mean()) / raw.std(), atol=1e-5)
    assert signal.shape == (12, 1) and signal.dtype == np.float32
    assert labels.tolist() == [0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 2] and labels.dtype == np.uint8
    assert read_series(samples[1], config.data)[1].tolist() == [0] * 6


def test_multichannel_signals_with_per_step_labels(tmp_path):
    split = tmp_path / "train"
    split.mkdir()
    rng = np.random.default_rng(0)
    acc = rng.normal(size=(9, 3))
    np.savetxt(split / "walk.csv", acc, delimiter=",")
    np.save(split / "walk.labels.npy", np.array([0, 0, 1, 1, 255, 2, 2, 3, 3]))
    np.save(split / "run.npy", acc[::-1].astype(np.float32))
    np.save(split / "run.labels.npy", np.zeros(9, np.int64))
    config = _config(tmp_path, label="{name}.labels.npy", channels=3, normalize="none", train_split="train")
    samples = list_samples(config.data, "train")
    assert [s.name for s in samples] == ["run", "walk"]
    signal, labels = read_series(samples[1], config.data)
    np.testing.assert_allclose(signal, acc, rtol=1e-6)
    assert labels.tolist() == [0, 0, 1, 1, 255, 2, 2, 3, 3]
    np.testing.assert_allclose(read_series(samples[0], config.data)[0], acc[::-1], rtol=1e-6)
    # Labels in a sub-folder, under the signals' own extension: still told apart from signals.
    (split / "labels").mkdir()
    for name in ("walk", "run"):
        (split / f"{name}.labels.npy").rename(split / "labels" / f"{name}.npy")
    config = _config(tmp_path, label="labels/{name}.npy", channels=3, train_split="train")
    assert [s.name for s in list_samples(config.data, "train")] == ["run", "walk"]


def test_bad_series_are_errors_naming_the_file(tmp_path):
    np.savetxt(tmp_path / "Two.csv", np.zeros((8, 2)), delimiter=",")
    np.savetxt(tmp_path / "Long.txt", np.zeros(8))
    np.savetxt(tmp_path / "Many.txt", np.zeros(8))
    (tmp_path / "desc.txt").write_text("Two,2,4\nLong,2,4,8\nMany,2,1,2,3,4\nGone,2,3\n")
    report = check_dataset(_config(tmp_path), "train")
    assert report.num_samples == 4 and report.num_ok == 0
    problems = "\n".join(report.problems)
    assert "Two.csv: signal has 2 channel(s) (columns) but data.channels is 1; set data.channels: 2" in problems
    assert "desc.txt: signal Long (8 steps): change points [4, 8] must increase strictly within 1..7" in problems
    assert "desc.txt: label values 4 are neither a class (0..3)" in problems  # five segments, four classes
    assert "Gone: signal file (.npy/.csv/.txt) is missing" in problems
    (tmp_path / "desc.txt").write_text("Two,2,x\n")
    with pytest.raises(SegtrainError, match=r"desc\.txt: line 1: expected 'name,window_size,cp1,cp2,...'"):
        list_samples(_config(tmp_path).data, "train")


@pytest.mark.parametrize("data, message", [
    ({"label": None}, "data.label' must be a per-signal label file"),
    ({"channels": ["x.nii"]}, "data.channels' must be a number of channels for format series"),
    ({"patch": [8, 8]}, "data.patch' must be 1 positive size"),
    ({"mask": "m.npy"}, "data.mask' applies to format nifti only"),
    ({"channels": 0}, "data.channels' must be at least 1 for format series, got 0"),
])
def test_config_errors(tmp_path, data, message):
    with pytest.raises(SegtrainError, match=message):
        _config(tmp_path, **data)


def test_real_tssb_series_against_desc_txt():
    root = shared_data("tssb1d")
    config = _config(root, num_classes=8, classes=[str(i) for i in range(8)])
    samples = {s.name: s for s in list_samples(config.data, "train")}
    assert len(samples) == 75
    line = next(l for l in (root / "desc.txt").read_text().splitlines() if l.startswith("Adiac,"))
    cps = [int(v) for v in line.split(",")[2:]]
    signal, labels = read_series(samples["Adiac"], config.data)
    values = np.loadtxt(root / "Adiac.txt")
    assert signal.shape == (len(values), 1)
    expected = np.zeros(len(values), np.int64)
    for cp in cps:  # segment k covers [cp_k, cp_k+1): count the change points at or before each step
        expected[cp:] += 1
    np.testing.assert_array_equal(labels, expected)
    assert labels.max() == len(cps)
