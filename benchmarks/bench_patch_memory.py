"""Peak memory of the 3-D patch input for 1, 3 and 9 BRATS cases, and its patch rate vs nibabel's raw load.

Each measurement runs in a fresh subprocess (peak RSS, ``resource.getrusage``, is per
process): one epoch of ``NumpyLoader`` (the same ``patch_plans`` code as the tf.data
pipeline, without TensorFlow's own footprint) over ``n`` cases (the 3 BRATS cases, listed
again in turn for 9), 4 patches of 64^3 per case,
``data.cached_cases`` 2 (or ``--cached-cases``). If memory grew with the number of cases, 9 cases would need about
three times the decoded-case memory of 3; bounded, it stops growing once the cache is full. In the same subprocess, nibabel's raw load
(``get_fdata`` of every file of the same cases, nothing kept) is timed as the baseline for
patches/s; the ratio printed is (patch epoch time) / (raw load time).

    python benchmarks/bench_patch_memory.py [--root ../shared/data/brats3d] [--repeats 2] [--cached-cases 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from results_file import write_results  # benchmarks/results_file.py

CASES = ["train/brats_2013_pat0005_1", "train/brats_2013_pat0006_1", "validation/brats_2013_pat0003_1"]
CHANNELS = ["Flair_subtrMeanDivStd.nii.gz", "T1c_subtrMeanDivStd.nii.gz"]

CHILD = r"""
import json, resource, sys, time
import numpy as np
import nibabel as nib
from segtrain.config import from_dict
from segtrain.data.loading.numpy_batches import NumpyLoader

root, split, n, channels, cached = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4]), int(sys.argv[5])
config = from_dict({"data": {"format": "nifti", "root": root, "train_split": split, "num_classes": 5,
                             "classes": ["bg", "ncr", "ed", "net", "et"], "channels": channels,
                             "label": "OTMultiClass.nii.gz", "mask": "brainmask.nii.gz", "normalize": "zscore",
                             "patch": [64, 64, 64], "patches_per_case": 4, "cached_cases": cached,
                             "patch_flip": [0, 1, 2], "patch_rot90": [0, 1], "patch_noise": 0.05},
                    "train": {"batch_size": 2}, "output_dir": "/tmp/unused"})
loader = NumpyLoader(config, "train", True, workers=2)
t = time.perf_counter()
patches = sum(len(x) for x, _ in loader)
epoch_s = time.perf_counter() - t
t = time.perf_counter()
for case in loader._load.cases:
    for path in case.files:
        nib.load(str(path)).get_fdata(dtype=np.float32)
raw_s = time.perf_counter() - t
print(json.dumps({"cases": n, "patches": patches, "epoch_s": epoch_s, "raw_load_s": raw_s,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def measure(root: Path, n: int, folder: Path, cached: int) -> dict:
    split = folder / f"cases{n}"
    split.with_suffix(".txt").write_text("\n".join(CASES[i % len(CASES)] for i in range(n)) + "\n")
    out = subprocess.run([sys.executable, "-c", CHILD, str(root), str(split), str(n), json.dumps(CHANNELS), str(cached)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[2] / "shared/data/brats3d"))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cached-cases", type=int, default=2, help="data.cached_cases (1: one decoded case at a time)")
    args = parser.parse_args()
    root = Path(args.root).resolve()
    runs, table = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            rows = {n: measure(root, n, Path(tmp), args.cached_cases) for n in (1, 3, 9)}
            runs.append(rows)
            table += [f"| {repeat + 1} | {n} | {r['peak_rss_mib']:.0f} | {r['patches']} | {r['epoch_s']:.1f} | "
                      f"{r['raw_load_s']:.1f} | {r['epoch_s'] / r['raw_load_s']:.2f} |" for n, r in rows.items()]
            for n, r in rows.items():
                print(f"run {repeat + 1}: {n} case(s): peak RSS {r['peak_rss_mib']:.0f} MiB, {r['patches']} patches in "
                      f"{r['epoch_s']:.1f} s ({r['patches'] / r['epoch_s']:.2f} patches/s); nibabel raw load of the same "
                      f"files {r['raw_load_s']:.1f} s; ratio epoch/raw load {r['epoch_s'] / r['raw_load_s']:.2f}")
            print(f"run {repeat + 1}: peak RSS 3 cases / 1 case = {rows[3]['peak_rss_mib'] / rows[1]['peak_rss_mib']:.2f}, "
                  f"9 cases / 3 cases = {rows[9]['peak_rss_mib'] / rows[3]['peak_rss_mib']:.2f}")
    write_results("patch_memory", {"cached_cases": args.cached_cases, "runs": runs},
                  ["| run | cases | peak RSS MiB | patches | epoch s | nibabel raw load s | epoch / raw load |",
                   "|---|---|---|---|---|---|---|", *table],
                  ["NumpyLoader patch epoch (4 patches of 64^3 per case) in a fresh subprocess per row; "
                   f"data.cached_cases {args.cached_cases}."])


if __name__ == "__main__":
    main()
