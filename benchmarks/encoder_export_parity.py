"""ONNX parity of the zoo's ``keras.applications`` encoders: U-Net with each encoder, DeepLabV3+.

The test suite does not export these (ResNet50 and EfficientNet take long to convert), so
docs/models.md quotes this check instead: each model, freshly initialised
(``encoder_weights: none``), exported to ONNX at ``--size`` and run by onnxruntime and
OpenCV DNN on the first ``--limit`` real images (``check_parity``, the check
``segtrain export`` runs): max |logit diff|, argmax agreement, pass or fail.

    python benchmarks/encoder_export_parity.py --images ../shared/data/camvid/val \
        [--models unet:vgg16 unet:resnet50 unet:mobilenetv2 unet:efficientnetb0 deeplabv3plus:resnet50:16] \
        [--size 64x64] [--width 4] [--limit 4] [--name encoder_export_parity]

A model is ``name:encoder`` or, for DeepLabV3+, ``deeplabv3plus:encoder:output_stride``. On 2
shared cores all five take about 90 s, so the results files were written in two runs:
``--models unet:vgg16 unet:mobilenetv2 unet:efficientnetb0`` (``encoder_export_parity``) and
``--models unet:resnet50 deeplabv3plus:resnet50:16 --name encoder_export_parity_resnet50``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from results_file import write_results  # noqa: E402  (benchmarks/results_file.py)
from segtrain.export import check_parity, export_model  # noqa: E402
from segtrain.models import build_model  # noqa: E402

DEFAULT = ["unet:vgg16", "unet:resnet50", "unet:mobilenetv2", "unet:efficientnetb0", "deeplabv3plus:resnet50:16"]


def build(spec: str, classes: int, size: tuple[int, int], width: int) -> keras.Model:
    name, encoder, *rest = spec.split(":")
    kwargs = {"encoder": encoder, "encoder_weights": "none", "width": width}
    if rest:
        kwargs["output_stride"] = int(rest[0])
    return build_model(name, classes, (*size, 3), **kwargs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", required=True, help="folder of real images (resized to --size)")
    parser.add_argument("--models", nargs="+", default=DEFAULT)
    parser.add_argument("--size", default="64x64", help="HxW export size")
    parser.add_argument("--width", type=int, default=4)
    parser.add_argument("--classes", type=int, default=11)
    parser.add_argument("--limit", type=int, default=4, help="use the first N images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="encoder_export_parity", help="results file stem under benchmarks/results/")
    args = parser.parse_args()
    h, w = (int(v) for v in args.size.lower().split("x"))
    images = sorted(p for p in Path(args.images).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))[: args.limit]
    figures, table = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.models:
            keras.utils.set_random_seed(args.seed)
            started = time.perf_counter()
            model = build(spec, args.classes, (h, w), args.width)
            path = export_model(model, "onnx", Path(tmp) / f"{spec.replace(':', '_')}.onnx", size=(h, w))
            report = check_parity(model, path, "onnx", images=images, count=0)
            seconds = time.perf_counter() - started
            print(f"== {spec} ({seconds:.0f} s)\n{report.summary()}", flush=True)
            figures[spec] = {**report.as_dict(), "parameters": model.count_params(), "seconds": seconds}
            table += [f"| {spec} | {model.count_params():,} | {r.runtime} | {report.scale:.3g} | {r.max_abs_diff:.3g} "
                      f"| {r.agreement:.4%} | {'ok' if report.passes(r) else 'FAIL'} |" for r in report.results]
    header = ["| model:encoder[:output stride] | parameters | runtime | max \\|Keras logit\\| | max \\|logit diff\\| "
              "| argmax agreement | parity check |", "|---|---|---|---|---|---|---|"]
    notes = [f"Fresh weights (`encoder_weights: none`, seed {args.seed}), width {args.width}, {args.classes} classes, "
             f"ONNX (NHWC, batch 1) at {h}x{w}, `check_parity` on the first {len(images)} images of {args.images} "
             "(raw 0..255 pixels): max |logit diff| <= 1e-4 x max(1, max |Keras logit|) and argmax agreement >= 99.99 %."]
    write_results(args.name, figures, [*header, *table], notes)


if __name__ == "__main__":
    main()
