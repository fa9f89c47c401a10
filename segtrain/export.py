"""`segtrain export`: a checkpoint -> SavedModel or ONNX, then a parity check against Keras.

The exported graph takes the same raw pixels as the Keras model (float32, 0..255 RGB; the
normalisation is the model's first layer, so it is inside the graph) and returns logits
at the input's spatial size. ONNX exports have a fixed spatial size (OpenCV DNN wants
static shapes) and, by default, a fixed batch of 1. ``nchw=True`` puts a transpose at
both ends of the graph: input ``(N, C, H, W)`` as built by ``cv2.dnn.blobFromImage`` and
output ``(N, classes, H, W)``; otherwise both stay channels-last like the Keras model.

The parity check runs the export next to the Keras model on real images whenever any are
at hand (given files, else a few of the run config's val split), random 0..255 pixels
only when none are, in every runtime a deployer is likely to use (onnxruntime and OpenCV
DNN for ONNX, TensorFlow for SavedModel), and fails if the logits differ by more than
``atol`` (relative to the largest logit where that exceeds 1) or the per-pixel argmax
agrees on fewer than ``min_agreement`` of the pixels. Random noise is an easy input
(SegNet's max-unpooling agreed on it while real street images did not), so it is never
mixed into a check that has real images.

A checkpoint inside a run folder (``<run>/checkpoints/best.keras``) finds its run's
``config.yaml``: the export size of a dynamic-size model defaults to the training size
(``data.resize`` or ``data.crop``) and the parity images come from its val split.

ONNX conversion freezes a ``tf.function`` with a fixed input signature and converts the
GraphDef with tf2onnx (Keras's own ``model.export(format="onnx")`` refuses functional
models that were never called), followed by a few graph rewrites that keep the file
portable; see ``segtrain.onnx_rewrite``. On JAX and PyTorch, ``segtrain export`` runs
itself again under ``KERAS_BACKEND=tensorflow`` (a ``.keras`` checkpoint loads on any
backend), so export needs TensorFlow installed.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from segtrain.errors import SegtrainError
from segtrain.inference import load_checkpoint, run_config_path
from segtrain.io_utils import IMAGE_EXTENSIONS, format_size, is_image_file, list_images, parse_size
from segtrain.onnx_rewrite import make_portable, rename_tensor

FORMATS = ("savedmodel", "onnx")
ONNX_OPSET = 17
INPUT_NAME = "image"
OUTPUT_NAME = "logits"
EXTRA_HINT = "pip install segtrain[export]"


# --------------------------------------------------------------------------- tools


def _require_onnx_tools():
    """Import the export extra lazily; a missing package is a user error, not a crash."""
    try:
        import cv2
        import onnx
        import onnxruntime
        import tf2onnx
    except ImportError as err:
        raise SegtrainError(f"ONNX export needs the optional packages of the 'export' extra ({err.name} is missing): {EXTRA_HINT}") from err
    # tf2onnx logs the ops it cannot map; onnx_rewrite.make_portable rewrites some of those and
    # _export_onnx reports the rest as a SegtrainError.
    logging.getLogger("tf2onnx").setLevel(logging.CRITICAL)
    return tf2onnx, onnx, onnxruntime, cv2


# --------------------------------------------------------------------------- shapes


def _export_shape(model, size: Sequence[int] | None, batch: int | None, size_hint: str = "") -> tuple:
    """Channels-last input shape of the export: the model's own, ``size`` where it has ``None``.

    A single-number ``size`` applies to every spatial axis. ``size_hint`` ends the error
    for a dynamic model without a size (say where a size could have come from).
    """
    spatial = list(model.input_shape[1:-1])
    channels = model.input_shape[-1]
    if size is not None:
        size = [int(s) for s in size]
        size = size * len(spatial) if len(size) == 1 else size
        if len(size) != len(spatial) or min(size) <= 0:
            raise SegtrainError(f"--size {format_size(size)}: the model has {len(spatial)} spatial axes; give that many positive sizes, e.g. {format_size([64] * len(spatial))}")
        fixed = [(s, t) for s, t in zip(spatial, size) if s is not None and s != t]
        if fixed:
            raise SegtrainError(f"--size {format_size(size)}: the model was built for a fixed input size {format_size(spatial)}; omit --size or use that size")
        spatial = size
    if any(s is None for s in spatial):
        raise SegtrainError(
            f"the model's input size is dynamic {tuple(model.input_shape[1:])}; pass --size "
            f"(height x width, e.g. --size 360x480) to fix it for export{size_hint}"
        )
    return (batch, *spatial, channels)


def training_size(config) -> tuple[tuple[int, ...] | None, str]:
    """(size the run trained at: data.resize, else data.crop, else None; which key said so)."""
    for key in ("resize", "crop"):
        value = getattr(config.data, key)
        if value:
            return tuple(int(v) for v in value), f"data.{key}"
    return None, ""


def _perms(rank: int) -> tuple[list[int], list[int]]:
    """(channels-first -> channels-last, channels-last -> channels-first) for ``rank`` spatial axes."""
    to_last = [0, *range(2, rank + 2), 1]
    to_first = [0, rank + 1, *range(1, rank + 1)]
    return to_last, to_first


def _serving_fn(model, nchw: bool):
    """``x -> logits`` in the exported layout (transposes only at the graph's two ends)."""
    import tensorflow as tf

    rank = len(model.input_shape) - 2
    to_last, to_first = _perms(rank)

    def serve(x):
        if nchw:
            x = tf.transpose(x, to_last)
        y = model(x, training=False)
        return tf.transpose(y, to_first) if nchw else y

    return serve


def _signature(shape_nhwc: tuple, nchw: bool):
    import tensorflow as tf

    to_last, to_first = _perms(len(shape_nhwc) - 2)
    shape = [shape_nhwc[i] for i in to_first] if nchw else list(shape_nhwc)
    return tf.TensorSpec(shape, tf.float32, name=INPUT_NAME)


# --------------------------------------------------------------------------- export


def default_output(checkpoint: str | os.PathLike, format: str, nchw: bool = False) -> Path:
    """``best.keras`` -> ``best.onnx`` / ``best-nchw.onnx`` / ``best_savedmodel``."""
    checkpoint = Path(checkpoint)
    stem = checkpoint.stem + ("-nchw" if nchw else "")
    return checkpoint.with_name(stem + (".onnx" if format == "onnx" else "_savedmodel"))


def export_model(model_or_path, format: str, output: str | os.PathLike, nchw: bool = False,
                 size: Sequence[int] | None = None, batch: int | None = 1,
                 checkpoint: str | os.PathLike | None = None) -> Path:
    """Export a Keras model (or a ``.keras`` path) to ``output``; returns the written path.

    ``size`` fixes spatial sizes the model leaves ``None``; it defaults to the training
    size of the run the checkpoint belongs to (``data.resize`` or ``data.crop`` of
    ``<run>/config.yaml``; ``checkpoint`` names the file a model object came from).
    ``batch`` is the exported batch size (``None`` = dynamic; ONNX defaults to 1, the
    shape OpenCV DNN is happiest with).
    """
    if format not in FORMATS:
        raise SegtrainError(f"--format {format!r}: use one of {', '.join(FORMATS)}")
    if isinstance(model_or_path, (str, os.PathLike)):
        checkpoint, model = model_or_path, load_checkpoint(model_or_path)
    else:
        model = model_or_path
    hint = ""
    if size is None and checkpoint is not None and any(s is None for s in model.input_shape[1:-1]):
        size, hint = default_size(checkpoint)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    shape = _export_shape(model, size, batch, hint)
    if format == "onnx":
        _export_onnx(model, shape, nchw, output)
    else:
        _export_savedmodel(model, shape, nchw, output)
    return output


def default_size(checkpoint: str | os.PathLike) -> tuple[tuple[int, ...] | None, str]:
    """(export size from the checkpoint's run config, or None; what to tell the user if None)."""
    path = run_config_path(checkpoint)
    if path is None:
        return None, f"; no run config at {Path(checkpoint).resolve().parent.parent / 'config.yaml'} to take the training size from"
    from segtrain.config import load_config

    size, _ = training_size(load_config(path))
    if size is None:
        return None, f"; {path} sets neither data.resize nor data.crop, so pass the size the model was trained at"
    return size, ""


def _export_savedmodel(model, shape: tuple, nchw: bool, output: Path) -> None:
    import keras

    serve = _serving_fn(model, nchw)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", lambda x: {OUTPUT_NAME: serve(x)}, input_signature=[_signature(shape, nchw)])
    archive.write_out(str(output), verbose=False)


def _export_onnx(model, shape: tuple, nchw: bool, output: Path) -> None:
    tf2onnx, onnx, _, _ = _require_onnx_tools()
    import tensorflow as tf

    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    # Freeze first and convert the GraphDef: tf2onnx's from_function would turn captured
    # constants (keras Normalization's mean/variance) into extra graph inputs.
    concrete = tf.function(_serving_fn(model, nchw), autograph=False).get_concrete_function(_signature(shape, nchw))
    tf_logger, level = tf.get_logger(), tf.get_logger().level
    tf_logger.setLevel(logging.ERROR)  # tf2onnx calls TF1 APIs: deprecation notices a user cannot act on
    try:
        frozen = convert_variables_to_constants_v2(concrete, lower_control_flow=False, aggressive_inlining=True)
        proto, _ = tf2onnx.convert.from_graph_def(
            frozen.graph.as_graph_def(), input_names=[t.name for t in frozen.inputs],
            output_names=[t.name for t in frozen.outputs], opset=ONNX_OPSET)
    finally:
        tf_logger.setLevel(level)
    proto = make_portable(proto)
    unknown = sorted({n.op_type for n in proto.graph.node if not onnx.defs.has(n.op_type, n.domain)})
    if unknown:
        layers = sorted({n.name.split("/")[1] for n in proto.graph.node if n.op_type in unknown and n.name.count("/") > 1})
        raise SegtrainError(f"ONNX export: TensorFlow ops {unknown} (in layers {layers}) have no ONNX equivalent; rewrite those layers with other keras.ops")
    rename_tensor(proto, proto.graph.input[0].name, INPUT_NAME)
    rename_tensor(proto, proto.graph.output[0].name, OUTPUT_NAME)
    classes = model.output_shape[-1]
    layout = "NCHW" if nchw else "NHWC"
    onnx.helper.set_model_props(proto, {
        "segtrain.layout": layout,
        "segtrain.input": f"{layout} float32 raw pixel values (RGB 0..255); normalisation is inside the graph",
        "segtrain.output": f"{layout} float32 logits with {classes} class channels; argmax over channels = class index",
    })
    onnx.checker.check_model(proto)
    onnx.save(proto, str(output))


# --------------------------------------------------------------------------- parity


@dataclasses.dataclass
class RuntimeParity:
    """How one runtime's logits compare with Keras's on the check inputs."""

    runtime: str
    max_abs_diff: float
    agreement: float  # fraction of pixels whose argmax class equals Keras's
    pixels: int
    share_over: float = 0.0  # fraction of logits whose difference exceeds the report's limit


@dataclasses.dataclass
class ParityReport:
    """Per-runtime comparison; passes if every runtime is within ``limit`` and ``min_agreement``.

    ``limit = atol * max(1, scale)`` where ``scale`` is the largest |Keras logit|: ``atol``
    is absolute for logits within +-1 and relative beyond, since fp32 rounding grows with
    the magnitude (a full-width SegNet-Basic reaches |logits| ~ 60 at initialisation, and
    OpenCV's different summation order then differs by ~1.5e-4 = 2.4e-6 relative).
    """

    path: Path
    format: str
    results: list[RuntimeParity]
    atol: float
    min_agreement: float
    images: int
    scale: float
    inputs: str = ""  # what the check ran on, e.g. "4 images of val split of runs/x/config.yaml"
    index_unpooling: bool = False  # the model unpools by max-pool indices (near-tie flips, docs/export.md)

    @property
    def limit(self) -> float:
        return self.atol * max(1.0, self.scale)

    def passes(self, r: RuntimeParity) -> bool:
        """Within ``limit`` everywhere; for index unpooling, outside it on at most ``1 - min_agreement``
        of the logits (a near-tied pooling window moves one value a pixel: inherent, docs/export.md)."""
        if r.agreement < self.min_agreement:
            return False
        if self.index_unpooling:
            return r.share_over <= 1.0 - self.min_agreement
        return r.max_abs_diff <= self.limit

    @property
    def ok(self) -> bool:
        return all(self.passes(r) for r in self.results)

    def summary(self) -> str:
        lines = [f"parity of {self.path} ({self.format}) vs Keras on {self.inputs or f'{self.images} images'}, "
                 f"max |Keras logit| {self.scale:.3g} (limits: max |diff| <= {self.limit:.3g}, "
                 f"argmax agreement >= {self.min_agreement:.2%}):"]
        if self.index_unpooling:
            lines.append(f"  (max-unpooling model: near-tied pooling windows may move a value one pixel, so up to "
                         f"{1 - self.min_agreement:.2%} of the logits may exceed the limit; see docs/export.md)")
        for r in self.results:
            lines.append(f"  {r.runtime:<12} max |logit diff| {r.max_abs_diff:.3g} ({r.share_over:.4%} of logits over "
                         f"the limit)  argmax agreement {r.agreement:.4%} of {r.pixels} pixels  "
                         f"{'ok' if self.passes(r) else 'FAIL'}")
        return "\n".join(lines)


def _read_resized(path: Path, spatial: Sequence[int], flag: str) -> np.ndarray:
    """An image file as RGB at the export's (height, width), resized bilinearly as ``data.resize`` does."""
    from PIL import Image

    from segtrain.data.decode import read_image

    try:
        rgb = read_image(path)
    except SegtrainError as err:
        raise SegtrainError(f"{flag}: {err}") from None
    return np.asarray(Image.fromarray(rgb).resize((spatial[1], spatial[0]), Image.BILINEAR))


def _expand_image_paths(paths: Iterable[str | os.PathLike]) -> list[Path]:
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            found = list_images(p)
            if not found:
                raise SegtrainError(f"--images {p}: no images ({', '.join(IMAGE_EXTENSIONS)}) in the folder")
            out += found
        elif p.is_file() and is_image_file(p):
            out.append(p)
        else:
            raise SegtrainError(f"--images {p}: no such image file or folder")
    return out


def split_images(config, split: str = "val", limit: int = 4) -> tuple[list[Path], str]:
    """Up to ``limit`` images spread evenly over a config's split, and their description."""
    from segtrain.config import Config, load_config
    from segtrain.data.sources import list_samples, split_name

    if not isinstance(config, Config):
        config = load_config(config)
    samples = list_samples(config.data, split)
    picks = sorted(set(np.linspace(0, len(samples) - 1, min(limit, len(samples))).round().astype(int).tolist()))
    return [samples[i].image for i in picks], f"{len(picks)} images of the {split_name(config.data, split)} split of {config.source}"


def check_parity(model, exported: str | os.PathLike, format: str, nchw: bool = False,
                 images: Iterable[str | os.PathLike] = (), count: int | None = None, seed: int = 0,
                 atol: float = 1e-4, min_agreement: float = 0.9999, config=None,
                 max_images: int = 4) -> ParityReport:
    """Run ``exported`` in its runtimes next to ``model`` (Keras) and compare the logits.

    Inputs are real images when any are at hand: ``images`` (files or folders), else up to
    ``max_images`` of the val split of ``config`` (a ``Config`` or a YAML path), resized to
    the export size. ``count`` random 0..255 images are added; by default (``None``) only
    when there is no real image, because easy synthetic inputs can agree where real ones
    do not and would dilute the argmax agreement. ONNX is checked in onnxruntime and OpenCV
    DNN, a SavedModel in TensorFlow. ``report.ok`` says whether it passes: every runtime's
    max |logit diff| <= ``atol * max(1, max |Keras logit|)`` and argmax agreement >=
    ``min_agreement``.
    """
    exported = Path(exported)
    if format not in FORMATS:
        raise SegtrainError(f"--format {format!r}: use one of {', '.join(FORMATS)}")
    runners = _onnx_runners(exported) if format == "onnx" else _savedmodel_runners(exported)
    shape, batch = _exported_input_shape(runners["shape"], nchw)
    spatial, channels = shape[1:-1], shape[-1]
    image_model = len(spatial) == 2 and channels == 3
    paths, described, missing = _expand_image_paths(images), [], "no real images: pass --images or --config"
    if paths:
        if not image_model:
            raise SegtrainError(f"--images: image files only fit 2-D RGB models, this one takes {tuple(shape[1:])}; omit --images")
        described.append(f"{len(paths)} given image(s)")
    elif config is not None and image_model:
        try:
            paths, text = split_images(config, limit=max_images)
            described.append(text)
        except SegtrainError as err:  # e.g. the dataset is not on the machine that exports
            missing = f"the config's val images are unavailable: {err}"
    arrays = [_read_resized(p, spatial, "--images" if images else "parity image") for p in paths]
    count = (0 if arrays else 3) if count is None else count
    if count:
        arrays += list(np.random.default_rng(seed).integers(0, 256, (count, *spatial, channels)))
        described.append(f"{count} random 0..255 image(s)" + ("" if paths else f" ({missing})"))
    if not arrays:
        raise SegtrainError("parity check: no images to run; pass --images or a count of random images")
    x = np.stack(arrays).astype(np.float32)
    reference = np.concatenate([np.asarray(model(x[i : i + 1], training=False)) for i in range(len(x))])
    rank = x.ndim - 2
    to_last, to_first = _perms(rank)
    feed = x.transpose(to_first) if nchw else x
    scale = float(np.max(np.abs(reference)))
    limit = atol * max(1.0, scale)
    results = []
    for name, run in runners["run"].items():
        step = batch or len(feed)
        out = np.concatenate([run(feed[i : i + step]) for i in range(0, len(feed), step)])
        out = out.transpose(to_last) if nchw else out
        if out.shape != reference.shape:
            raise SegtrainError(f"{exported}: {name} returns shape {out.shape}, Keras {reference.shape}; re-export it")
        agree = np.argmax(out, -1) == np.argmax(reference, -1)
        diff = np.abs(out - reference)
        results.append(RuntimeParity(name, float(diff.max()), float(agree.mean()), int(agree.size),
                                     float(np.mean(diff > limit))))
    return ParityReport(exported, format, results, atol, min_agreement, len(x), scale, " + ".join(described),
                        _unpools_by_index(model))


def _unpools_by_index(model) -> bool:
    from segtrain.models.pooling import MaxUnpool

    return any(isinstance(layer, MaxUnpool) for layer in model._flatten_layers(include_self=False, recursive=True))


def _exported_input_shape(shape: Sequence, nchw: bool) -> tuple[tuple, int | None]:
    """(channels-last shape, fixed batch or None) of the exported input."""
    shape = list(shape)
    batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
    if nchw:
        to_last, _ = _perms(len(shape) - 2)
        shape = [shape[i] for i in to_last]
    return tuple(shape), batch


def _onnx_runners(path: Path) -> dict:
    _, _, ort, cv2 = _require_onnx_tools()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    net = cv2.dnn.readNet(str(path))

    def run_opencv(x):
        net.setInput(np.ascontiguousarray(x))
        return net.forward()

    return {
        "shape": session.get_inputs()[0].shape,
        "run": {
            "onnxruntime": lambda x: session.run(None, {INPUT_NAME: x})[0],
            "opencv-dnn": run_opencv,
        },
    }


def _savedmodel_runners(path: Path) -> dict:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    spec = loaded.serve.input_signature[0]
    return {
        "shape": [d if d is not None else -1 for d in spec.shape.as_list()],
        "run": {"tensorflow": lambda x: loaded.serve(tf.constant(x))[OUTPUT_NAME].numpy()},
    }


# --------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help=".keras checkpoint to export")
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--output", help="output path (default: next to the checkpoint: <stem>.onnx or <stem>_savedmodel)")
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
    import subprocess
    import sys

    from segtrain.backend import require_tensorflow

    require_tensorflow("segtrain export (it converts through TensorFlow)")
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    return subprocess.run([sys.executable, "-m", "segtrain", "export", *argv], env=env).returncode


def run(args) -> int:
    import keras

    if keras.backend.backend() != "tensorflow":
        return _run_on_tensorflow(args.argv)
    model = load_checkpoint(args.checkpoint)
    output = Path(args.output) if args.output else default_output(args.checkpoint, args.format, args.nchw)
    size = None if args.size is None else parse_size(args.size, "--size", rank=None)
    hint, source = "", ""
    if size is None and any(s is None for s in model.input_shape[1:-1]):
        size, hint = default_size(args.checkpoint)
        source = f", the training size in {run_config_path(args.checkpoint)}" if size else ""
    batch = None if args.dynamic_batch else 1
    shape = _export_shape(model, size, batch, hint)
    export_model(model, args.format, output, nchw=args.nchw, size=shape[1:-1], batch=batch)
    to_first = _perms(len(shape) - 2)[1]
    layout = [shape[i] for i in to_first] if args.nchw else list(shape)
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
