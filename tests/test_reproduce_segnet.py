"""Smoke test of benchmarks/reproduce_segnet_camvid.py, so the reproduction script cannot silently rot."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

from segtrain.errors import SegtrainError

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "reproduce_segnet_camvid.py"
DECODERS = ("unpool", "transposed", "resize_conv", "bilinear")
# The SegNet paper's Table 1 figures, typed in here independently of the script.
PAPER_ROWS = {"max-unpooling": (82.7, 62.0, 47.7), "learned deconvolution": (81.7, 62.4, 47.3),
              "Bilinear upsampling": (77.9, 61.1, 43.3)}


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("reproduce_segnet_camvid", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _rows(table: str) -> dict[str, list[str]]:
    """First cell -> the other cells, for every markdown table row."""
    rows = {}
    for line in table.splitlines():
        if line.startswith("| ") and not line.startswith("| decoder"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


def test_smoke_budget_writes_the_table(script, tmp_path):
    out = tmp_path / "table.md"
    argv = ["--root", str(tmp_path / "sample"), "--budget", "smoke", "--work-dir", str(tmp_path / "work"),
            "--out", str(out)]
    assert script.main(argv) == 0
    table = out.read_text(encoding="utf-8")
    rows = _rows(table)
    for decoder in DECODERS:
        cells = rows[f"segtrain {decoder}"]
        values = [float(c) for c in cells[:3]]
        assert all(0.0 <= v <= 100.0 for v in values), (decoder, values)
        # the row shows the evaluation of the best checkpoint, in %, not some other number
        report = json.loads((tmp_path / "work" / decoder / "eval_val" / "metrics.json").read_text())
        expected = [100 * report["pixel_accuracy"], 100 * report["mean_accuracy"], 100 * report["miou"]]
        assert values == pytest.approx(expected, abs=0.051)
        assert report["source"].endswith("best.keras")
        assert report["options"]["resize"] == [32, 32]  # fed at the training size; labels stay 64x64
        assert report["num_pixels"] > 20 * 32 * 32  # counted on the native labels, not the resized ones
        assert int(cells[3].replace(",", "")) > 0
        history = json.loads((tmp_path / "work" / decoder / "checkpoints" / "state.json").read_text())["history"]
        rate, wait = re.fullmatch(r"([\d.]+) \((\d+)%\)", cells[5]).groups()  # the one epoch's log row, as logged
        assert float(rate) == pytest.approx(history[0]["images_per_second"], abs=0.051) and float(rate) > 0
        assert int(wait) == round(100 * history[0]["data_wait"])
        assert "smoke / val (20 images)" in cells[6]
    for name, figures in PAPER_ROWS.items():
        (cells,) = [v for k, v in rows.items() if name in k]
        assert tuple(float(c) for c in cells[:3]) == figures
    assert "no paper row" in rows["paper: resize_conv"][0]
    assert re.search(r"Command: `python benchmarks/reproduce_segnet_camvid.py --root \S+ --budget smoke", table)
    assert "3 steps at 32x32" in table


def test_cpu_budget_keeps_the_paper_recipe(script, tmp_path):
    config = script.build_config("unpool", script.BUDGETS["cpu"], str(tmp_path), tmp_path / "work", [])
    train = config.train
    assert (train.batch_size, train.optimizer.name, train.optimizer.learning_rate, train.optimizer.momentum) == (12, "sgd", 0.1, 0.9)
    assert train.class_weights == "median_frequency" and config.model.width == 64
    assert config.data.resize == [90, 120] and config.data.ignore_index == 11
    assert config.output_dir == str(tmp_path / "work" / "unpool")
    full = script.build_config("bilinear", script.BUDGETS["full"], str(tmp_path), tmp_path, ["train.epochs=2"])
    assert full.data.resize is None and full.train.mixed_precision == "mixed_bfloat16" and full.train.epochs == 2


def test_unknown_decoder_is_a_user_error(script, tmp_path):
    with pytest.raises(SegtrainError, match="--decoders"):
        script.main(["--root", str(tmp_path), "--decoders", "unpool,deconv"])


def test_gpu_camvid_script_exits_non_zero_when_a_training_run_fails(tmp_path):
    """benchmarks/gpu_camvid.sh runs its decoders side by side; a failed (or timed-out) run is its exit status.
    A stand-in python3 fails the `transposed` run with 3, has every package and runs other `-c` code in this Python."""
    import os
    import subprocess

    repo = Path(__file__).resolve().parents[1]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "python3"
    fake.write_text(f'#!/bin/bash\n[[ "$1 $2" == "-c import"* ]] && exit 0\n[ "$1" = -c ] && exec {sys.executable} "$@"\n'
                    'echo "run $*"; [[ " $* " == *" --decoders transposed "* ]] && exit 3; exit 0\n')
    fake.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", OUT=str(tmp_path / "out"))

    def run(decoders):
        return subprocess.run(["bash", "benchmarks/gpu_camvid.sh"], cwd=repo, env={**env, "DECODERS": decoders},
                              capture_output=True, text=True, timeout=60)

    done = run("unpool transposed")
    assert done.returncode == 3, done.stdout + done.stderr
    assert "the transposed run failed (exit 3" in done.stderr and "unpool run failed" not in done.stderr
    assert run("unpool bilinear").returncode == 0


def test_recipe_budget_trains_the_cpu_recipe_config_once_per_seed(script, tmp_path):
    config = script.build_config("seed1", script.BUDGETS["recipe"], str(tmp_path), tmp_path / "work", [], seed=1)
    assert config.model.name == "unet" and config.train.seed == 1
    assert config.train.time_budget is not None and config.train.time_budget.minutes == 60
    assert config.data.crop == [128, 160] and config.output_dir == str(tmp_path / "work" / "seed1")


def test_include_adds_an_earlier_tables_segtrain_rows_with_their_file(script, tmp_path):
    earlier = tmp_path / "cpu.md"
    earlier.write_text("| decoder | global acc | class-avg acc | mIoU | params | training time | budget / split |\n"
                       "|---|---|---|---|---|---|---|\n"
                       "| segtrain unpool | 41.8 | 39.5 | 18.0 | 1,417,099 | 20.8 min | cpu / val (101 images) |\n"
                       "| paper: SegNet-Basic | 82.7 | 62.0 | 47.7 | n/a | n/a | paper |\n")
    (row,) = script.included_rows(earlier)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:4] == ["segtrain unpool", "41.8", "39.5", "18.0"] and cells[6] == "n/a"
    assert cells[7] == f"cpu / val (101 images), from `{earlier}`"
    with pytest.raises(SegtrainError, match="no such file"):
        script.included_rows(tmp_path / "missing.md")
    (tmp_path / "empty.md").write_text("| paper: x | 1 |\n")
    with pytest.raises(SegtrainError, match=re.escape("no '| segtrain ...' rows")):
        script.included_rows(tmp_path / "empty.md")
