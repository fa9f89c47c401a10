"""ONNX parity at the extremes: large logits, and dark images under max-unpooling.

docs/export.md explains two choices of the parity check with measurements made here:

* ``magnitude``: why the logit limit is relative beyond |logit| 1. A fresh full-width
  SegNet-Basic (width 64, ``--decoder``, a continuous decoder by default so that no pooling
  window can flip) exported at ``--size`` and run by onnxruntime and OpenCV DNN on real
  images (``check_parity``): the largest |Keras logit|, each runtime's max |logit diff| and
  that difference relative to the largest logit.
* ``dark``: max-unpooling on near-flat inputs. A fresh SegNet-Basic ``unpool`` on ``--count``
  random images with pixels uniform in [0, 1) (raw pixel values; models take 0..255, so these
  are almost black), against the same number of random 0..255 images: each runtime's argmax
  agreement with Keras.

    python benchmarks/export_parity_extremes.py --images ../shared/data/camvid/val [--size 360x480] [--limit 4]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from results_file import write_results  # noqa: E402  (benchmarks/results_file.py)
from segtrain.export import check_parity, export_model  # noqa: E402
from segtrain.export.formats import export_format  # noqa: E402
from segtrain.models import build_model  # noqa: E402


def agreement(model, path: Path, x: np.ndarray) -> dict:
    """Per runtime: argmax agreement with Keras and max |logit diff| on the float32 batch ``x``."""
    reference = np.concatenate([np.asarray(model(x[i : i + 1], training=False)) for i in range(len(x))])
    out = {}
    for name, run in export_format("onnx").runners(path).run.items():
        logits = np.concatenate([np.asarray(run(x[i : i + 1])) for i in range(len(x))])
        out[name] = {"agreement": float(np.mean(np.argmax(logits, -1) == np.argmax(reference, -1))),
                     "max_abs_diff": float(np.abs(logits - reference).max()), "pixels": int(reference[..., 0].size)}
    return {"max_abs_keras_logit": float(np.abs(reference).max()), "runtimes": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", required=True, help="folder of real images for the magnitude check")
    parser.add_argument("--size", default="360x480", help="HxW export size of the magnitude check")
    parser.add_argument("--limit", type=int, default=4, help="real images used")
    parser.add_argument("--decoder", default="transposed", help="decoder of the magnitude check's model")
    parser.add_argument("--dark-size", default="96x128", help="HxW export size of the dark-image check")
    parser.add_argument("--count", type=int, default=8, help="random images of each kind in the dark-image check")
    parser.add_argument("--classes", type=int, default=11)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="export_parity_extremes", help="results file stem under benchmarks/results/")
    args = parser.parse_args()
    h, w = (int(v) for v in args.size.lower().split("x"))
    dh, dw = (int(v) for v in args.dark_size.lower().split("x"))
    images = sorted(p for p in Path(args.images).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))[: args.limit]
    figures, table = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        keras.utils.set_random_seed(args.seed)
        model = build_model("segnet_basic", args.classes, (h, w, 3), decoder=args.decoder, width=64)
        path = export_model(model, "onnx", Path(tmp) / "big.onnx", size=(h, w))
        report = check_parity(model, path, "onnx", images=images, count=0)
        print(report.summary())
        figures["magnitude"] = report.as_dict()
        for r in report.results:
            table.append(f"| magnitude: fresh segnet_basic `{args.decoder}` width 64, {len(images)} real images at {h}x{w} "
                         f"| {r.runtime} | {report.scale:.3g} | {r.max_abs_diff:.3g} | {r.max_abs_diff / report.scale:.3g} "
                         f"| {r.agreement:.4%} |")
        keras.utils.set_random_seed(args.seed)
        model = build_model("segnet_basic", args.classes, (dh, dw, 3), decoder="unpool", width=64)
        path = export_model(model, "onnx", Path(tmp) / "unpool.onnx", size=(dh, dw))
        rng = np.random.default_rng(args.seed)
        inputs = {"dark: pixels uniform in [0, 1)": rng.random((args.count, dh, dw, 3), dtype=np.float32),
                  "random 0..255 pixels": rng.integers(0, 256, (args.count, dh, dw, 3)).astype(np.float32)}
        figures["dark"] = {}
        for label, x in inputs.items():
            found = agreement(model, path, x)
            figures["dark"][label] = found
            print(label, found)
            for runtime, r in found["runtimes"].items():
                table.append(f"| {label}: fresh segnet_basic `unpool` width 64, {args.count} images at {dh}x{dw} | {runtime} "
                             f"| {found['max_abs_keras_logit']:.3g} | {r['max_abs_diff']:.3g} "
                             f"| {r['max_abs_diff'] / found['max_abs_keras_logit']:.3g} | {r['agreement']:.4%} |")
    header = ["| case | runtime | max \\|Keras logit\\| | max \\|logit diff\\| | diff / max \\|logit\\| | argmax agreement |",
              "|---|---|---|---|---|---|"]
    notes = [f"ONNX (NHWC, batch 1) of freshly initialised models (seed {args.seed}, {args.classes} classes) vs Keras. "
             f"Magnitude: `check_parity` on the first {len(images)} images of {args.images}, raw 0..255 pixels. Dark: random "
             "float32 inputs fed to Keras and to each runtime alike."]
    write_results(args.name, figures, [*header, *table], notes)


if __name__ == "__main__":
    main()
