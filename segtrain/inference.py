"""Prediction for one sample at any size: whole or by sliding windows, flip / multi-scale TTA.

Checkpoints take raw pixels (the normalisation is the model's first layer) and return
logits at the input's size, so an image goes in as it was decoded. Test-time augmentation
averages *probabilities* (softmax, or the sigmoids of a region head: ``segtrain.heads``) over
the flips and scales (mmsegmentation's convention); a probability map is resized back to the
image size before averaging, and the head turns it into class indices.

Sliding windows (``segtrain.sliding_window``, one N-D loop for signals, images and volumes):
windows of ``window`` pixels start every ``stride`` pixels, the last one flush with the edge,
and overlapping outputs are blended either by trusting each window only away from its inner
edges (``margin``, the default for 2-D images: exact for a receptive field within the margin)
or by a Gaussian importance map (``gaussian``, nnU-Net's blend, the default for volumes).

How a model is run (flips, scales, windows) is one ``PredictOptions``, shared by `segtrain
evaluate`, `segtrain predict` (``predict.py``) and the trainer's validation. Keras is imported
on first use, so ``segtrain evaluate --pred-dir`` stays TensorFlow-free.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
import yaml

from segtrain.data.formats import get_format
from segtrain.errors import SegtrainError
from segtrain.heads import SOFTMAX, Head, output_channels, region_order, softmax
from segtrain.io_utils import format_size, per_axis
from segtrain.labels import VOID
from segtrain.prediction_options import PredictOptions, WindowSize
from segtrain.sliding_window import sliding_window, sliding_window_rows

# A folder written by `segtrain publish` (segtrain.tools.publish) holds these; --checkpoint accepts the folder.
PUBLISHED_MODEL = "model.keras"
PUBLISHED_CONFIG = "config.yaml"

T = TypeVar("T")


# ---------------------------------------------------------------- checkpoint and forward pass
def load_checkpoint(path: str | Path):
    """A ``.keras`` checkpoint loaded with plain ``keras.models.load_model`` (no compile).

    The one loader of evaluate, predict and export; ``path`` may also be a folder written by
    `segtrain publish` (its ``model.keras``). A missing file and a corrupt one get different
    messages (Keras itself says "File not found" for both).
    """
    import keras  # Keras and its backend load on first use: `evaluate --pred-dir` needs neither

    import segtrain.models  # noqa: F401  (registers the zoo's custom layers; imports Keras)

    path = checkpoint_file(path)
    if not path.is_file():
        raise SegtrainError(
            f"{path}: checkpoint not found; pass a .keras file written by `segtrain train`, "
            "such as runs/<name>/checkpoints/best.keras, or a folder written by `segtrain publish`"
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


def checkpoint_file(path: str | Path) -> Path:
    """The ``.keras`` file ``path`` names: itself, or a published folder's ``model.keras``."""
    path = Path(path)
    if not path.is_dir():
        return path
    if not (path / PUBLISHED_MODEL).is_file():
        raise SegtrainError(f"{path}: a folder without {PUBLISHED_MODEL}; pass a .keras checkpoint or a folder "
                            "written by `segtrain publish`")
    return path / PUBLISHED_MODEL


def published_config(checkpoint: str | Path) -> Path | None:
    """The ``config.yaml`` of a folder written by `segtrain publish` (None for a checkpoint file)."""
    path = Path(checkpoint) / PUBLISHED_CONFIG
    return path if Path(checkpoint).is_dir() and path.is_file() else None


def run_config_path(checkpoint: str | Path) -> Path | None:
    """The ``config.yaml`` of the run a checkpoint belongs to (``<run>/checkpoints/x.keras``) or of a
    published folder, if it is there."""
    if Path(checkpoint).is_dir():
        return published_config(checkpoint)
    path = Path(checkpoint).resolve().parent.parent / "config.yaml"
    return path if path.is_file() else None


def num_outputs(model) -> int:
    """Number of classes (or regions) a model predicts: channels of its logits."""
    return int(model.output_shape[-1])


