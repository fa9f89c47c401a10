"""Series scored as TSSB scores them: segment covering and change-point F1 from label sequences,
against hand-computed cases and a NumPy reference written here (the benchmark's set-based
definitions), and through `segtrain evaluate --pred-dir`."""

import numpy as np
import pytest

from segtrain.config import from_dict
from segtrain.evaluation import evaluate
from segtrain.series_scores import change_points, covering, f1_score, margin_steps


def reference_covering(true_cps, pred_cps, n):
    """TSSB's definition on explicit sets: sum over true segments of |R| * max Jaccard(R, R'), over n."""
    def partition(cps):
        bounds = [0, *sorted(set(cps) - {0}), n]
        return [set(range(a, b)) for a, b in zip(bounds, bounds[1:])]
    predicted = partition(pred_cps)
    return sum(len(r) * max(len(r & p) / len(r | p) for p in predicted) for r in partition(true_cps)) / n


def reference_f1(true_cps, pred_cps, margin):
    """TSSB's F1: 0 added to both sets; each true point takes its nearest unused prediction within the margin."""
    truth, left = {0, *true_cps}, {0, *pred_cps}
    predicted, hits = len(left), 0
    for tau in sorted(truth):
        near = sorted((abs(tau - x), x) for x in left if abs(tau - x) <= margin)
        if near:
            left.remove(near[0][1])
            hits += 1
    p, r = hits / predicted, hits / len(truth)
    return 2 * p * r / (p + r)


def test_by_hand():
    assert change_points(np.array([0, 0, 1, 1, 1, 2])).tolist() == [2, 5]
    assert change_points(np.array([3, 3, 3])).tolist() == []
    # Truth [0,10) [10,20) [20,45), prediction [0,10) [10,45): 10*1 + 10*(10/35) + 25*(25/35), over 45.
    assert covering([10, 20], [10], 45) == pytest.approx((10 + 100 / 35 + 625 / 35) / 45)
    assert covering([10, 20], [10, 20], 45) == 1.0
    assert covering([], [], 7) == 1.0
    # TSSB's docstring case: covering of {1,2,3},{4,5,6} by {1,2,3},{4,5},{6} is 5/6 (here 0-based, n = 6).
    assert covering([3], [3, 5], 6) == pytest.approx(5 / 6)
    # Truth {0, 10, 20}, prediction {0, 12}, margin 5: 0 and 10 found; P = 2/2, R = 2/3, F1 = 0.8.
    assert f1_score([10, 20], [12], 5) == pytest.approx(0.8)
    assert f1_score([10, 20], [12], 1) == pytest.approx(2 * 0.5 * (1 / 3) / (0.5 + 1 / 3))  # only 0 matches
    assert f1_score([10], [8, 9, 11], 5) == pytest.approx(2 * 0.5 * 1 / 1.5)  # one of three near ones counts
    assert f1_score([], [], 5) == 1.0  # no change point, none predicted: the benchmark scores 1
    assert margin_steps(3999, 0.01) == 39  # int(0.01 * T), as the benchmark's scripts


def test_against_the_numpy_reference_on_random_segmentations():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(2, 300))
        true_cps = sorted(set(rng.integers(1, n, rng.integers(0, 6)).tolist()))
        pred_cps = sorted(set(rng.integers(1, n, rng.integers(0, 8)).tolist()))
        margin = int(rng.integers(0, 20))
        assert covering(true_cps, pred_cps, n) == pytest.approx(reference_covering(true_cps, pred_cps, n), abs=1e-12)
        assert f1_score(true_cps, pred_cps, margin) == pytest.approx(reference_f1(true_cps, pred_cps, margin), abs=1e-12)


def test_evaluate_reports_them_for_series(tmp_path, capsys):
    np.savetxt(tmp_path / "A.txt", np.sin(np.arange(200.0)))
    np.savetxt(tmp_path / "B.txt", np.cos(np.arange(100.0)))
    (tmp_path / "desc.txt").write_text("A,4,50,120\nB,4,30\n")
    pred = tmp_path / "pred"
    pred.mkdir()
    # A: segments 0/1/2 at 50 and 120, predicted at 51 and 150 with other indices (indices do not matter);
    # B: no change predicted.
    np.save(pred / "A.npy", np.repeat(np.array([4, 1, 7], np.uint8), [51, 99, 50]))
    np.save(pred / "B.npy", np.zeros(100, np.uint8))
    config = from_dict({"data": {"format": "series", "root": str(tmp_path), "num_classes": 9, "label": "desc.txt",
                                 "classes": [f"s{i}" for i in range(9)], "train_split": ".", "val_split": "."},
                        "output_dir": str(tmp_path / "run")})
    metrics = evaluate(config, "val", pred_dir=pred)
    a = (reference_covering([50, 120], [51, 150], 200), reference_f1([50, 120], [51, 150], 2))
    b = (reference_covering([30], [], 100), reference_f1([30], [], 1))
    assert [c["covering"] for c in metrics["per_case"]] == pytest.approx([a[0], b[0]])
    assert [c["change_point_f1"] for c in metrics["per_case"]] == pytest.approx([a[1], b[1]])
    assert metrics["series"]["covering"] == pytest.approx((a[0] + b[0]) / 2)
    assert metrics["series"]["change_point_f1"] == pytest.approx((a[1] + b[1]) / 2)
    assert a[1] == pytest.approx(2 * (2 / 3) * (2 / 3) / (4 / 3))  # 0 and 50 found of {0, 50, 120}; 2 of {0, 51, 150}
    assert "segment covering" in capsys.readouterr().out
