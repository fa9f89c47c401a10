"""Checkerboard scores of docs/models.md: x2 upsampling blocks and whole untrained zoo models.

The scores of ``segtrain checkerboard`` (``segtrain.models.checkerboard``): the share of output
energy at the stride's periodic frequencies, averaged over seeded random initialisations, so
the figures depend only on the seeds (not a speed benchmark). Writes
benchmarks/results/checkerboard_scores.json / .md.

    python benchmarks/checkerboard_scores.py
"""

from __future__ import annotations

import argparse

from results_file import write_results  # benchmarks/results_file.py
from segtrain.models import decoders_of
from segtrain.models.checkerboard import BLOCKS, block_score, model_score

# (model, size, width): segnet_basic and unet at the command's default 192, dilated_frontend at 128.
MODELS = [("segnet_basic", 192, 4), ("dilated_frontend", 128, 4), ("unet", 192, 4)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    blocks = {kind: {probe: block_score(kind, rank=2, factor=2, kernel_size=3, probe=probe) for probe in ("constant", "smooth")}
              for kind in BLOCKS}
    models = {f"{name} {size}x{size} width {width}": {d: model_score(name, d, size=size, width=width) for d in decoders_of(name)}
              for name, size, width in MODELS}
    deeplab = {"deeplabv3plus 64x64 width 4 (resnet50)": model_score("deeplabv3plus", "bilinear", size=64, width=4),
               "segnet_basic 64x64 width 4, transposed": model_score("segnet_basic", "transposed", size=64, width=4)}
    for kind, s in blocks.items():
        print(f"{kind:<22} constant {s['constant']:.1e}  smooth {s['smooth']:.1e}")
    for name, scores in {**models, "deeplab": deeplab}.items():
        print(name, {d: f"{v:.2g}" for d, v in scores.items()})
    write_results("checkerboard_scores", {"blocks": blocks, "models": models, "deeplab_probe": deeplab}, [
        "x2 blocks (upsampling + one conv), kernel 3, 2-D probe 24x24, 8 random initialisations:", "",
        "| block | constant probe | smooth probe |", "|---|---|---|",
        *[f"| `{k}` | {s['constant']:.1e} | {s['smooth']:.1e} |" for k, s in blocks.items()], "",
        "Whole untrained models (norm none), constant probe, 2 random initialisations:", "",
        "| model | decoder | score |", "|---|---|---|",
        *[f"| {name} | `{d}` | {v:.2g} |" for name, scores in models.items() for d, v in scores.items()],
        *[f"| {name} | | {v:.2g} |" for name, v in deeplab.items()]],
        ["Seeded (seed 0 + trial): the same figures on every run up to float32 rounding."])


if __name__ == "__main__":
    main()
