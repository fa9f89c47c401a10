"""benchmarks/summarize_run.py: the learning curve, best-epoch IoU and a budget's planned vs actual time."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "summarize_run.py"
LOG = """epoch,step,loss,lr,val_miou,val_pixel_accuracy,val_mean_accuracy,seconds,data_wait,iou_Sky,iou_Pole
1,10,2.0,0.1,,,,30.5,0.0,,
2,20,1.5,0.05,0.40,0.70,0.5,20.0,0.5,0.9,0.1
3,30,1.2,0.02,,,,20.0,0.25,,
4,40,1.0,0.0,0.35,0.72,0.5,19.5,0.0,0.8,0.2
"""


@pytest.fixture(scope="module")
def summarize():
    spec = importlib.util.spec_from_file_location("summarize_run", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.summarize


def test_curve_best_and_final_epochs(summarize, tmp_path):
    (tmp_path / "log.csv").write_text(LOG)
    summary = summarize(tmp_path)
    assert summary["steps"] == 40 and summary["epochs"] == 4
    assert summary["training_minutes"] == pytest.approx(90.0 / 60)
    assert summary["data_wait_minutes"] == pytest.approx((10.0 + 5.0) / 60)
    assert [(p["epoch"], p["val_miou"]) for p in summary["curve"]] == [(2, 0.40), (4, 0.35)]
    assert (summary["best_epoch"], summary["final_epoch"]) == (2, 4)
    assert summary["best_iou"] == {"Sky": 0.9, "Pole": 0.1}
    assert summary["final_iou"] == {"Sky": 0.8, "Pole": 0.2}
    assert "time_budget" not in summary


def test_a_budgeted_run_reports_planned_and_logged_wall_time(summarize, tmp_path):
    (tmp_path / "log.csv").write_text(LOG)
    (tmp_path / "checkpoints").mkdir()
    plan = {"minutes": 2.0, "steps": 40, "planned_seconds": 119.5}
    (tmp_path / "checkpoints" / "state.json").write_text(json.dumps({"time_budget": plan}))
    (tmp_path / "run.log").write_text("2026-12-03 07:00:00 train.time_budget: ended at 114 s of this process "
                                      "(planned 120 s)\n")
    budget = summarize(tmp_path)["time_budget"]
    assert budget["steps"] == 40 and budget["planned_seconds"] == 119.5
    assert budget["ended_seconds"] == 114.0
    assert budget["ended_over_budget"] == pytest.approx(114 / 120)
