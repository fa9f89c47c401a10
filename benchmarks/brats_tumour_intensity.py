"""How bright each BRATS case's tumour is in Flair, against the rest of its brain.

docs/volumes_and_signals.md explains the region recipe's false positives on the validation
case by the two training patients' tumours differing in brightness. This reads each case of
``../shared/data/brats3d`` (the z-scored Flair file as shipped, the label map and the brain
mask) and prints the mean Flair inside the whole tumour (labels 1-4), inside the brain outside
the tumour, and the tumour's share of the brain's voxels. No model involved.

    python benchmarks/brats_tumour_intensity.py [--root ../shared/data/brats3d]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np

from results_file import write_results  # benchmarks/results_file.py


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "brats3d"))
    parser.add_argument("--channel", default="Flair_subtrMeanDivStd.nii.gz")
    parser.add_argument("--name", default="brats_tumour_intensity", help="results file stem under benchmarks/results/")
    args = parser.parse_args()
    rows, figures = [], {}
    for split in ("train", "validation"):
        for case in sorted(p for p in (Path(args.root) / split).iterdir() if p.is_dir()):
            flair = nib.load(str(case / args.channel)).get_fdata(dtype=np.float32)
            label = np.asarray(nib.load(str(case / "OTMultiClass.nii.gz")).dataobj).astype(np.int64)
            brain = np.asarray(nib.load(str(case / "brainmask.nii.gz")).dataobj) != 0
            tumour = (label >= 1) & (label <= 4)
            f = {"split": split, "tumour_flair_mean": float(flair[tumour].mean()),
                 "brain_without_tumour_flair_mean": float(flair[brain & ~tumour].mean()),
                 "tumour_share_of_brain": float(tumour[brain].mean()), "tumour_voxels": int(tumour.sum())}
            figures[case.name] = f
            print(case.name, f)
            rows.append(f"| {split} | {case.name} | {f['tumour_flair_mean']:.2f} | {f['brain_without_tumour_flair_mean']:.2f} "
                        f"| {f['tumour_voxels']} | {f['tumour_share_of_brain']:.4f} |")
    table = ["| split | case | mean Flair, whole tumour | mean Flair, rest of the brain | tumour voxels | tumour share of the brain |",
             "|---|---|---|---|---|---|", *rows]
    notes = [f"`{args.channel}` as shipped (already z-scored by the dataset); whole tumour = labels 1-4 of "
             "OTMultiClass.nii.gz; brain = brainmask.nii.gz != 0."]
    write_results(args.name, figures, table, notes)


if __name__ == "__main__":
    main()
