"""`segtrain export`: a checkpoint -> SavedModel or ONNX, then a parity check against Keras.

The exported graph takes the same raw pixels as the Keras model (float32, 0..255 RGB; the
normalisation is the model's first layer, so it is inside the graph) and returns logits
at the input's spatial size. ONNX exports have a fixed spatial size (OpenCV DNN wants
static shapes) and, by default, a fixed batch of 1. ``nchw=True`` puts a transpose at
both ends of the graph: input ``(N, C, H, W)`` as built by ``cv2.dnn.blobFromImage`` and
output ``(N, classes, H, W)``; otherwise both stay channels-last like the Keras model.

The parity check runs the export next to the Keras model on a few images (random 0..255
pixels at the export size, plus any given image files) in every runtime a deployer is
likely to use (onnxruntime and OpenCV DNN for ONNX, TensorFlow for SavedModel) and fails
if the logits differ by more than ``atol`` (relative to the largest logit where that
exceeds 1) or the per-pixel argmax agrees on fewer than ``min_agreement`` of the pixels.

ONNX conversion freezes a ``tf.function`` with a fixed input signature and converts the
GraphDef with tf2onnx (Keras's own ``model.export(format="onnx")`` refuses functional
models that were never called), followed by a few graph rewrites that keep the file
portable; see ``_make_portable``.
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

FORMATS = ("savedmodel", "onnx")
ONNX_OPSET = 17
INPUT_NAME = "image"
OUTPUT_NAME = "logits"
EXTRA_HINT = "pip install segtrain[export]"


# --------------------------------------------------------------------------- loading


def load_checkpoint(path: str | os.PathLike):
    """Open a ``.keras`` checkpoint (importing the zoo first so its layers are registered)."""
    import keras

    import segtrain.models  # noqa: F401  (registers the zoo's custom layers)

    path = Path(path)
    if not path.is_file():
        raise SegtrainError(f"--checkpoint {path}: no such file; pass a .keras checkpoint such as runs/<name>/checkpoints/best.keras")
    try:
        return keras.models.load_model(path, compile=False)
    except (ValueError, OSError) as err:
        raise SegtrainError(f"--checkpoint {path}: not a loadable Keras model ({err}); pass a .keras file written by segtrain train") from err


def _require_onnx_tools():
    """Import the export extra lazily; a missing package is a user error, not a crash."""
    try:
        import cv2
        import onnx
        import onnxruntime
        import tf2onnx
    except ImportError as err:
        raise SegtrainError(f"ONNX export needs the optional packages of the 'export' extra ({err.name} is missing): {EXTRA_HINT}") from err
    # tf2onnx logs the ops it cannot map; _make_portable rewrites some of those and
    # _export_onnx reports the rest as a SegtrainError.
    logging.getLogger("tf2onnx").setLevel(logging.CRITICAL)
    return tf2onnx, onnx, onnxruntime, cv2


# --------------------------------------------------------------------------- shapes


def _export_shape(model, size: Sequence[int] | None, batch: int | None) -> tuple:
    """Channels-last input shape of the export: the model's own, ``size`` where it has ``None``."""
    spatial = list(model.input_shape[1:-1])
    channels = model.input_shape[-1]
    if size is not None:
        size = [int(s) for s in size]
        if len(size) != len(spatial) or min(size) <= 0:
            raise SegtrainError(f"--size {'x'.join(map(str, size))}: the model has {len(spatial)} spatial axes; give that many positive sizes, e.g. 256x256")
        fixed = [(s, t) for s, t in zip(spatial, size) if s is not None and s != t]
        if fixed:
            raise SegtrainError(f"--size {'x'.join(map(str, size))}: the model was built for a fixed input size {spatial}; omit --size or use that size")
        spatial = size
    if any(s is None for s in spatial):
        raise SegtrainError(f"the model's input size is dynamic {model.input_shape[1:]}; pass --size (e.g. --size 360x480) to fix it for export")
    return (batch, *spatial, channels)


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
                 size: Sequence[int] | None = None, batch: int | None = 1) -> Path:
    """Export a Keras model (or a ``.keras`` path) to ``output``; returns the written path.

    ``size`` fixes spatial sizes the model leaves ``None``; ``batch`` is the exported batch
    size (``None`` = dynamic; ONNX defaults to 1, the shape OpenCV DNN is happiest with).
    """
    if format not in FORMATS:
        raise SegtrainError(f"--format {format!r}: use one of {', '.join(FORMATS)}")
    model = load_checkpoint(model_or_path) if isinstance(model_or_path, (str, os.PathLike)) else model_or_path
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    shape = _export_shape(model, size, batch)
    if format == "onnx":
        _export_onnx(model, shape, nchw, output)
    else:
        _export_savedmodel(model, shape, nchw, output)
    return output


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
    frozen = convert_variables_to_constants_v2(concrete, lower_control_flow=False, aggressive_inlining=True)
    proto, _ = tf2onnx.convert.from_graph_def(
        frozen.graph.as_graph_def(), input_names=[t.name for t in frozen.inputs],
        output_names=[t.name for t in frozen.outputs], opset=ONNX_OPSET)
    proto = _make_portable(proto)
    unknown = sorted({n.op_type for n in proto.graph.node if not onnx.defs.has(n.op_type, n.domain)})
    if unknown:
        layers = sorted({n.name.split("/")[1] for n in proto.graph.node if n.op_type in unknown and n.name.count("/") > 1})
        raise SegtrainError(f"ONNX export: TensorFlow ops {unknown} (in layers {layers}) have no ONNX equivalent; rewrite those layers with other keras.ops")
    _rename(proto, proto.graph.input[0].name, INPUT_NAME)
    _rename(proto, proto.graph.output[0].name, OUTPUT_NAME)
    classes = model.output_shape[-1]
    layout = "NCHW" if nchw else "NHWC"
    onnx.helper.set_model_props(proto, {
        "segtrain.layout": layout,
        "segtrain.input": f"{layout} float32 raw pixel values (RGB 0..255); normalisation is inside the graph",
        "segtrain.output": f"{layout} float32 logits with {classes} class channels; argmax over channels = class index",
    })
    onnx.checker.check_model(proto)
    onnx.save(proto, str(output))


