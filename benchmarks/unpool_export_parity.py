"""How far an ONNX export of a max-unpooling model drifts from Keras on real images.

Index-based unpooling is discontinuous: where the top two values of a pooling window differ
by less than the runtimes' float32 differences (~1e-6 relative), onnxruntime / OpenCV may
pick the other position and the decoder puts the value elsewhere. This script exports a
model (a checkpoint, or freshly initialised SegNet-Basics with each decoder) and runs the
public ``check_parity`` on a folder of real images, printing max |logit diff| and argmax
agreement per runtime.

    python benchmarks/unpool_export_parity.py --images /path/to/camvid/val --size 96x128 \
        [--checkpoint runs/x/checkpoints/best.keras] [--decoders unpool transposed] [--limit 6]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import segtrain.models  # noqa: E402,F401  (registers the layers for load_model)
from segtrain.export import check_parity, export_model  # noqa: E402
from segtrain.models import build_model  # noqa: E402
from results_file import write_results  # noqa: E402  (benchmarks/results_file.py)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", required=True, help="folder of real images (resized to --size)")
    parser.add_argument("--size", default="96x128", help="HxW export size")
    parser.add_argument("--checkpoint", help="a .keras model; default: fresh SegNet-Basics, one per --decoders")
    parser.add_argument("--decoders", nargs="+", default=["unpool", "transposed"])
    parser.add_argument("--classes", type=int, default=6)
    parser.add_argument("--limit", type=int, default=None, help="use the first N images only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="unpool_export_parity", help="results file stem under benchmarks/results/")
    args = parser.parse_args()
    h, w = (int(v) for v in args.size.lower().split("x"))
    images = sorted(p for p in Path(args.images).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    images = images[: args.limit]
    if args.checkpoint:
        models = {Path(args.checkpoint).name: keras.models.load_model(args.checkpoint)}
    else:
        models = {}
        for decoder in args.decoders:
            keras.utils.set_random_seed(args.seed)
            models[f"fresh segnet_basic {decoder}"] = build_model("segnet_basic", args.classes, (h, w, 3), decoder=decoder)
    figures, table = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for label, model in models.items():
            path = export_model(model, "onnx", Path(tmp) / "m.onnx", size=(h, w))
            report = check_parity(model, path, "onnx", images=images, count=0)
            print(f"== {label}, {len(images)} images at {h}x{w}")
            print(report.summary())
            figures[label] = report.as_dict()
            table += [f"| {label} | {r.runtime} | {r.max_abs_diff:.3g} | {r.share_over:.4%} | {r.agreement:.4%} | "
                      f"{r.pixels - round(r.agreement * r.pixels)} |" for r in report.results]
    write_results(args.name, figures, ["| model | runtime | max abs logit diff | logits over the limit | argmax agreement "
                                       "| pixels whose class differs |", "|---|---|---|---|---|---|", *table],
                  [f"{len(images)} images of {args.images} resized to {h}x{w}, raw 0..255 pixels, ONNX (NHWC) vs Keras."])


if __name__ == "__main__":
    main()
