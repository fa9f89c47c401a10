"""What ``segtrain export --quantize int8`` prints, on the quick start's own checkpoint.

docs/export.md shows the quantized check's console output as an example. This script makes
that example reproducible: it trains the quick start as the README runs it (``python train.py
--config configs/quickstart.yaml``, into ``--work-dir``) unless ``--checkpoint`` is given, then
runs

    segtrain export --checkpoint CHECKPOINT --format onnx --quantize int8

in a subprocess and keeps its output verbatim, with the figures of the report JSON the export
writes beside the file (mIoU and median ms/image of Keras, the float export and the int8 file in
each runtime, on the val split of the run's config).

    python benchmarks/quantize_example.py [--work-dir /tmp/segtrain_quantize_example] [--checkpoint best.keras] [--format onnx]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from results_file import write_results  # benchmarks/results_file.py

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/segtrain_quantize_example"),
                        help="run folder of the quick start trained here")
    parser.add_argument("--checkpoint", type=Path, help="a .keras checkpoint; default: train the quick start first")
    parser.add_argument("--format", default="onnx", choices=["onnx", "tflite"])
    parser.add_argument("--name", default="quantize_example_quickstart", help="results file stem under benchmarks/results/")
    args = parser.parse_args()
    checkpoint = args.checkpoint
    if checkpoint is None:
        subprocess.run([sys.executable, "train.py", "--config", "configs/quickstart.yaml", "--set", f"output_dir={args.work_dir}"],
                       cwd=REPO, check=True, capture_output=True)
        checkpoint = args.work_dir / "checkpoints" / "best.keras"
    command = ["segtrain", "export", "--checkpoint", str(checkpoint), "--format", args.format, "--quantize", "int8"]
    done = subprocess.run([sys.executable, "-m", "segtrain.cli", *command[1:]], cwd=REPO, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    print("\n".join(lines))
    if done.returncode:
        sys.exit(done.stderr[-2000:])
    suffix = ".onnx" if args.format == "onnx" else ".tflite"
    report = json.loads(checkpoint.with_name(f"{checkpoint.stem}-int8{suffix}.report.json").read_text())
    check = report["check"]
    figures = {"checkpoint": str(checkpoint), "format": args.format, "check": check, "export": report["export"]}
    rows = [f"| keras | | {check['keras']['miou']:.4f} | {check['keras']['ms_per_image']:.2f} |"]
    rows += [f"| float {r['name']} | | {r['miou']:.4f} | {r['ms_per_image']:.2f} |" for r in check["float_export"]]
    rows += [f"| int8 {r['name']} | {-r['miou_drop']:+.4f} | {r['miou']:.4f} | {r['ms_per_image']:.2f} |" for r in check["quantized"]]
    table = ["```", "$ " + " ".join(command), *lines, "```", "",
             "| model | mIoU vs Keras | val mIoU | ms/image |", "|---|---|---|---|", *rows]
    notes = [f"Checkpoint: {'the quick start trained by this script (README command)' if args.checkpoint is None else checkpoint}; "
             f"checked on {check['split']}; calibration: the export's default (val images of the run's config). "
             "ms/image: the export check's own timing (median of one call per image, batch 1) on a shared machine."]
    write_results(args.name, figures, table, notes)


if __name__ == "__main__":
    main()
