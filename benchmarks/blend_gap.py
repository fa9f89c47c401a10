"""Sliding-window blends vs whole-volume inference: a 6-layer 3x3x3 conv stack (receptive radius 6), random weights.

Not a speed benchmark: how far `gaussian` and `margin` blending land from whole-array logits
(window 32, strides 24/16/8 on a 64x48x40 volume), and, for a model whose receptive field is
wider than the window, the same for a random 3-D `segnet_basic` (7x7x7 kernels, four poolings).
Writes benchmarks/results/blend_gap.json / .md.

    python benchmarks/blend_gap.py [--segnet-width 4]
"""

from __future__ import annotations

import argparse

import keras
import numpy as np

from results_file import write_results  # benchmarks/results_file.py
from segtrain.inference import predict_logits
from segtrain.models import build_model

SHAPE, WINDOW, STRIDES, RADIUS = (64, 48, 40), 32, (24, 16, 8), 6


def gap(model, x: np.ndarray, whole: np.ndarray, blend: str, stride: int) -> dict:
    """Mean and max |logit difference| relative to the mean |logit|, and the argmax agreement."""
    out = predict_logits(model, x, window=WINDOW, stride=stride, blend=blend)
    scale = np.abs(whole).mean()
    return {"mean_rel_diff": float(np.abs(out - whole).mean() / scale), "max_rel_diff": float(np.abs(out - whole).max() / scale),
            "agreement": float((np.argmax(out, -1) == np.argmax(whole, -1)).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segnet-width", type=int, default=4, help="width of the random 3-D segnet_basic row")
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    layers = [keras.Input((None, None, None, 2))] + [keras.layers.Conv3D(8, 3, padding="same", activation="relu") for _ in range(5)]
    stack = keras.Sequential(layers + [keras.layers.Conv3D(5, 3, padding="same")])
    x = np.random.default_rng(0).normal(size=SHAPE + (2,)).astype(np.float32)
    whole = predict_logits(stack, x)
    figures = {"conv_stack": {blend: {str(s): gap(stack, x, whole, blend, s) for s in STRIDES} for blend in ("gaussian", "margin")}}
    keras.utils.set_random_seed(0)
    segnet = build_model("segnet_basic", 5, (None, None, None, 2), width=args.segnet_width, mean=None, std=None)
    segnet_whole = predict_logits(segnet, x)
    figures["segnet_basic_3d"] = {blend: gap(segnet, x, segnet_whole, blend, 16) for blend in ("gaussian", "margin")}

    def cell(r: dict) -> str:
        exact = r["max_rel_diff"] < 1e-5
        return ("0 (exact)" if exact else f"{100 * r['mean_rel_diff']:.2f} %") + f", {100 * r['agreement']:.2f} % agree"

    rows = [f"| {s} (margin {(WINDOW - s) // 2}{' < radius 6' if (WINDOW - s) // 2 < RADIUS else ''}) | "
            f"{cell(figures['conv_stack']['gaussian'][str(s)])} | {cell(figures['conv_stack']['margin'][str(s)])} |" for s in STRIDES]
    seg = figures["segnet_basic_3d"]
    for line in rows:
        print(line)
    print(f"segnet_basic 3-D width {args.segnet_width}, stride 16: gaussian {cell(seg['gaussian'])}; margin {cell(seg['margin'])}")
    write_results("blend_gap", figures, [
        "6-layer 3x3x3 conv stack (receptive radius 6), random weights (seed 0), 64x48x40 volume of 2 channels, window 32; "
        "mean |logit difference| from whole-volume inference relative to the mean |logit|, and the share of voxels whose argmax agrees.",
        "", "| stride | gaussian | margin |", "|---|---|---|", *rows, "",
        f"Random 3-D `segnet_basic` (width {args.segnet_width}, 7x7x7 kernels, four poolings, seed 0), same volume, window 32, "
        f"stride 16: gaussian {cell(seg['gaussian'])}; margin {cell(seg['margin'])}."],
        ["Not a speed benchmark: the figures depend only on the seeded weights and input."])


if __name__ == "__main__":
    main()
