"""``export_model``: a Keras model or checkpoint written in one of the table's formats."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from segtrain.errors import SegtrainError
from segtrain.inference import load_checkpoint
from segtrain.export.formats import export_format
from segtrain.export.shapes import default_size, export_shape


def export_model(model_or_path, format: str, output: str | os.PathLike, nchw: bool = False,
                 size: Sequence[int] | None = None, batch: int | None = 1,
                 checkpoint: str | os.PathLike | None = None, **options: Any) -> Path:
    """Export a Keras model (or a ``.keras`` path) to ``output``; returns the written path.

    ``size`` fixes spatial sizes the model leaves ``None``; it defaults to the training
    size of the run the checkpoint belongs to (``data.resize`` or ``data.crop`` of
    ``<run>/config.yaml``; ``checkpoint`` names the file a model object came from).
    ``batch`` is the exported batch size (``None`` = dynamic; ONNX defaults to 1, the
    shape OpenCV DNN is happiest with). ``options`` go to the format's writer (e.g. ONNX's
    ``opset``); a format refuses options it does not list. A model trained in mixed precision
    is exported as its float32 twin (same weights; quantization is ``quantize``'s business).
    """
    fmt = export_format(format)
    unknown = sorted(set(options) - set(fmt.options))
    if unknown:
        raise SegtrainError(f"format {fmt.name!r} takes no option {unknown[0]!r} (its options: {', '.join(fmt.options) or 'none'})")
    from segtrain.precision import float32_copy  # imports Keras (and its backend): only when a model is exported

    if isinstance(model_or_path, (str, os.PathLike)):
        checkpoint, model_or_path = model_or_path, load_checkpoint(model_or_path)
    model = float32_copy(model_or_path)  # mixed-precision layers would write bf16/fp16 nodes that runtimes reject
    hint = ""
    if size is None and checkpoint is not None and any(s is None for s in model.input_shape[1:-1]):
        size, hint = default_size(checkpoint)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    shape = export_shape(model, size, batch, hint)
    fmt.write(model, shape, nchw, output, **{**fmt.options, **options})
    return output
