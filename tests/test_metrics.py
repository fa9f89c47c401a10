"""segtrain.metrics against an independent per-pixel / per-class NumPy oracle."""

import math
import subprocess
import sys

import numpy as np
import pytest

from conftest import need_module
from segtrain.errors import SegtrainError
from segtrain.metrics import ConfusionMatrix, compute_metrics, confusion_matrix, format_table


def oracle_matrix(gt, pred, num_classes, void=255):
    """Count cell by cell with explicit masks (slow, obviously right)."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    for i in range(num_classes):
        for j in range(num_classes):
            cm[i, j] = np.count_nonzero((gt == i) & (pred == j) & (gt != void))
    return cm


def oracle_report(gt, pred, num_classes, void=255):
    """mmsegmentation IoUMetric rules written out class by class from the raw labels."""
    valid = gt != void
    ious, accs, freqs, dices = [], [], [], []
    for c in range(num_classes):
        inter = np.count_nonzero((gt == c) & (pred == c) & valid)
        in_gt = np.count_nonzero((gt == c) & valid)
        in_pred = np.count_nonzero((pred == c) & valid)
        union = in_gt + in_pred - inter
        ious.append(inter / union if union else math.nan)
        dices.append(2 * inter / (in_gt + in_pred) if in_gt + in_pred else math.nan)
        accs.append(inter / in_gt if in_gt else math.nan)
        freqs.append(in_gt / np.count_nonzero(valid))
    present = [x for x in ious if not math.isnan(x)]
    present_acc = [x for x in accs if not math.isnan(x)]
    return {
        "iou": ious,
        "acc": accs,
        "dice": dices,
        "miou": sum(present) / len(present),
        "mean_accuracy": sum(present_acc) / len(present_acc),
        "pixel_accuracy": np.count_nonzero((gt == pred) & valid) / np.count_nonzero(valid),
        "fwiou": sum(f * i for f, i in zip(freqs, ious) if f > 0),
    }


@pytest.fixture
def labels():
    """6 classes: class 4 absent everywhere, class 5 only ever predicted, ~10 % void."""
    rng = np.random.default_rng(7)
    gt = rng.choice([0, 1, 2, 3], size=(5, 23, 31)).astype(np.uint8)
    pred = np.where(rng.random(gt.shape) < 0.6, gt, rng.choice([0, 1, 2, 3, 5], size=gt.shape)).astype(np.uint8)
    gt[rng.random(gt.shape) < 0.1] = 255
    return gt, pred


def test_matrix_matches_oracle(labels):
    gt, pred = labels
    np.testing.assert_array_equal(confusion_matrix(gt, pred, 6), oracle_matrix(gt, pred, 6))


def test_void_pixels_excluded_whatever_is_predicted(labels):
    gt, pred = labels
    other = pred.copy()
    other[gt == 255] = (other[gt == 255] + 1) % 6
    np.testing.assert_array_equal(confusion_matrix(gt, pred, 6), confusion_matrix(gt, other, 6))
    assert confusion_matrix(gt, pred, 6).sum() == np.count_nonzero(gt != 255)


def test_report_matches_oracle(labels):
    gt, pred = labels
    got = compute_metrics(confusion_matrix(gt, pred, 6))
    want = oracle_report(gt, pred, 6)
    np.testing.assert_allclose(got["per_class_iou"], want["iou"], rtol=1e-12)
    np.testing.assert_allclose(got["per_class_accuracy"], want["acc"], rtol=1e-12)
    np.testing.assert_allclose(got["per_class_dice"], want["dice"], rtol=1e-12)
    for key in ("miou", "mean_accuracy", "pixel_accuracy", "fwiou"):
        assert got[key] == pytest.approx(want[key], rel=1e-12), key
    assert math.isnan(got["per_class_iou"][4])  # absent everywhere -> NaN, not 0 or 1
    assert got["per_class_iou"][5] == 0.0  # only predicted -> 0, and it counts in the mean
    assert math.isnan(got["per_class_accuracy"][5])
    assert got["miou"] == pytest.approx(np.mean([want["iou"][c] for c in (0, 1, 2, 3, 5)]))


def test_matches_sklearn(labels):
    sklearn_metrics = need_module("sklearn.metrics", "dev")
    gt, pred = labels
    valid = gt != 255
    want = sklearn_metrics.confusion_matrix(gt[valid], pred[valid], labels=list(range(6)))
    np.testing.assert_array_equal(confusion_matrix(gt, pred, 6), want)


def test_dice_fscore_precision_hand_case():
    # rows = ground truth. Class 2: nowhere; class 3: predicted once, never in the ground truth.
    cm = np.array([[3, 1, 0, 0],
                   [2, 5, 0, 1],
                   [0, 0, 0, 0],
                   [0, 0, 0, 0]])
    # gt pixels 4, 8, 0, 0; predicted 5, 6, 0, 1; TP 3, 5, 0, 0.
    f1 = compute_metrics(cm)
    np.testing.assert_allclose(f1["per_class_dice"], [6 / 9, 10 / 14, np.nan, 0.0])
    np.testing.assert_allclose(f1["per_class_fscore"], f1["per_class_dice"])  # F1 is Dice
    np.testing.assert_allclose(f1["per_class_precision"], [3 / 5, 5 / 6, np.nan, 0.0])
    assert f1["mdice"] == pytest.approx((6 / 9 + 10 / 14 + 0.0) / 3)
    f2 = ConfusionMatrix(4)
    f2.matrix[:] = cm
    f2 = f2.metrics(beta=2.0)  # (1 + 4) TP / (4 gt + pred): recall counts four times as much
    np.testing.assert_allclose(f2["per_class_fscore"], [15 / 21, 25 / 38, np.nan, 0.0])
    assert f2["mfscore"] == pytest.approx((15 / 21 + 25 / 38) / 3)
    assert f2["fscore_beta"] == 2.0
    with pytest.raises(SegtrainError, match="beta must be positive"):
        compute_metrics(cm, beta=0)


def test_split_wide_sum_not_per_image_mean():
    # Image A: 100 px of class 1, all right. Image B: 2 px of class 1, both predicted 0,
    # plus 2 px of class 0, right. Class 1 per image: IoU 1.0 and 0.0 -> mean 0.5;
    # over the split: 100 / (102 + 0 predicted extra) = 100/102.
    gt_a = np.ones((10, 10), np.uint8)
    gt_b = np.array([[1, 1, 0, 0]], np.uint8)
    pred_b = np.array([[0, 0, 0, 0]], np.uint8)
    acc = ConfusionMatrix(2)
    acc.update(gt_a, gt_a).update(gt_b, pred_b)
    got = acc.metrics()
    split_iou1 = 100 / 102
    split_iou0 = 2 / 4  # class 0: 2 right, 2 more predicted 0 that are class 1
    per_image_iou1 = (1.0 + 0.0) / 2
    assert got["per_class_iou"][1] == pytest.approx(split_iou1)
    assert got["miou"] == pytest.approx((split_iou0 + split_iou1) / 2)
    assert abs(got["per_class_iou"][1] - per_image_iou1) > 0.4


def test_accumulator_and_merge_equal_one_matrix(labels):
    gt, pred = labels
    whole = confusion_matrix(gt, pred, 6)
    first, second = ConfusionMatrix(6), ConfusionMatrix(6)
    for i in range(3):
        first.update(gt[i], pred[i])
    second.update(gt[3:], pred[3:])  # a batch in one call
    np.testing.assert_array_equal(first.merge(second).result(), whole)
    first.reset()
    assert first.result().sum() == 0


def test_rejects_labels_out_of_range():
    gt = np.array([[0, 1], [6, 255]], np.uint8)
    with pytest.raises(SegtrainError, match="ground truth contains label 6 but num_classes is 6"):
        confusion_matrix(gt, np.zeros_like(gt), 6)
    ok_gt = np.array([[0, 255]], np.uint8)
    # a bad prediction on a void pixel is ignored; on a valid pixel it is refused
    assert confusion_matrix(ok_gt, np.array([[0, 200]], np.uint8), 6).sum() == 1
    with pytest.raises(SegtrainError, match="prediction contains label 9"):
        confusion_matrix(ok_gt, np.array([[9, 0]], np.uint8), 6)
    with pytest.raises(SegtrainError, match="shape"):
        confusion_matrix(ok_gt, np.zeros((2, 2), np.uint8), 6)


def test_wide_integer_labels():
    gt = np.array([0, 2, 2, 255, 1], dtype=np.int64)
    pred = np.array([0, 2, 1, 0, 1], dtype=np.int32)
    np.testing.assert_array_equal(confusion_matrix(gt, pred, 3), oracle_matrix(gt, pred, 3))


def test_empty_split_is_nan():
    got = compute_metrics(np.zeros((3, 3), np.int64))
    assert math.isnan(got["miou"]) and math.isnan(got["pixel_accuracy"]) and math.isnan(got["fwiou"])


def test_table_shows_na_and_names(labels):
    gt, pred = labels
    names = ["bg", "a", "b", "c", "never", "ghost"]
    table = format_table(compute_metrics(confusion_matrix(gt, pred, 6), names), names)
    row = {line.split()[0]: line.split()[1:] for line in table.splitlines() if line.split() and line.split()[0] in names}
    assert row["never"][:2] == ["n/a", "n/a"]
    assert row["ghost"][:3] == ["0.00", "n/a", "0.00"]
    assert row["never"][2] == "n/a"
    assert "mIoU" in table


def test_importable_without_tensorflow_or_the_data_package():
    code = ("import sys, segtrain.metrics; assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules; "
            "assert not [m for m in sys.modules if m.startswith('segtrain.data')], 'metrics imports segtrain.data'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_void_is_one_constant():
    from segtrain.data.formats.palette import VOID as palette_void
    from segtrain.labels import VOID

    assert VOID == palette_void == 255
