"""`segtrain export`: a checkpoint written in a format of the table, then the parity check against Keras.

A checkpoint inside a run folder (``<run>/checkpoints/best.keras``) finds its run's
``config.yaml``: the export size of a dynamic-size model defaults to the training size
(``data.resize`` or ``data.crop``) and the parity images come from its val split. On JAX
and PyTorch the command runs itself again under ``KERAS_BACKEND=tensorflow`` (a ``.keras``
checkpoint loads on any backend): the formats convert through TensorFlow.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from segtrain.backend import require_tensorflow
from segtrain.errors import SegtrainError
from segtrain.inference import load_checkpoint, run_config_path
from segtrain.export.calibration import CALIBRATION_IMAGES, QUANTIZE_CHOICES, calibration_paths
from segtrain.export.formats import EXPORT_FORMATS, export_format
from segtrain.export.parity import check_parity
from segtrain.export.quality import MAX_MIOU_DROP, check_quantized
from segtrain.export.report import write_export_report
from segtrain.export.shapes import default_size, export_shape, exported_layout
from segtrain.export.writing import export_model
from segtrain.io_utils import format_size, parse_size


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's flags; ``--format`` offers every registered format."""
    outputs = " or ".join(f"<stem>{fmt.suffix}" for fmt in EXPORT_FORMATS.values())
    parser.add_argument("--checkpoint", required=True, help=".keras checkpoint to export")
    parser.add_argument("--format", required=True, choices=list(EXPORT_FORMATS))
    parser.add_argument("--output", help=f"output path (default: next to the checkpoint: {outputs})")
    parser.add_argument("--nchw", action="store_true",
                        help="channels-first input (N, C, H, W) as cv2.dnn.blobFromImage builds it, and (N, classes, H, W) output")
    parser.add_argument("--size", help="HxW to fix when the model's size is dynamic (default: data.resize or data.crop of the run's config.yaml)")
    parser.add_argument("--dynamic-batch", action="store_true", help="leave the batch dimension dynamic (default: 1)")
    parser.add_argument("--config", help="experiment YAML whose val split feeds the parity check (default: the run's config.yaml)")
    parser.add_argument("--images", nargs="+", default=[], metavar="PATH",
                        help="image files or folders for the parity check (instead of the config's val images)")
    parser.add_argument("--no-check", action="store_true", help="skip the check (parity, or val mIoU for a quantized export) and its report")
    quantizing = [name for name, fmt in EXPORT_FORMATS.items() if "quantize" in fmt.options]
    parser.add_argument("--quantize", choices=QUANTIZE_CHOICES, default="none",
                        help=f"post-training quantization (formats {', '.join(quantizing)}; fp16: tflite only); "
                             "int8 is calibrated on real images")
    parser.add_argument("--calibration", metavar="SPLIT|FOLDER",
                        help="int8 calibration images: a split of the config (default: val) or a folder of images")
    parser.add_argument("--calibration-images", type=int, metavar="N",
                        help=f"calibrate on N images spread over --calibration (default {CALIBRATION_IMAGES})")
    parser.add_argument("--max-miou-drop", type=float, default=MAX_MIOU_DROP,
                        help=f"a quantized export fails its check if its val mIoU is more than this below Keras's (default {MAX_MIOU_DROP})")


def _run_on_tensorflow(argv: list[str]) -> int:
    """``segtrain export`` again in a TensorFlow process (checkpoints load on every backend)."""
    require_tensorflow("segtrain export (it converts through TensorFlow)")
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    return subprocess.run([sys.executable, "-m", "segtrain", "export", *argv], env=env).returncode


def _quantize_options(args, config) -> dict:
    """The quantization options for ``export_model``: none unless asked, so formats without them are not offered any."""
    if args.quantize == "none":
        if args.calibration or args.calibration_images:
            raise SegtrainError("--calibration and --calibration-images calibrate int8: add --quantize int8")
        return {}
    if "quantize" not in export_format(args.format).options:
        quantizing = ", ".join(name for name, fmt in EXPORT_FORMATS.items() if "quantize" in fmt.options)
        raise SegtrainError(f"--quantize {args.quantize}: {args.format} exports are not quantized; use --format {quantizing}")
    options = {"quantize": args.quantize}
    if args.quantize == "int8":
        count = args.calibration_images or CALIBRATION_IMAGES
        if count < 1:
            raise SegtrainError(f"--calibration-images {count}: give at least 1")
        options["calibration"], _ = calibration_paths(args.calibration or "val", config, count)
        options["calibration_images"] = count
    return options


def run(args) -> int:
    """Export, print what was written, then check it (parity, or val mIoU when quantized) unless ``--no-check``."""
    import keras  # loads the backend: only when the command runs

    if keras.backend.backend() != "tensorflow":
        return _run_on_tensorflow(args.argv)
    from segtrain.precision import float32_copy  # imports Keras: only when the command runs

    model = float32_copy(load_checkpoint(args.checkpoint))  # a bf16-trained checkpoint exports (and is checked) in float32
    config = args.config or run_config_path(args.checkpoint)
    options = _quantize_options(args, config)
    output = Path(args.output) if args.output else export_format(args.format).default_output(args.checkpoint, args.nchw, args.quantize)
    size = None if args.size is None else parse_size(args.size, "--size", rank=None)
    hint, source = "", ""
    if size is None and any(s is None for s in model.input_shape[1:-1]):
        size, hint = default_size(args.checkpoint)
        source = f", the training size in {run_config_path(args.checkpoint)}" if size else ""
    batch = None if args.dynamic_batch else 1
    shape = export_shape(model, size, batch, hint)
    if args.quantize != "none" and not args.no_check and config is None:
        raise SegtrainError(f"--quantize {args.quantize}: the export is checked by its mIoU on the val split; pass --config "
                            "(or export a checkpoint inside its run folder, or add --no-check)")
    export_model(model, args.format, output, nchw=args.nchw, size=shape[1:-1], batch=batch, **options)
    layout = exported_layout(shape, args.nchw)
    quantized = "" if args.quantize == "none" else f", {args.quantize}"
    print(f"wrote {output}: input {tuple('N' if d is None else d for d in layout)} {'NCHW' if args.nchw else 'NHWC'}, "
          f"size {format_size(shape[1:-1])} (height x width{source}){quantized}")
    if args.no_check:
        return 0
    if args.quantize == "none":
        report = check_parity(model, output, args.format, nchw=args.nchw, images=args.images, config=None if args.images else config)
        mismatch = f"{output}: the export does not match the Keras model (see the parity table above); please report it with the checkpoint's model config"
    else:
        report = check_quantized(model, output, args.format, args.quantize, config, nchw=args.nchw, max_drop=args.max_miou_drop)
        mismatch = (f"{output}: the {args.quantize} export's val mIoU is more than {args.max_miou_drop} below Keras's (see the "
                    "table above); keep the float export, or calibrate on other images (--calibration)")
    print(report.summary())
    export = {"checkpoint": str(args.checkpoint), "path": str(output), "format": args.format, "quantize": args.quantize,
              "layout": "NCHW" if args.nchw else "NHWC", "input_shape": list(layout),
              **({"calibration": [str(p) for p in options["calibration"]]} if "calibration" in options else {})}
    written = write_export_report(output, "segtrain export " + " ".join(args.argv), export,
                                  {"kind": "parity" if args.quantize == "none" else "quantized", **report.as_dict()})
    print(f"wrote {written}")
    if not report.ok:
        raise SegtrainError(mismatch)
    return 0
