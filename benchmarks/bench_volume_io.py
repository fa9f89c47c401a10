"""What one BRATS case costs the 3-D input: decoding, checks, the foreground index, one patch, memory.

docs/volumes_and_signals.md quotes these to show where the time of the patch pipeline goes.
All in one subprocess (peak RSS, ``resource.getrusage``, is per process, and TensorFlow is never
imported there), on one case (default: the validation case of ``../shared/data/brats3d``):

* nibabel's raw load of the case's 4 files (2 channels, label, brain mask; ``get_fdata`` as
  float32, nothing kept), best of ``--repeats``;
* ``read_case`` (the same loads plus every check segtrain makes and z-scoring inside the mask,
  ``data.normalize: zscore``), best of ``--repeats``, in the same process;
* ``foreground_voxels`` + ``bounding_box`` of the mask, once;
* ``sample_patch`` of one 96^3 two-channel patch (mean of ``--patches`` draws, 1/3 centred on
  foreground, the rest uniform in the mask's bounding box);
* peak RSS of the process before and after (one decoded case held).

    python benchmarks/bench_volume_io.py [--root ../shared/data/brats3d] [--case validation/brats_2013_pat0003_1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from results_file import write_results  # benchmarks/results_file.py

CHANNELS = ["Flair_subtrMeanDivStd.nii.gz", "T1c_subtrMeanDivStd.nii.gz"]

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
import numpy as np
import nibabel as nib
from segtrain.config import from_dict
from segtrain.data.formats.nifti import VolumeCase, read_case
from segtrain.data.transforms.patches import bounding_box, foreground_voxels, sample_patch

folder, channels, repeats, patches, size = Path(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
config = from_dict({"data": {"format": "nifti", "root": str(folder.parent.parent), "num_classes": 5,
                             "channels": channels, "label": "OTMultiClass.nii.gz", "mask": "brainmask.nii.gz",
                             "normalize": "zscore", "patch": [size] * 3}})
case = VolumeCase(folder.name, tuple(folder / c for c in channels), folder / "OTMultiClass.nii.gz", folder / "brainmask.nii.gz")
before = rss()
raw, full = [], []
for _ in range(repeats):
    t = time.perf_counter()
    for path in case.files:
        nib.load(str(path)).get_fdata(dtype=np.float32)
    raw.append(time.perf_counter() - t)
    t = time.perf_counter()
    volume = read_case(case, config.data)
    full.append(time.perf_counter() - t)
    if _ < repeats - 1:
        del volume
t = time.perf_counter()
foreground = foreground_voxels(volume.label, 5)
bounds = bounding_box(volume.mask)
index_s = time.perf_counter() - t
t = time.perf_counter()
for i in range(patches):
    image, label = sample_patch(volume.image, volume.label, [size] * 3, foreground, seed=0, epoch=0, index=i, bounds=bounds)
patch_s = (time.perf_counter() - t) / patches
print(json.dumps({"shape": list(volume.image.shape), "raw_load_s": raw, "read_case_s": full, "index_s": index_s,
                  "patch_s": patch_s, "patch_shape": list(image.shape), "foreground_voxels": len(foreground),
                  "rss_before_mib": before, "peak_rss_mib": rss()}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "brats3d"))
    parser.add_argument("--case", default="validation/brats_2013_pat0003_1")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--patches", type=int, default=200)
    parser.add_argument("--patch", type=int, default=96, help="patch side in voxels")
    parser.add_argument("--name", default="volume_io_brats", help="results file stem under benchmarks/results/")
    args = parser.parse_args()
    folder = Path(args.root) / args.case
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", CHILD, str(folder), json.dumps(CHANNELS), str(args.repeats),
                          str(args.patches), str(args.patch)], capture_output=True, text=True, env=env)
    if out.returncode:
        sys.exit(out.stderr)
    f = json.loads(out.stdout.strip().splitlines()[-1])
    f.update(case=args.case, raw_load_best_s=min(f["raw_load_s"]), read_case_best_s=min(f["read_case_s"]))
    print(json.dumps(f))
    table = ["| case (shape) | raw nibabel load, 4 files (best s) | `read_case` (best s) | foreground index + bounding box (s) "
             f"| one {args.patch}^3 patch (mean ms of {args.patches}) | peak RSS before / after (MiB) |",
             "|---|---|---|---|---|---|",
             f"| {args.case} ({'x'.join(map(str, f['shape']))}) | {f['raw_load_best_s']:.2f} | {f['read_case_best_s']:.2f} "
             f"| {f['index_s']:.2f} | {1000 * f['patch_s']:.1f} | {f['rss_before_mib']:.0f} / {f['peak_rss_mib']:.0f} |"]
    notes = [f"Best of {args.repeats} for the loads (raw: `nib.load(path).get_fdata(dtype=float32)` of the 2 channels, "
             "label and mask; `read_case`: the same files with every check and z-scoring, `data.normalize: zscore`), "
             "in one subprocess that never imports TensorFlow; the patch is `sample_patch` (1/3 centred on foreground, "
             "the rest uniform in the brain mask's bounding box), no augmentation. Peak RSS: `ru_maxrss` after the imports "
             "and at the end, with one decoded case held."]
    write_results(args.name, f, table, notes)


if __name__ == "__main__":
    main()
