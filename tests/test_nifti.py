"""data.format: nifti: decoding against nibabel read directly, label checks, grid checks, check-dataset."""

import numpy as np
import pytest

from conftest import need_module, shared_data
from segtrain.config import from_dict
from segtrain.data.check import check_dataset
from segtrain.data.formats.nifti import read_case
from segtrain.data.formats.splits import list_samples
from segtrain.errors import SegtrainError

nib = need_module("nibabel")

SHAPE = (6, 5, 4)
AFFINE = np.array([[1.5, 0, 0, -10], [0, 1.5, 0, 4], [0, 0, 2.0, 7], [0, 0, 0, 1]])
CLASSES = ["background", "edema", "core"]


def _config(root, tmp_path, model=None, **data):
    data = {"format": "nifti", "root": str(root), "num_classes": 3, "classes": CLASSES,
            "channels": ["t1.nii.gz", "flair.nii.gz"], "label": "seg.nii.gz", "mask": "brain.nii.gz",
            "train_split": "train", "val_split": "val", **data}
    return from_dict({"data": data, "model": model or {}, "output_dir": str(tmp_path / "run")})


def _save(path, array, affine=AFFINE):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), str(path))


def _case(folder, seed, label=None, **overrides):
    """Write one case: two float channels, a float32-stored label (as BRATS stores it) and a brain mask."""
    rng = np.random.default_rng(seed)
    files = {
        "t1.nii.gz": (rng.normal(100, 20, SHAPE).astype(np.float32), AFFINE),
        "flair.nii.gz": (rng.normal(-3, 5, SHAPE).astype(np.float32), AFFINE),
        "seg.nii.gz": (rng.integers(0, 3, SHAPE).astype(np.float32) if label is None else label, AFFINE),
        "brain.nii.gz": ((rng.random(SHAPE) < 0.7).astype(np.uint8), AFFINE),
    }
    files.update(overrides)
    for name, (array, affine) in files.items():
        _save(folder / name, array, affine)
    return files


def test_read_case_matches_nibabel_and_keeps_the_grid(tmp_path):
    files = _case(tmp_path / "train" / "a", 0)
    _case(tmp_path / "train" / "b", 1)
    config = _config(tmp_path, tmp_path, normalize="none")
    cases = list_samples(config.data, "train")
    assert [c.name for c in cases] == ["a", "b"]
    vol = read_case(cases[0], config.data)
    folder = tmp_path / "train" / "a"
    direct = [nib.load(str(folder / name)).get_fdata() for name in ("t1.nii.gz", "flair.nii.gz")]
    assert vol.image.shape == SHAPE + (2,) and vol.image.dtype == np.float32
    np.testing.assert_allclose(vol.image, np.stack(direct, axis=-1), rtol=1e-6)  # config order, channels last
    np.testing.assert_array_equal(vol.label, nib.load(str(folder / "seg.nii.gz")).get_fdata().astype(np.uint8))
    assert vol.label.dtype == np.uint8
    np.testing.assert_array_equal(vol.mask, files["brain.nii.gz"][0] != 0)
    np.testing.assert_allclose(vol.affine, AFFINE)
    assert vol.header.get_data_shape() == SHAPE


def test_zscore_inside_the_mask_against_numpy(tmp_path):
    files = _case(tmp_path / "train" / "a", 2)
    config = _config(tmp_path, tmp_path)  # normalize: zscore is the default
    vol = read_case(list_samples(config.data, "train")[0], config.data)
    brain = files["brain.nii.gz"][0] != 0
    for c, name in enumerate(["t1.nii.gz", "flair.nii.gz"]):
        raw = files[name][0].astype(np.float64)
        expected = np.where(brain, (raw - raw[brain].mean()) / raw[brain].std(), 0.0)
        np.testing.assert_allclose(vol.image[..., c], expected, atol=1e-5)


