"""Wall time and peak memory of ``segtrain evaluate --pred-dir`` on a whole BRATS volume.

docs/volumes_and_signals.md quotes what scoring a written prediction costs. This script writes
a prediction for the validation case of ``../shared/data/brats3d`` as ``segtrain predict``
writes one (``write_label_volume``: uint8 NIfTI with the source's affine), taking the case's
own label map as the prediction (a structured map compresses like a real prediction; the
scores are then 1, which is not the point), and runs the CLI in a subprocess, as a user would:

    segtrain evaluate --config configs/brats/segnet3d_cpu.yaml --set data.root=ROOT \
        --pred-dir PRED --split validation --groups "whole=1,2,3,4;core=1,3,4;enhancing=4"

timing its wall clock (start-up included) and reading its peak RSS (``RUSAGE_CHILDREN``).

    python benchmarks/bench_volume_eval.py [--root ../shared/data/brats3d] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_file import write_results  # benchmarks/results_file.py

REPO = Path(__file__).resolve().parents[1]
CASE = "brats_2013_pat0003_1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(REPO.parent / "shared" / "data" / "brats3d"))
    parser.add_argument("--config", default="configs/brats/segnet3d_cpu.yaml")
    parser.add_argument("--repeats", type=int, default=2, help="evaluate runs, one after the other")
    parser.add_argument("--name", default="volume_eval_brats", help="results file stem under benchmarks/results/")
    args = parser.parse_args()
    import nibabel as nib

    from segtrain.data.formats.nifti import write_label_volume

    source = nib.load(str(Path(args.root) / "validation" / CASE / "OTMultiClass.nii.gz"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    walls = []
    with tempfile.TemporaryDirectory() as tmp:
        pred = Path(tmp) / "pred"
        pred.mkdir()
        write_label_volume(pred / f"{CASE}.nii.gz", source.get_fdata().astype("uint8"), source.affine, source.header)
        command = [sys.executable, "-m", "segtrain.cli", "evaluate", "--config", args.config, "--set", f"data.root={args.root}",
                   "--pred-dir", str(pred), "--split", "validation", "--groups", "whole=1,2,3,4;core=1,3,4;enhancing=4",
                   "--output-dir", str(Path(tmp) / "eval")]
        for _ in range(args.repeats):
            started = time.perf_counter()
            out = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
            walls.append(time.perf_counter() - started)
            if out.returncode:
                sys.exit(out.stdout + out.stderr)
        print(out.stdout[-2000:])
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    voxels = 1
    for n in source.shape:
        voxels *= n
    figures = {"case": CASE, "shape": list(source.shape), "voxels": voxels, "wall_s": walls, "best_wall_s": min(walls),
               "peak_rss_mib": peak_mib, "peak_rss_gib": peak_mib / 1024}
    print(figures)
    table = ["| case (shape) | `evaluate --pred-dir` wall s, start-up included (runs) | best | peak RSS (GiB) |",
             "|---|---|---|---|",
             f"| {CASE} ({'x'.join(map(str, source.shape))}) | {', '.join(f'{w:.1f}' for w in walls)} | {min(walls):.1f} "
             f"| {peak_mib / 1024:.2f} |"]
    notes = [f"`segtrain evaluate --config {args.config} --set data.root=ROOT --pred-dir PRED --split validation "
             f"--groups \"whole=1,2,3,4;core=1,3,4;enhancing=4\"` in a subprocess, "
             f"{args.repeats} runs one after the other; the prediction is the case's own label map written as `predict` "
             "writes one (uint8 NIfTI, the source's affine). Peak RSS: the largest child's `ru_maxrss`."]
    write_results(args.name, figures, table, notes)


if __name__ == "__main__":
    main()
