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
from segtrain.export.formats import EXPORT_FORMATS, export_format
from segtrain.export.parity import check_parity
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
    parser.add_argument("--no-check", action="store_true", help="skip the parity check")


def _run_on_tensorflow(argv: list[str]) -> int:
    """``segtrain export`` again in a TensorFlow process (checkpoints load on every backend)."""
    require_tensorflow("segtrain export (it converts through TensorFlow)")
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    return subprocess.run([sys.executable, "-m", "segtrain", "export", *argv], env=env).returncode


def run(args) -> int:
    """Export, print what was written, then check parity unless ``--no-check``; a mismatch is an error."""
    import keras  # loads the backend: only when the command runs

    if keras.backend.backend() != "tensorflow":
        return _run_on_tensorflow(args.argv)
    model = load_checkpoint(args.checkpoint)
    output = Path(args.output) if args.output else export_format(args.format).default_output(args.checkpoint, args.nchw)
    size = None if args.size is None else parse_size(args.size, "--size", rank=None)
    hint, source = "", ""
    if size is None and any(s is None for s in model.input_shape[1:-1]):
        size, hint = default_size(args.checkpoint)
        source = f", the training size in {run_config_path(args.checkpoint)}" if size else ""
    batch = None if args.dynamic_batch else 1
    shape = export_shape(model, size, batch, hint)
    export_model(model, args.format, output, nchw=args.nchw, size=shape[1:-1], batch=batch)
    layout = exported_layout(shape, args.nchw)
    print(f"wrote {output}: input {tuple('N' if d is None else d for d in layout)} {'NCHW' if args.nchw else 'NHWC'}, "
          f"size {format_size(shape[1:-1])} (height x width{source})")
    if args.no_check:
        return 0
    config = args.config or run_config_path(args.checkpoint)
    report = check_parity(model, output, args.format, nchw=args.nchw, images=args.images, config=None if args.images else config)
    print(report.summary())
    if not report.ok:
        raise SegtrainError(f"{output}: the export does not match the Keras model (see the parity table above); please report it with the checkpoint's model config")
    return 0
