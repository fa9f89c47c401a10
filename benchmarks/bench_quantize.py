"""Val mIoU and CPU milliseconds per image of one checkpoint in every export format and quantization.

Each row is one (format, quantize) export of the checkpoint, scored in every runtime its format
names through the pipeline of ``segtrain export``'s check of a quantized file
(``segtrain.export.quality``): each val image resized to the export size, run, its mask scored
by ``segtrain.evaluation.evaluate``. Keras (``predict_on_batch``) is the reference row. ms/image
is measured apart, in interleaved rounds (every runtime once per round on one image), so the
load of a shared CPU falls on every row alike. int8 rows are calibrated on ``--calibration``
(default: the config's val split, as ``segtrain export``). A row that does not convert says why.

    python benchmarks/bench_quantize.py --checkpoint runs/x/checkpoints/best.keras \
        [--config runs/x/config.yaml] [--name camvid_unet] [--calibration train] [--calibration-images 100]

Writes benchmarks/results/quantize_<name>.json and .md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from segtrain.config import load_config  # noqa: E402
from segtrain.errors import SegtrainError  # noqa: E402
from segtrain.export import EXPORT_FORMATS, calibration_paths, export_model  # noqa: E402
from segtrain.export.images import read_resized  # noqa: E402
from segtrain.export.quality import score_runtimes, score_split  # noqa: E402
from segtrain.machine import environment  # noqa: E402
from segtrain.export.shapes import default_size, export_shape  # noqa: E402
from segtrain.inference import load_checkpoint, run_config_path  # noqa: E402
from segtrain.io_utils import write_json  # noqa: E402

# (format, quantize): every export the table offers, float first so each quantized row has its reference.
ROWS = [("tflite", "none"), ("tflite", "fp16"), ("tflite", "int8"), ("onnx", "none"), ("onnx", "int8"), ("openvino", "none")]
RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--config", help="experiment YAML (default: the checkpoint's run config.yaml)")
    parser.add_argument("--name", help="results file suffix (default: the run folder's name)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--calibration", default="val", help="int8 calibration: a split of the config or a folder")
    parser.add_argument("--calibration-images", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=30, help="interleaved timing rounds (one call per runtime each)")
    args = parser.parse_args()
    config_path = args.config or run_config_path(args.checkpoint)
    if config_path is None:
        sys.exit("error: --config: the checkpoint is not in a run folder with a config.yaml")
    config = load_config(config_path)
    name = args.name or Path(args.checkpoint).resolve().parent.parent.name
    model = load_checkpoint(args.checkpoint)
    size, hint = (None, "") if all(model.input_shape[1:-1]) else default_size(args.checkpoint)
    shape = export_shape(model, size, 1, hint)
    calibration, described = calibration_paths(args.calibration, config, args.calibration_images)

    rows, runs = [], []  # runs: (row, x -> logits) for the interleaved timing
    with tempfile.TemporaryDirectory(prefix="bench-quantize-") as tmp:
        work = Path(tmp)
        miou, ms = score_split(model.predict_on_batch, config, args.split, shape[1:-1], work / "keras")
        rows.append({"format": "keras", "quantize": "none", "runtime": "keras", "miou": miou, "ms_per_image_split_pass": ms})
        runs.append((rows[-1], model.predict_on_batch))
        print(f"keras: mIoU {miou:.4f}, {ms:.2f} ms/image", flush=True)
        for fmt, quantize in ROWS:
            options = {} if quantize == "none" else {"quantize": quantize}
            if quantize == "int8":
                options.update(calibration=calibration, calibration_images=args.calibration_images)
            path = work / f"{fmt}-{quantize}{EXPORT_FORMATS[fmt].suffix}"
            try:
                export_model(model, fmt, path, size=shape[1:-1], **options)
            except SegtrainError as err:
                rows.append({"format": fmt, "quantize": quantize, "runtime": None, "error": str(err)})
                print(f"{fmt} {quantize}: {err}", flush=True)
                continue
            size_mb = sum(p.stat().st_size for p in work.glob(path.stem + ".*")) / 1e6
            runners = EXPORT_FORMATS[fmt].runners(path).run
            for scored in score_runtimes(path, fmt, False, config, args.split, work)[0]:
                rows.append({"format": fmt, "quantize": quantize, "runtime": scored.name, "miou": scored.miou,
                             "ms_per_image_split_pass": scored.ms_per_image, "file_mb": round(size_mb, 2)})
                runs.append((rows[-1], runners[scored.name]))
                print(f"{fmt} {quantize} {scored.name}: mIoU {scored.miou:.4f}, {scored.ms_per_image:.2f} ms/image", flush=True)
        timed_rounds(runs, read_resized(calibration[0], shape[1:-1], "--calibration")[None].astype(np.float32), args.rounds)

    samples = f"the {args.split} split of {config_path}"
    result = {**environment(" ".join([Path(sys.argv[0]).name, *sys.argv[1:]])), "checkpoint": str(args.checkpoint),
              "export_size": list(shape[1:-1]), "split": samples, "calibration": described, "rounds": args.rounds, "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    write_json(RESULTS / f"quantize_{name}.json", result)
    (RESULTS / f"quantize_{name}.md").write_text(markdown(result), encoding="utf-8")
    print(f"wrote {RESULTS / f'quantize_{name}.json'} and .md")


def timed_rounds(runs: list, x: np.ndarray, rounds: int) -> None:
    """Set each row's ``ms_per_image``: the median over ``rounds`` rounds, each timing every runtime once on
    ``x`` in turn, so that a shared CPU's changing load falls on all rows alike."""
    times = [[] for _ in runs]
    for _ in range(rounds + 1):  # the first round warms up
        for i, (_, run) in enumerate(runs):
            start = time.perf_counter()
            run(x)
            times[i].append((time.perf_counter() - start) * 1000)
    for (row, _), t in zip(runs, times):
        row["ms_per_image"] = float(np.median(t[1:]))