def check_outputs(model, config, checkpoint: str | Path | None = None) -> None:
    """The one-line error when a model's outputs do not fit the config: one per class (``data.num_classes``),
    or one per region of ``data.regions`` for ``model.head: sigmoid``, in the order of the run that trained
    it (its ``config.yaml`` beside ``checkpoints/``, when there), since that order is the output order."""
    where, want = checkpoint or "model", output_channels(config)
    if num_outputs(model) != want:
        what = (f"data.regions has {want} regions" if config.model.head == "sigmoid"
                else f"data.num_classes is {want}")
        raise SegtrainError(f"{where}: model predicts {num_outputs(model)} channels but {what} in {config.source}; "
                            "use the config the checkpoint was trained with (model.head, data.regions, data.num_classes)")
    saved = run_config_path(checkpoint) if checkpoint is not None and config.model.head == "sigmoid" else None
    if saved is not None:
        trained = region_order(yaml.safe_load(saved.read_text(encoding="utf-8")) or {})
        if trained and trained != region_order({"data": {"regions": config.data.regions}}):
            raise SegtrainError(f"{where}: trained with data.regions {dict(trained)} ({saved}), not {dict(config.data.regions)} "
                                f"of {config.source}; list the regions as in training (their order is the outputs' order)")


def _fixed_size(model) -> tuple[int, ...] | None:
    """The spatial size a model was built for, or None when it accepts any size."""
    sizes = model.input_shape[1:-1]
    return tuple(int(s) for s in sizes) if all(s is not None for s in sizes) else None


def forward_logits(model, batch: np.ndarray) -> np.ndarray:
    """Logits of ``model`` in inference mode, through the running backend's engine (``engines.inference_forward``)."""
    import keras  # Keras and its backend load on first use: `evaluate --pred-dir` needs neither

    from segtrain.engines import inference_forward  # imports Keras (and the backend's framework)

    logits = keras.ops.convert_to_numpy(inference_forward(model)(batch.astype(np.float32))).astype(np.float32)
    if logits.shape[1:-1] != batch.shape[1:-1]:
        raise SegtrainError(
            f"model output is {format_size(logits.shape[1:-1])} for a {format_size(batch.shape[1:-1])} input; "
            "segtrain expects logits at the input's size"
        )
    return logits