def _rename(proto, old: str, name: str) -> None:
    """Rename graph input/output tensor ``old`` (tf2onnx keeps TF's ``image:0`` / ``Identity:0``)."""
    for node in proto.graph.node:
        node.output[:] = [name if o == old else o for o in node.output]
        node.input[:] = [name if i == old else i for i in node.input]
    for value in [*proto.graph.input, *proto.graph.output]:
        if value.name == old:
            value.name = name


# --------------------------------------------------------------------------- portable ONNX


def _make_portable(proto):
    """Rewrite the few patterns that onnxruntime or OpenCV DNN cannot run as tf2onnx leaves them.

    - A 1x1 Conv with fused zero padding computes garbage in OpenCV 5: the padding is
      split back out into a Pad node.
    - ReduceMean & co. over non-adjacent axes (GroupNormalization's [1, 2, 4]) compute
      garbage in OpenCV 5: the reduced axes are transposed to the end first.
    """
    import onnx

    proto = onnx.shape_inference.infer_shapes(proto)
    graph = _Graph(proto)
    _unfuse_pointwise_pads(graph)
    _adjacent_reductions(graph)
    graph.commit()
    return proto


class _Graph:
    """Minimal mutable view of an ONNX graph: node list, consumers, ranks, fresh names."""

    def __init__(self, proto):
        self.proto = proto
        self.graph = proto.graph
        self.nodes = list(self.graph.node)
        self.ranks = {}
        for info in [*self.graph.input, *self.graph.value_info, *self.graph.output]:
            t = info.type.tensor_type
            if t.HasField("shape"):
                self.ranks[info.name] = len(t.shape.dim)
        self._count = 0

    def fresh(self, base: str) -> str:
        self._count += 1
        return f"{base}__portable{self._count}"

    def const(self, base: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        name = self.fresh(base)
        self.graph.initializer.append(numpy_helper.from_array(array, name))
        return name

    def consumers(self, name: str) -> list:
        return [n for n in self.nodes if name in n.input]

    def replace(self, old: list, new: list) -> None:
        at = min(self.nodes.index(n) for n in old)
        self.nodes = [n for n in self.nodes if all(n is not o for o in old)]
        self.nodes[at:at] = new

    def commit(self) -> None:
        del self.graph.node[:]
        self.graph.node.extend(self.nodes)
        used = {i for n in self.nodes for i in n.input}
        kept = [t for t in self.graph.initializer if t.name in used]
        del self.graph.initializer[:]
        self.graph.initializer.extend(kept)


def _attr(node, name: str, default=None):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _set_attr(node, name: str, value) -> None:
    from onnx import helper

    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(kept + [helper.make_attribute(name, value)])


def _unfuse_pointwise_pads(g: _Graph) -> None:
    from onnx import helper

    for conv in [n for n in g.nodes if n.op_type == "Conv"]:
        kernel, pads = _attr(conv, "kernel_shape"), _attr(conv, "pads")
        if not kernel or any(k != 1 for k in kernel) or not pads or not any(pads):
            continue
        rank = len(kernel)
        full = [0, 0, *pads[:rank], 0, 0, *pads[rank:]]
        padded = g.fresh(conv.name + "/pad")
        pad = helper.make_node("Pad", [conv.input[0], g.const(conv.name + "/pads", np.array(full, np.int64))],
                               [padded], name=padded, mode="constant")
        conv.input[0] = padded
        _set_attr(conv, "pads", [0] * len(pads))
        g.replace([conv], [pad, conv])


_REDUCTIONS = ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2", "ReduceLogSumExp")


def _adjacent_reductions(g: _Graph) -> None:
    from onnx import helper

    for node in [n for n in g.nodes if n.op_type in _REDUCTIONS]:
        axes, rank = _attr(node, "axes"), g.ranks.get(node.input[0])
        if not axes or rank is None:
            continue
        axes = sorted(a % rank for a in axes)
        if axes == list(range(axes[0], axes[0] + len(axes))):
            continue
        kept = [a for a in range(rank) if a not in axes]
        perm = kept + axes
        moved = g.fresh(node.name + "/axes_last")
        new = [helper.make_node("Transpose", [node.input[0]], [moved], name=moved, perm=perm)]
        node.input[0] = moved
        _set_attr(node, "axes", list(range(len(kept), rank)))
        new.append(node)
        if _attr(node, "keepdims", 1):
            out = node.output[0]
            reduced = g.fresh(node.name + "/reduced")
            node.output[0] = reduced
            new.append(helper.make_node("Transpose", [reduced], [out], name=g.fresh(node.name + "/axes_back"),
                                        perm=np.argsort(perm).tolist()))
        g.replace([node], new)


# --------------------------------------------------------------------------- parity


@dataclasses.dataclass
class RuntimeParity:
    """How one runtime's logits compare with Keras's on the check inputs."""

    runtime: str
    max_abs_diff: float
    agreement: float  # fraction of pixels whose argmax class equals Keras's
    pixels: int


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

    @property
    def limit(self) -> float:
        return self.atol * max(1.0, self.scale)

    def passes(self, r: RuntimeParity) -> bool:
        return r.max_abs_diff <= self.limit and r.agreement >= self.min_agreement

    @property
    def ok(self) -> bool:
        return all(self.passes(r) for r in self.results)

    def summary(self) -> str:
        lines = [f"parity of {self.path} ({self.format}) vs Keras on {self.images} images, "
                 f"max |Keras logit| {self.scale:.3g} (limits: max |diff| <= {self.limit:.3g}, "
                 f"argmax agreement >= {self.min_agreement:.2%}):"]
        for r in self.results:
            lines.append(f"  {r.runtime:<12} max |logit diff| {r.max_abs_diff:.3g}  argmax agreement "
                         f"{r.agreement:.4%} of {r.pixels} pixels  {'ok' if self.passes(r) else 'FAIL'}")
        return "\n".join(lines)


def _check_images(shape_nhwc: tuple, paths: Iterable[str | os.PathLike], count: int, seed: int) -> np.ndarray:
    """Given image files resized to the export size, plus ``count`` random 0..255 images."""
    spatial, channels = shape_nhwc[1:-1], shape_nhwc[-1]
    arrays = []
    for path in paths:
        if len(spatial) != 2 or channels != 3:
            raise SegtrainError(f"--images {path}: image files only fit 2-D RGB models; omit --images")
        from PIL import Image

        try:
            with Image.open(path) as img:
                arrays.append(np.asarray(img.convert("RGB").resize((spatial[1], spatial[0]), Image.BILINEAR)))
        except OSError as err:
            raise SegtrainError(f"--images {path}: cannot read it as an image ({err})") from err
    rng = np.random.default_rng(seed)
    arrays += list(rng.integers(0, 256, (count, *spatial, channels)))
    return np.stack(arrays).astype(np.float32)


def _expand_image_paths(paths: Iterable[str | os.PathLike]) -> list[Path]:
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.iterdir() if f.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp"))
        elif p.is_file():
            out.append(p)
        else:
            raise SegtrainError(f"--images {p}: no such file or folder")
    return out


def check_parity(model, exported: str | os.PathLike, format: str, nchw: bool = False,
                 images: Iterable[str | os.PathLike] = (), count: int = 3, seed: int = 0,
                 atol: float = 1e-4, min_agreement: float = 0.9999) -> ParityReport:
    """Run ``exported`` in its runtimes next to ``model`` (Keras) and compare the logits.

    Inputs are ``images`` (files or folders, resized to the export size) plus ``count``
    random 0..255 images. ONNX is checked in onnxruntime and OpenCV DNN, a SavedModel in
    TensorFlow. Returns the report; ``report.ok`` says whether it passes: every runtime's
    max |logit diff| <= ``atol * max(1, max |Keras logit|)`` and argmax agreement >=
    ``min_agreement``.
    """
    exported = Path(exported)
    if format not in FORMATS:
        raise SegtrainError(f"--format {format!r}: use one of {', '.join(FORMATS)}")
    runners = _onnx_runners(exported) if format == "onnx" else _savedmodel_runners(exported)
    shape, batch = _exported_input_shape(runners["shape"], nchw)
    x = _check_images(shape, _expand_image_paths(images), count, seed)
    reference = np.concatenate([np.asarray(model(x[i : i + 1], training=False)) for i in range(len(x))])
    rank = x.ndim - 2
    to_last, to_first = _perms(rank)
    feed = x.transpose(to_first) if nchw else x
    results = []
    for name, run in runners["run"].items():
        step = batch or len(feed)
        out = np.concatenate([run(feed[i : i + step]) for i in range(0, len(feed), step)])
        out = out.transpose(to_last) if nchw else out
        if out.shape != reference.shape:
            raise SegtrainError(f"{exported}: {name} returns shape {out.shape}, Keras {reference.shape}; re-export it")
        agree = np.argmax(out, -1) == np.argmax(reference, -1)
        results.append(RuntimeParity(name, float(np.max(np.abs(out - reference))), float(agree.mean()), int(agree.size)))
    scale = float(np.max(np.abs(reference)))
    return ParityReport(exported, format, results, atol, min_agreement, len(x), scale)


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


def _parse_size(text: str) -> list[int]:
    try:
        return [int(v) for v in text.lower().replace(",", "x").split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size {text!r}: expected e.g. 360x480") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help=".keras checkpoint to export")
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--output", help="output path (default: next to the checkpoint: <stem>.onnx or <stem>_savedmodel)")
    parser.add_argument("--nchw", action="store_true",
                        help="channels-first input (N, C, H, W) as cv2.dnn.blobFromImage builds it, and (N, classes, H, W) output")
    parser.add_argument("--size", type=_parse_size, help="spatial size to fix when the model's is dynamic, e.g. 360x480")
    parser.add_argument("--dynamic-batch", action="store_true", help="leave the batch dimension dynamic (default: 1)")
    parser.add_argument("--images", nargs="+", default=[], metavar="PATH",
                        help="image files or folders to add to the parity check's random images")
    parser.add_argument("--no-check", action="store_true", help="skip the parity check")


def run(args) -> int:
    model = load_checkpoint(args.checkpoint)
    output = Path(args.output) if args.output else default_output(args.checkpoint, args.format, args.nchw)
    export_model(model, args.format, output, nchw=args.nchw, size=args.size, batch=None if args.dynamic_batch else 1)
    print(f"wrote {output}")
    if args.no_check:
        return 0
    report = check_parity(model, output, args.format, nchw=args.nchw, images=args.images)
    print(report.summary())
    if not report.ok:
        raise SegtrainError(f"{output}: the export does not match the Keras model (see the parity table above); please report it with the checkpoint's model config")
    return 0
