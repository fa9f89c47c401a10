"""Segmentations in time scored as the time-series segmentation benchmark (TSSB) scores them.

In TSSB a series' label is the index of its segment, so class k means "the k-th segment" and
nothing shared between series: per-class IoU says little. The benchmark's papers (Ermshaus,
Schäfer & Leser, ClaSP, 2023; the TSSB repository ermshaua/time-series-segmentation-benchmark,
``tssb/evaluation.py``, after van den Burg & Williams' TCPDBench) score the change points
instead:

- **segment covering** (Arbeláez et al. 2011, eq. 8): each true segment weighted by its length
  times its best Jaccard index with a predicted segment, summed and divided by the length;
- **change-point F1** with a margin: a true change point is found when a predicted one lies within
  ``margin`` steps, each predicted one matching at most one (nearest first); 0 is added to both
  sets as the benchmark does, so a series with no change point predicted scores 2R/(1+R).
  The benchmark's scripts use a margin of 1 % of the series length (``int(0.01 * T)``).

Change points here come from label sequences: every step whose label differs from the one before.
Each series is scored alone, and a split reports the mean over its series (as TSSB does).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def change_points(labels: np.ndarray) -> np.ndarray:
    """The steps (1..T-1) whose label differs from the previous step's."""
    labels = np.asarray(labels).reshape(-1)
    return np.flatnonzero(labels[1:] != labels[:-1]) + 1


def covering(true_cps: Sequence[int], pred_cps: Sequence[int], length: int) -> float:
    """Segment covering of the true segmentation by the predicted one (1.0: the same segments)."""
    true_bounds = np.unique(np.concatenate([[0], np.asarray(true_cps, dtype=np.int64), [length]]))
    pred_bounds = np.unique(np.concatenate([[0], np.asarray(pred_cps, dtype=np.int64), [length]]))
    ts, te = true_bounds[:-1, None], true_bounds[1:, None]  # true segments [ts, te) down, predicted across
    ps, pe = pred_bounds[None, :-1], pred_bounds[None, 1:]
    overlap = np.clip(np.minimum(te, pe) - np.maximum(ts, ps), 0, None)
    jaccard = overlap / ((te - ts) + (pe - ps) - overlap)
    return float(np.sum((te - ts)[:, 0] * jaccard.max(axis=1)) / length)


def f1_score(true_cps: Sequence[int], pred_cps: Sequence[int], margin: int) -> float:
    """Change-point F1: precision over predicted points, recall over true ones, 0 added to both."""
    truth = sorted({0, *map(int, true_cps)})
    left = {0, *map(int, pred_cps)}
    predicted = len(left)
    found = 0
    for tau in truth:
        near = [(abs(tau - x), x) for x in left if abs(tau - x) <= margin]
        if near:
            left.remove(min(near)[1])
            found += 1
    precision, recall = found / predicted, found / len(truth)
    return 2 * precision * recall / (precision + recall)


def margin_steps(length: int, fraction: float) -> int:
    """The benchmark's margin: ``int(fraction * length)`` steps."""
    return int(fraction * length)


def series_scores(truth: np.ndarray, prediction: np.ndarray, margin_fraction: float) -> dict:
    """One series' covering and F1 from its true and predicted label sequences (void steps keep their place)."""
    length = int(np.asarray(truth).size)
    true_cps, pred_cps = change_points(truth), change_points(prediction)
    return {"covering": covering(true_cps, pred_cps, length),
            "change_point_f1": f1_score(true_cps, pred_cps, margin_steps(length, margin_fraction)),
            "true_change_points": true_cps.tolist(), "predicted_change_points": len(pred_cps), "steps": length}


def split_summary(cases: list[dict], margin_fraction: float) -> dict:
    """The mean covering and F1 over a split's series (the benchmark's figure)."""
    return {"covering": float(np.mean([c["covering"] for c in cases])),
            "change_point_f1": float(np.mean([c["change_point_f1"] for c in cases])),
            "margin_fraction": margin_fraction, "series": len(cases)}


def format_summary(summary: dict) -> str:
    return (f"series scored as TSSB scores them (mean of {summary['series']}): segment covering "
            f"{summary['covering']:.3f}, change-point F1 {summary['change_point_f1']:.3f} "
            f"(margin {100 * summary['margin_fraction']:g} % of each series' length)")