def resize_bilinear(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an (H, W, C) float array (half-pixel centres, no antialiasing)."""
    import keras  # Keras loads on first use: `evaluate --pred-dir` needs none

    if array.shape[:2] == tuple(size):
        return array
    out = keras.ops.image.resize(array.astype(np.float32), size, interpolation="bilinear")
    return keras.ops.convert_to_numpy(out)


def labels_at(logits: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """uint8 class indices at ``size`` of (H, W, K) logits: their argmax, through softmax resized
    bilinearly when the model saw another size (how a prediction at the training size comes back)."""
    if tuple(logits.shape[:2]) != tuple(size):
        logits = resize_bilinear(softmax(logits), tuple(size))
    return np.argmax(logits, axis=-1).astype(np.uint8)


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
    if window is None and _fixed_size(model) is None:
        return forward_logits(model, image[None])[0]
    win, step, blend = _windows(model, image.shape[:-1], window, stride, blend)
    return sliding_window(lambda batch: forward_logits(model, batch), image, win, step, batch_size=batch_size, blend=blend)


def _windows(model, shape: Sequence[int], window: WindowSize, stride: WindowSize, blend: str | None) -> tuple[tuple[int, ...], tuple[int, ...], str]:
    """(window, stride, blend) of a sliding-window pass over an array of spatial ``shape`` (see ``predict_logits``)."""
    rank = len(shape)
    fixed = _fixed_size(model)
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
        win = tuple(min(w, n) for w, n in zip(win, shape))
        step = tuple(min(s, w) for s, w in zip(step, win))
    return win, step, blend


def predict_probs(model, image: np.ndarray, options: PredictOptions = PredictOptions(), head: Head = SOFTMAX) -> np.ndarray:
    """(H, W, C) probabilities (softmax, or per-region sigmoids) averaged over ``options.scales`` and (optionally) horizontal flips."""
    image = np.asarray(image, dtype=np.float32)
    height, width = image.shape[:2]
    total, passes = None, 0
    for scale in options.scales:
        size = (max(int(round(height * scale)), 1), max(int(round(width * scale)), 1))
        scaled = resize_bilinear(image, size)
        for flipped in (False, True) if options.flip else (False,):
            view = scaled[:, ::-1] if flipped else scaled
            logits = _windowed_logits(model, np.ascontiguousarray(view), options)
            probs = resize_bilinear(head.probabilities(logits[:, ::-1] if flipped else logits), (height, width))
            total = probs if total is None else total + probs
            passes += 1
    return total / passes


def _windowed_logits(model, image: np.ndarray, options: PredictOptions, window: WindowSize = None) -> np.ndarray:
    return predict_logits(model, image, window=options.window if options.window is not None else window,
                          stride=options.stride, batch_size=options.batch_size, blend=options.blend)


def predict_mask(model, image: np.ndarray, options: PredictOptions = PredictOptions(), head: Head = SOFTMAX) -> np.ndarray:
    """(H, W) uint8 class indices of the (test-time augmented) prediction: the argmax, or the painted regions."""
    if options.augmented:
        return head.labels(predict_probs(model, image, options, head))
    return head.decode(_windowed_logits(model, image, options))


def predict_at_training_size(model, image: np.ndarray, resize: Sequence[int] | None, options: PredictOptions = PredictOptions(),
                             head: Head = SOFTMAX) -> np.ndarray:
    """Class mask at the image's own size, the model seeing the image as it did in training.

    With ``data.resize`` the model was trained on images resized to that size, so it gets
    the image at that size (``scales`` are then relative to it) and its probabilities are
    resized back to the image's size: predictions and metrics are always at native size.
    ``resize`` None (or the image already at that size) is plain ``predict_mask``.
    """
    if resize is None or tuple(image.shape[:2]) == tuple(resize):
        return predict_mask(model, image, options, head)
    probs = predict_probs(model, resize_bilinear(image, tuple(resize)), options, head)
    return head.labels(resize_bilinear(probs, image.shape[:2]))


def _batchable(model, image: np.ndarray, data_cfg, options: PredictOptions) -> bool:
    """Whether ``predict_sample`` runs ``image`` as one plain forward pass (whole, no test-time
    augmentation, at its training size): then images of its size can share a forward pass."""
    return (not get_format(data_cfg.format).patches and not options.augmented and options.window is None
            and _fixed_size(model) is None and image.ndim == 3
            and (data_cfg.resize is None or tuple(image.shape[:2]) == tuple(data_cfg.resize)))


def images_per_pass(options: PredictOptions) -> int:
    """Whole images per forward pass: ``options.batch_size`` on a GPU, one on CPU, where batching
    did not pay (benchmarks/results/inference_*.md: 0.7-1.0x per-image speed on 2 cores)."""
    from segtrain.engines import gpu_capabilities  # imports Keras (and the backend's framework)

    return options.batch_size if gpu_capabilities() else 1


def predict_samples(model, items: Iterable[T], image_of: Callable[[T], np.ndarray], data_cfg,
                    options: PredictOptions = PredictOptions(), per_pass: int | None = None, head: Head = SOFTMAX,
                    region_of: Callable[[T], np.ndarray | None] = lambda item: None) -> Iterator[tuple[T, np.ndarray]]:
    """``(item, class indices)`` for each item in order, as ``predict_sample`` predicts ``image_of(item)``
    (with ``head`` and the item's ``region_of``).

    Consecutive images of the same size on the plain path (``_batchable``) go through the model
    ``per_pass`` at a time (default ``images_per_pass(options)``): one forward pass per batch (and on
    JAX one compiled forward per image size: a short batch is filled up with zero images). Images are
    batched only with others of *exactly* their size, never padded to a shared size: a padded border changes what a convolution with ``same`` padding sees near the
    edge (zeros or mirrored pixels instead of the model's own zero padding at the true edge), so
    predictions of the valid region would change (tested: tests/test_inference.py).
    """
    per_pass = per_pass or images_per_pass(options)
    waiting: list = []  # (item, image) of one size, waiting for a full batch

    def flush():
        if waiting:
            batch = np.stack([image for _, image in waiting])
            # a short batch is filled with zero images to ``per_pass``: one batch shape per image size (one
            # compile on JAX); exact, as inference-mode layers treat each image alone
            batch = np.concatenate([batch, np.zeros((per_pass - len(batch), *batch.shape[1:]), batch.dtype)])
            logits = forward_logits(model, batch)[: len(waiting)]
            yield from zip((item for item, _ in waiting), (head.decode(row) for row in logits))
            waiting.clear()

    for item in items:
        image = np.asarray(image_of(item), dtype=np.float32)
        if not _batchable(model, image, data_cfg, options):
            yield from flush()
            yield item, predict_sample(model, image, data_cfg, options, head, region=region_of(item))
            continue
        if waiting and waiting[0][1].shape != image.shape:
            yield from flush()
        waiting.append((item, image))
        if len(waiting) == per_pass:
            yield from flush()
    yield from flush()


def predict_array(model, image: np.ndarray, data_cfg, options: PredictOptions = PredictOptions(), head: Head = SOFTMAX,
                  region: np.ndarray | None = None) -> np.ndarray:
    """uint8 class indices of a whole volume or signal by N-D sliding windows; the window defaults to ``data.patch``.

    Outside ``region`` (the case's ``data.mask``, e.g. the brain) every voxel is background (0):
    training never samples there (uniform patches lie in the mask's bounding box), and
    nnU-Net likewise crops to the non-zero region. Test-time flips and scales are 2-D only.
    """
    if options.augmented:
        raise SegtrainError(f"--tta and --scales apply to 2-D images; data.format {data_cfg.format} is predicted without them")
    labels = head.decode(_windowed_logits(model, image, options, window=data_cfg.patch))
    if region is not None:
        labels[~region] = 0
    return labels


def predict_sample(model, image: np.ndarray, data_cfg, options: PredictOptions = PredictOptions(), head: Head = SOFTMAX,
                   region: np.ndarray | None = None) -> np.ndarray:
    """Class indices of one decoded sample of a dataset, the way its format is predicted: whole by
    N-D sliding windows for formats that train on patches (background outside ``region``), at the
    training size for 2-D images."""
    if get_format(data_cfg.format).patches:
        return predict_array(model, image, data_cfg, options, head, region)
    return predict_at_training_size(model, image, data_cfg.resize, options, head)


def predict_scene(model, scene, data_cfg, write: Callable[[int, np.ndarray], None], options: PredictOptions = PredictOptions()) -> None:
    """A scene too large for memory (a format's ``open_scene``) predicted by sliding windows read from disk:
    uint8 class rows go to ``write(first_row, rows)`` in order, nodata pixels void (255).

    The windows, blend and logits are those of ``predict_array`` on the whole scene, so the
    masks are identical; memory is one window-high band of the scene (``sliding_window_rows``).
    """
    if options.augmented:
        raise SegtrainError(f"--tta and --scales apply to 2-D images; data.format {data_cfg.format} is predicted without them")
    window = options.window if options.window is not None else data_cfg.patch
    if window is None and _fixed_size(model) is None:
        raise SegtrainError("--window: a scene is predicted window by window; give --window N (or data.patch in the config)")
    win, step, blend = _windows(model, scene.shape, window, options.stride, options.blend)
    if any(w > n for w, n in zip(win, scene.shape)):
        raise SegtrainError(f"--window {format_size(win)}: the model's fixed input is larger than the {format_size(scene.shape)} scene")
    valid: dict[int, np.ndarray] = {}  # where each band of rows read has data, by first row

    def read_rows(start: int, stop: int) -> np.ndarray:
        decoded = scene.read(slice(start, stop), slice(0, scene.shape[1]))
        valid[start] = decoded.region
        return decoded.image

    def emit(start: int, logits: np.ndarray) -> None:
        labels = np.argmax(logits, axis=-1).astype(np.uint8)
        labels[~valid[start][: len(labels)]] = VOID
        for first in [s for s in valid if s <= start]:
            del valid[first]
        write(start, labels)

    sliding_window_rows(lambda batch: forward_logits(model, batch), read_rows, scene.shape, win, step, emit, batch_size=options.batch_size, blend=blend)
