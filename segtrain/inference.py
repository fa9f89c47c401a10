"""Prediction for one image at any size: whole image or sliding window, flip / multi-scale TTA.

Checkpoints take raw pixels (the normalisation is the model's first layer) and return
logits at the input's size, so an image goes in as it was decoded. Test-time augmentation
averages *softmax probabilities* over the flips and scales (mmsegmentation's convention);
a probability map is resized back to the image size before averaging.

Sliding windows (``segtrain.sliding_window``, one N-D loop for signals, images and volumes):
windows of ``window`` pixels start every ``stride`` pixels, the last one flush with the edge,
and overlapping outputs are blended either by trusting each window only away from its inner
edges (``margin``, the default for 2-D images: exact for a receptive field within the margin)
or by a Gaussian importance map (``gaussian``, nnU-Net's blend, the default for volumes).

Keras is imported on first use, so ``segtrain evaluate --pred-dir`` stays TensorFlow-free.
"""

from __future__ import annotations

import argparse
import weakref
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from segtrain.data.palette import ColorTable
from segtrain.errors import SegtrainError
from segtrain.io_utils import (
    IMAGE_EXTENSIONS,
    format_size,
    list_images,
    parse_size,
    per_axis,
    progress,
    write_png,
)
from segtrain.sliding_window import BLENDS, sliding_window

WindowSize = int | tuple[int, ...] | None


# ---------------------------------------------------------------- checkpoint and forward pass
def load_checkpoint(path: str | Path):
    """A ``.keras`` checkpoint loaded with plain ``keras.models.load_model`` (no compile).

    The one loader of evaluate, predict and export. A missing file and a corrupt one get
    different messages (Keras itself says "File not found" for both).
    """
    import zipfile

    import keras

    import segtrain.models  # noqa: F401  (registers the zoo's custom layers)

    path = Path(path)
    if not path.is_file():
        raise SegtrainError(
            f"{path}: checkpoint not found; pass a .keras file written by `segtrain train`, "
            "such as runs/<name>/checkpoints/best.keras"
        )
    if not zipfile.is_zipfile(path):
        raise SegtrainError(
            f"{path}: checkpoint is corrupt or unreadable (not a .keras zip archive; truncated by an interrupted "
            "copy or save?); use another checkpoint such as last.keras, or copy it again"
        )
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as err:  # noqa: BLE001 - Keras raises many types for a bad archive
        message = " ".join(str(err).split())[:300]
        if "safe_mode" in message:  # Keras's safe mode refuses the Python code of a Lambda layer: not a damaged file
            raise SegtrainError(
                f"{path}: the checkpoint holds a Lambda layer (Python code), which Keras refuses to load in safe mode; "
                "train a model without Lambda layers (the zoo has none), or load it with "
                "keras.models.load_model(path, safe_mode=False) only if you trust the file"
            ) from None
        raise SegtrainError(
            f"{path}: checkpoint is corrupt or unreadable ({type(err).__name__}: {message}); "
            "is it a .keras file written by segtrain?"
        ) from None


def run_config_path(checkpoint: str | Path) -> Path | None:
    """The ``config.yaml`` of the run a checkpoint belongs to (``<run>/checkpoints/x.keras``), if it is there."""
    path = Path(checkpoint).resolve().parent.parent / "config.yaml"
    return path if path.is_file() else None


def num_outputs(model) -> int:
    """Number of classes a model predicts (channels of its logits)."""
    return int(model.output_shape[-1])


def _fixed_size(model) -> tuple[int, ...] | None:
    """The spatial size a model was built for, or None when it accepts any size."""
    sizes = model.input_shape[1:-1]
    return tuple(int(s) for s in sizes) if all(s is not None for s in sizes) else None