def test_void_stays_void_and_bad_labels_name_the_file(tmp_path):
    label = np.zeros(SHAPE, np.float32)
    label[0, 0, 0] = 255
    label[1, 1, 1] = 2
    _case(tmp_path / "train" / "a", 3, label=label)
    config = _config(tmp_path, tmp_path)
    vol = read_case(list_samples(config.data, "train")[0], config.data)
    assert vol.label[0, 0, 0] == 255 and vol.label[1, 1, 1] == 2 and int((vol.label == 0).sum()) == label.size - 2

    label[2, 2, 2] = 1.5
    _save(tmp_path / "train" / "a" / "seg.nii.gz", label)
    with pytest.raises(SegtrainError, match=r"seg\.nii\.gz: label file has 1 non-integer value"):
        read_case(list_samples(config.data, "train")[0], config.data)

    label[2, 2, 2] = 4  # >= num_classes (3), not void
    _save(tmp_path / "train" / "a" / "seg.nii.gz", label)
    with pytest.raises(SegtrainError, match=r"seg\.nii\.gz: label values 4 are neither a class \(0\.\.2\)"):
        read_case(list_samples(config.data, "train")[0], config.data)


def test_files_of_a_case_on_different_grids_are_errors(tmp_path):
    rng = np.random.default_rng(4)
    shifted = AFFINE.copy()
    shifted[0, 3] += 1.0
    _case(tmp_path / "train" / "shape", 4, **{"flair.nii.gz": (rng.normal(size=(6, 5, 3)).astype(np.float32), AFFINE)})
    _case(tmp_path / "train" / "affine", 5, **{"seg.nii.gz": (np.zeros(SHAPE, np.uint8), shifted)})
    config = _config(tmp_path, tmp_path)
    by_name = {c.name: c for c in list_samples(config.data, "train")}
    with pytest.raises(SegtrainError, match=r"flair\.nii\.gz: shape \(6, 5, 3\) differs from t1\.nii\.gz \(6, 5, 4\)"):
        read_case(by_name["shape"], config.data)
    with pytest.raises(SegtrainError, match=r"seg\.nii\.gz: affine differs from t1\.nii\.gz .*by up to 1"):
        read_case(by_name["affine"], config.data)


def test_check_dataset_reports_missing_files_bad_labels_and_counts(tmp_path):
    good = np.zeros(SHAPE, np.uint8)
    good[:2] = 1
    good[0, 0, 0] = 2
    _case(tmp_path / "train" / "good", 6, label=good)
    bad = good.astype(np.float32)
    bad[3, 3, 3] = 0.25
    _case(tmp_path / "train" / "bad_label", 7, label=bad)
    _case(tmp_path / "train" / "no_mask", 8)
    (tmp_path / "train" / "no_mask" / "brain.nii.gz").unlink()
    report = check_dataset(_config(tmp_path, tmp_path), "train")
    assert report.num_samples == 3 and report.num_ok == 1
    assert any("no_mask/brain.nii.gz: file of case no_mask is missing" in p for p in report.problems)
    assert any("bad_label/seg.nii.gz: label file has 1 non-integer value" in p for p in report.problems)
    np.testing.assert_array_equal(report.class_pixels, np.bincount(good.ravel(), minlength=3))


def test_cases_from_a_list_file_and_file_names_with_the_case_name(tmp_path):
    _case(tmp_path / "cases" / "p1", 9, **{"p1_seg.nii.gz": (np.zeros(SHAPE, np.uint8), AFFINE)})
    (tmp_path / "val.txt").write_text("cases/p1\n")
    config = _config(tmp_path, tmp_path, label="{name}_seg.nii.gz")
    [case] = list_samples(config.data, "val")
    assert case.label == tmp_path / "cases" / "p1" / "p1_seg.nii.gz"
    assert read_case(case, config.data).label.sum() == 0


@pytest.mark.parametrize("data, message", [
    ({"channels": None}, "data.channels' must list the channel files"),
    ({"channels": 2}, "data.channels' must list the channel files"),
    ({"label": None}, "data.label' must name the label file"),
    ({"patch": [8, 8]}, "data.patch' must be 3 positive size"),
    ({"normalize": "minmax"}, "data.normalize': must be one of zscore, none"),
])
def test_config_errors(tmp_path, data, message):
    with pytest.raises(SegtrainError, match=message):
        _config(tmp_path, tmp_path, **data)