def markdown(result: dict) -> str:
    """The rows as a table, Keras first, with the mIoU change and speed-up against Keras and the float export."""
    rows = result["rows"]
    keras_row = rows[0]
    floats = {(r["format"], r["runtime"]): r["ms_per_image"] for r in rows if r["quantize"] == "none" and r.get("runtime")}
    lines = [f"# Export formats and quantization: val mIoU and CPU speed ({Path(result['checkpoint']).name})", "",
             f"`{result['command']}` on {result['date']}, {result['cpu']['model']} ({result['cpu'].get('logical_cores')} logical cores "
             f"shared), export size {result['export_size'][0]}x{result['export_size'][1]}, {result['split']}; "
             f"int8 calibrated on {result['calibration']}. ms/image: median of {result['rounds']} interleaved rounds "
             f"(each runtime once per round on the same image, batch 1); "
             f"load average (1, 5, 15 min) at the end: {result['load_average']}.", "",
             "| format | quantize | runtime | file MB | val mIoU | vs Keras | ms/image | speed-up vs float export |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        if r.get("error"):
            lines.append(f"| {r['format']} | {r['quantize']} | - | - | does not convert | | | {r['error']} |")
            continue
        base = floats.get((r["format"], r["runtime"]))
        speedup = f"{base / r['ms_per_image']:.2f}x" if base and r["quantize"] != "none" else ""
        delta = "" if r is keras_row else f"{round(r['miou'] - keras_row['miou'], 4) + 0.0:+.4f}"
        lines.append(f"| {r['format']} | {r['quantize']} | {r['runtime']} | {r.get('file_mb', '')} | {r['miou']:.4f} | "
                     f"{delta} | {r['ms_per_image']:.2f} | {speedup} |")
    versions = ", ".join(f"{k} {v}" for k, v in result["versions"].items() if v)
    return "\n".join(lines + ["", f"Versions: {versions}.", ""])


if __name__ == "__main__":
    main()