# model -> its jit-compiled inference forward, on JAX (see _forward)
_JAX_FORWARD: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _forward(model, batch: np.ndarray) -> np.ndarray:
    """Logits of ``model`` in inference mode. On JAX through one ``jax.jit`` per model: run
    eagerly, JAX compiles each of the model's ops separately (for each new input shape),
    which cost 5 s of a 6-s validation of a small model."""
    import keras

    from segtrain.backend import no_grad

    images = batch.astype(np.float32)
    if keras.backend.backend() == "jax":
        forward = _JAX_FORWARD.get(model)
        if forward is None:
            from segtrain.engines import compile_forward

            forward = _JAX_FORWARD[model] = compile_forward(lambda x: model(x, training=False), model)
        logits = keras.ops.convert_to_numpy(forward(images)).astype(np.float32)
    else:
        with no_grad():
            logits = keras.ops.convert_to_numpy(model(images, training=False)).astype(np.float32)
    if logits.shape[1:-1] != batch.shape[1:-1]:
        raise SegtrainError(
            f"model output is {format_size(logits.shape[1:-1])} for a {format_size(batch.shape[1:-1])} input; "
            "segtrain expects logits at the input's size"
        )
    return logits


def resize_bilinear(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an (H, W, C) float array (half-pixel centres, no antialiasing)."""
    import keras

    if array.shape[:2] == tuple(size):
        return array
    out = keras.ops.image.resize(array.astype(np.float32), size, interpolation="bilinear")
    return keras.ops.convert_to_numpy(out)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


# ---------------------------------------------------------------- sliding window
def _window_sizes(value: int | Sequence[int], rank: int, flag: str) -> tuple[int, ...]:
    """``--window`` / ``--stride``: one size for every axis (``512`` or ``(512,)``) or one per axis."""
    sizes = (int(value),) if isinstance(value, (int, np.integer)) else tuple(int(v) for v in value)
    try:
        return per_axis(sizes[0] if len(sizes) == 1 else sizes, rank, flag)
    except ValueError:
        raise SegtrainError(f"{flag} {format_size(sizes)}: give one size or {rank} sizes (one per spatial axis of this model)") from None


def predict_logits(
    model,
    image: np.ndarray,
    *,
    window: WindowSize = None,
    stride: WindowSize = None,
    batch_size: int = 4,
    blend: str | None = None,
) -> np.ndarray:
    """(*spatial, K) float32 logits of one raw (*spatial, C) array, whole or by sliding windows.

    Works for 1-D signals, 2-D images and 3-D volumes alike (``segtrain.sliding_window``).
    A model built for a fixed input size is always run by windows of that size. ``stride``
    defaults to two thirds of the window (512 -> 341) with ``blend="margin"`` and to half of
    it (nnU-Net's step 0.5) with ``blend="gaussian"``. ``blend`` None is ``margin`` for 2-D
    images (segtrain's behaviour before volumes) and ``gaussian`` for 1-D and 3-D inputs.
    """
    image = np.asarray(image, dtype=np.float32)
    rank = len(model.input_shape) - 2
    if image.ndim != rank + 1:
        raise SegtrainError(f"expected one ({rank} spatial axes, channels) array for this model, got shape {image.shape}")
    fixed = _fixed_size(model)
    if window is None and fixed is None:
        return _forward(model, image[None])[0]
    blend = blend or ("margin" if rank == 2 else "gaussian")
    win = _window_sizes(window, rank, "--window") if window is not None else fixed
    if fixed is not None and win != fixed:
        raise SegtrainError(f"--window {format_size(win)}: this model only accepts {format_size(fixed)} inputs; use that window")
    if stride is not None:
        step = _window_sizes(stride, rank, "--stride")
    else:
        step = tuple(max(w * 2 // 3 if blend == "margin" else w // 2, 1) for w in win)
    if not all(0 < s <= w for s, w in zip(step, win)):
        raise SegtrainError(f"--stride {format_size(step)}: must be between 1 and the window size {format_size(win)}")
    if fixed is None:  # an any-size model never needs a window larger than the array
        win = tuple(min(w, n) for w, n in zip(win, image.shape[:-1]))
        step = tuple(min(s, w) for s, w in zip(step, win))
    return sliding_window(lambda batch: _forward(model, batch), image, win, step, batch_size=batch_size, blend=blend)


def predict_probs(
    model,
    image: np.ndarray,
    *,
    flip: bool = False,
    scales: Sequence[float] = (1.0,),
    window: WindowSize = None,
    stride: WindowSize = None,
    batch_size: int = 4,
    blend: str | None = None,
) -> np.ndarray:
    """(H, W, C) softmax probabilities averaged over scales and (optionally) horizontal flips."""
    image = np.asarray(image, dtype=np.float32)
    height, width = image.shape[:2]
    total, passes = None, 0
    for scale in scales:
        size = (max(int(round(height * scale)), 1), max(int(round(width * scale)), 1))
        scaled = resize_bilinear(image, size)
        for flipped in (False, True) if flip else (False,):
            view = scaled[:, ::-1] if flipped else scaled
            logits = predict_logits(model, np.ascontiguousarray(view), window=window, stride=stride, batch_size=batch_size, blend=blend)
            probs = resize_bilinear(softmax(logits[:, ::-1] if flipped else logits), (height, width))
            total = probs if total is None else total + probs
            passes += 1
    return total / passes


def predict_mask(
    model,
    image: np.ndarray,
    *,
    flip: bool = False,
    scales: Sequence[float] = (1.0,),
    window: WindowSize = None,
    stride: WindowSize = None,
    batch_size: int = 4,
    blend: str | None = None,
) -> np.ndarray:
    """(H, W) uint8 class indices: argmax of the (test-time augmented) prediction."""
    if not flip and tuple(scales) == (1.0,):
        scores = predict_logits(model, image, window=window, stride=stride, batch_size=batch_size, blend=blend)
    else:
        scores = predict_probs(model, image, flip=flip, scales=scales, window=window, stride=stride, batch_size=batch_size, blend=blend)
    return np.argmax(scores, axis=-1).astype(np.uint8)


def predict_at_training_size(model, image: np.ndarray, resize: Sequence[int] | None, **options) -> np.ndarray:
    """Class mask at the image's own size, the model seeing the image as it did in training.

    With ``data.resize`` the model was trained on images resized to that size, so it gets
    the image at that size (``scales`` are then relative to it) and its probabilities are
    resized back to the image's size: predictions and metrics are always at native size.
    ``resize`` None (or the image already at that size) is plain ``predict_mask``.
    """
    if resize is None or tuple(image.shape[:2]) == tuple(resize):
        return predict_mask(model, image, **options)
    probs = predict_probs(model, resize_bilinear(image, tuple(resize)), **options)
    return np.argmax(resize_bilinear(probs, image.shape[:2]), axis=-1).astype(np.uint8)


# ---------------------------------------------------------------- volumes and series
VOLUME_FORMATS = ("nifti", "series")  # data formats predicted as whole arrays by N-D sliding windows


def read_labelled_array(sample, data_cfg) -> tuple[np.ndarray, np.ndarray, object]:
    """(image, label, volume) of a ``nifti`` case or ``series`` sample; ``volume`` (affine, header) is None for series."""
    if data_cfg.format == "nifti":
        from segtrain.data.nifti import read_case

        volume = read_case(sample, data_cfg)
        return volume.image, volume.label, volume
    from segtrain.data.series import read_series

    signal, labels = read_series(sample, data_cfg)
    return signal, labels, None


def predict_array(model, image: np.ndarray, data_cfg, *, window=None, stride=None, batch_size: int = 4, blend=None, **tta) -> np.ndarray:
    """uint8 class indices of a whole volume or signal; the window defaults to ``data.patch``.

    Test-time flips and scales are 2-D only: asking for them here is an error.
    """
    if tta.get("flip") or tuple(tta.get("scales", (1.0,))) != (1.0,):
        raise SegtrainError(f"--tta and --scales apply to 2-D images; data.format {data_cfg.format} is predicted without them")
    window = window if window is not None else data_cfg.patch
    logits = predict_logits(model, image, window=window, stride=stride, batch_size=batch_size, blend=blend)
    return np.argmax(logits, axis=-1).astype(np.uint8)


def _predict_volumes(model, config, split: str, out: Path, options: dict) -> int:
    """Write ``<case>.nii.gz`` (source affine and header) or ``<name>.npy`` label arrays of a split."""
    from segtrain.data.nifti import write_label_volume
    from segtrain.data.sources import list_samples
    from segtrain.io_utils import atomic_write

    samples = list_samples(config.data, split)
    for sample in progress(samples, "predict"):
        image, _, volume = read_labelled_array(sample, config.data)
        labels = predict_array(model, image, config.data, **options)
        if volume is not None:
            write_label_volume(out / f"{sample.name}.nii.gz", labels, volume.affine, volume.header)
        else:
            def save(tmp: Path, labels=labels) -> None:
                with open(tmp, "wb") as fh:
                    np.save(fh, labels)

            atomic_write(out / f"{sample.name}.npy", save, fsync=False)
    return len(samples)


# ---------------------------------------------------------------- shared CLI pieces
def add_tta_arguments(parser: argparse.ArgumentParser) -> None:
    """The test-time options shared by `segtrain evaluate` and `segtrain predict`."""
    parser.add_argument("--tta", choices=["none", "flip"], default="none", help="flip: also predict the mirrored image and average")
    parser.add_argument("--scales", default="1.0", help="comma-separated image scales to average, e.g. 0.75,1.0,1.25")
    parser.add_argument("--window", help="sliding-window size in pixels, N or HxW (default: whole image)")
    parser.add_argument("--stride", help="sliding-window step, N or HxW (default: 2/3 of the window)")
    parser.add_argument("--window-batch", type=int, default=4, help="windows per forward pass (bounds memory)")
    parser.add_argument("--blend", choices=BLENDS, help="how overlapping windows combine: margin (default for images) or gaussian (default for volumes and series)")


def tta_options(args: argparse.Namespace) -> dict:
    """Parsed test-time options as keyword arguments of ``predict_mask``."""
    try:
        scales = tuple(float(s) for s in args.scales.split(","))
    except ValueError:
        scales = ()
    if not scales or min(scales) <= 0:
        raise SegtrainError(f"--scales {args.scales!r}: expected positive numbers separated by commas, e.g. 0.75,1.0,1.25")
    if args.window_batch < 1:
        raise SegtrainError("--window-batch must be at least 1")
    return {
        "flip": args.tta == "flip",
        "scales": scales,
        "window": None if args.window is None else parse_size(args.window, "--window", rank=None),
        "stride": None if args.stride is None else parse_size(args.stride, "--stride", rank=None),
        "batch_size": args.window_batch,
        "blend": args.blend,
    }


# ---------------------------------------------------------------- `segtrain predict`
def _input_images(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise SegtrainError(f"{path}: --input is neither an image file nor a folder")
    files = list_images(path)
    if not files:
        raise SegtrainError(f"{path}: no images ({', '.join(IMAGE_EXTENSIONS)}) in the --input folder")
    stems: dict[str, Path] = {}
    for file in files:
        if file.stem in stems:
            raise SegtrainError(f"{file}: same name as {stems[file.stem].name}; predictions are named by stem, rename one")
        stems[file.stem] = file
    return files


def prediction_table(palette: str | None, config, classes: int) -> ColorTable:
    """The colours predictions are drawn with: ``--palette``, else the config's table, else VOC's colour map."""
    if palette is not None:
        table = ColorTable.load(palette)
    elif config is not None:
        from segtrain.data.decode import color_table

        table = color_table(config.data)
    else:
        return ColorTable.generic(classes)
    if len(table) < classes:
        raise SegtrainError(f"colour table {table.source} has {len(table)} classes but the model predicts {classes}; use a table with one colour per class")
    return table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="a .keras checkpoint")
    parser.add_argument("--input", help="an image file or a folder of images (default with --split: the split's images)")
    parser.add_argument("--output", required=True, help="folder for the palette PNGs (<stem>.png); <case>.nii.gz / <name>.npy for nifti / series configs")
    parser.add_argument("--config", help="experiment YAML: images are predicted at its data.resize, drawn in its class colours; ground truth with --split")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--split", help="with --config: the split whose ground truth gives image | truth | prediction strips")
    parser.add_argument("--palette", help="colour table: voc, camvid or a YAML/JSON file (default: the config's, else VOC's colour map)")
    parser.add_argument("--overlay", action="store_true", help="also write image + colour overlays to OUTPUT/overlays/ (PNG)")
    parser.add_argument("--alpha", type=float, default=0.5, help="overlay opacity of the class colours")
    add_tta_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from segtrain.config import load_config
    from segtrain.data.decode import read_image, read_mask
    from segtrain.visualize import legend_entries, overlay, strip

    if args.split and not args.config:
        raise SegtrainError("--split needs --config (the dataset whose ground truth to show)")
    if not args.input and not args.split:
        raise SegtrainError("give --input FILE_OR_DIR, or --config with --split to predict a dataset split")
    config = load_config(args.config, args.overrides) if args.config else None
    options = tta_options(args)
    if config is not None and config.data.format in VOLUME_FORMATS:
        if args.input or not args.split:
            raise SegtrainError(f"data.format {config.data.format}: predict a split of {args.config} with --split (--input reads 2-D images)")
        model = load_checkpoint(args.checkpoint)
        if num_outputs(model) != config.data.num_classes:
            raise SegtrainError(
                f"{args.checkpoint}: model predicts {num_outputs(model)} classes but data.num_classes is "
                f"{config.data.num_classes} in {args.config}"
            )
        count = _predict_volumes(model, config, args.split, Path(args.output), options)
        print(f"wrote {count} prediction(s) to {args.output}")
        return 0
    truth: dict[str, Path] = {}
    if args.split:
        from segtrain.data.sources import list_samples

        samples = list_samples(config.data, args.split)
        truth = {s.image.stem: s.mask for s in samples}
    images = _input_images(Path(args.input)) if args.input else [s.image for s in samples]
    model = load_checkpoint(args.checkpoint)
    classes = num_outputs(model)
    if config is not None and classes != config.data.num_classes:
        raise SegtrainError(
            f"{args.checkpoint}: model predicts {classes} classes but data.num_classes is "
            f"{config.data.num_classes} in {args.config}"
        )
    table = prediction_table(args.palette, config, classes)
    resize = config.data.resize if config is not None else None
    out = Path(args.output)
    channels = int(model.input_shape[-1])
    for path in progress(images, "predict"):
        image = read_image(path, channels)
        mask = predict_at_training_size(model, image, resize, **options)
        image = image if channels == 3 else np.repeat(image[..., :1], 3, axis=-1)  # shown as grey
        write_png(out / f"{path.stem}.png", mask, palette=table.pil_palette())
        drawn = table.colorize(mask)
        if args.overlay:
            write_png(out / "overlays" / f"{path.stem}.png", overlay(image, drawn, args.alpha))
        if path.stem in truth:
            gt = read_mask(truth[path.stem], config.data)
            if gt.shape != mask.shape:
                raise SegtrainError(f"{truth[path.stem]}: mask is {gt.shape[1]}x{gt.shape[0]} but image {path} is {mask.shape[1]}x{mask.shape[0]}")
            panels = [("image", image), ("truth", table.colorize(gt)), ("prediction", drawn)]
            entries = legend_entries(table, classes, void=bool((gt == 255).any()))
            write_png(out / "strips" / f"{path.stem}.png", strip(panels, entries))
    print(f"wrote {len(images)} prediction(s) to {out}")
    return 0