def test_model_statistics_follow_the_channels(tmp_path):
    config = _config(tmp_path, tmp_path)
    assert config.model.mean is None and config.model.std is None  # inputs arrive z-scored
    with pytest.raises(SegtrainError, match=r"model\.mean' has 3 values but the input has 2 channel"):
        _config(tmp_path, tmp_path, model={"mean": [0, 0, 0]})
    assert _config(tmp_path, tmp_path, model={"mean": [1, 2], "std": [3]}).model.mean == [1, 2]


def test_a_real_brats_case():
    root = shared_data("brats3d")
    config = from_dict({"data": {
        "format": "nifti", "root": str(root), "num_classes": 5, "classes": ["bg", "necrosis", "edema", "non_enhancing", "enhancing"],
        "channels": ["Flair_subtrMeanDivStd.nii.gz", "T1c_subtrMeanDivStd.nii.gz"], "label": "OTMultiClass.nii.gz",
        "mask": "brainmask.nii.gz", "train_split": "train", "val_split": "validation", "normalize": "none"}})
    [case] = list_samples(config.data, "val")
    vol = read_case(case, config.data)
    flair = nib.load(str(case.channels[0]))
    assert vol.image.shape == (240, 240, 155, 2)
    np.testing.assert_array_equal(vol.image[..., 0], flair.get_fdata(dtype=np.float32))
    np.testing.assert_allclose(vol.affine, flair.affine)
    raw = nib.load(str(case.label)).get_fdata(dtype=np.float32)
    np.testing.assert_array_equal(vol.label, raw.astype(np.uint8))
    assert set(np.unique(vol.label)) <= {0, 1, 2, 3, 4} and (vol.label > 0).any()
    assert 0.05 < vol.mask.mean() < 0.95  # a brain mask, not the whole volume


def test_a_written_prediction_keeps_affine_header_and_labels(tmp_path):
    from segtrain.data.formats.nifti import write_label_volume

    _case(tmp_path / "train" / "a", 10)
    config = _config(tmp_path, tmp_path)
    vol = read_case(list_samples(config.data, "train")[0], config.data)  # a float32 header, as BRATS
    pred = np.random.default_rng(10).integers(0, 3, SHAPE).astype(np.int64)
    out = write_label_volume(tmp_path / "pred" / "a.nii.gz", pred, vol.affine, vol.header)
    assert [p.name for p in out.parent.iterdir()] == ["a.nii.gz"]  # no temporary left
    back = nib.load(str(out))
    assert back.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), pred)
    np.testing.assert_allclose(back.affine, AFFINE)
    assert back.header.get_zooms() == vol.header.get_zooms()


@pytest.mark.parametrize("values, message", [
    (np.array([0.0, 300.0], np.float32), r"lab\.nii: label values range 0\.\.300, outside 0\.\.255"),
    (np.array([0, -1], np.int16), r"lab\.nii: label values range -1\.\.0, outside 0\.\.255"),
    (np.array([1.0, np.nan], np.float32), r"lab\.nii: label file has 1 non-integer value\(s\) \(e\.g\. nan\)"),
    (np.array([0.5, 700.0], np.float64), r"lab\.nii: label file has 1 non-integer value\(s\) \(e\.g\. 0\.5\)"),
])
def test_label_values_that_are_no_class_indices(tmp_path, values, message):
    from pathlib import Path

    from segtrain.data.formats.nifti import labels_to_classes

    config = _config(tmp_path, tmp_path)
    with pytest.raises(SegtrainError, match=message):
        labels_to_classes(values, Path("lab.nii"), config.data)
    np.testing.assert_array_equal(labels_to_classes(np.array([2.0, 255.0, 0.0]), Path("lab.nii"), config.data), [2, 255, 0])
