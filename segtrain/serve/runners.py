"""The table of model runners `segtrain serve` can load: a Keras checkpoint, an ONNX file, a TFLite file.

A runner is one forward pass on a batch of raw-pixel images (channels-last, at the size the
model wants) plus what it takes to reach and leave that size, so every runtime predicts an
image the way `segtrain predict` does: resized to the training (or export) size, softmax
resized back, argmax (``inference.labels_at``). The Keras runner is `segtrain predict`'s model
(``load_checkpoint`` + ``float32_copy``, ``forward_logits``); the export runners are the
runtimes of the export format table (``export_format(...).runners``), so a served file runs
exactly as `segtrain export` checked it. A new runner is one loader and one line in ``RUNNERS``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from segtrain.errors import SegtrainError
from segtrain.export.formats import export_format
from segtrain.export.shapes import exported_input_shape
from segtrain.inference import checkpoint_file, forward_logits, labels_at, load_checkpoint, resize_bilinear
from segtrain.precision import float32_copy


@dataclasses.dataclass
class Runner:
    """``forward``: (N, *size, channels) float32 raw pixels -> (N, *size, classes) logits, channels-last.
    ``size``: what every image is resized to first (None: images go in at their own size);
    ``batch``: the one N ``forward`` takes (an export's fixed batch; None: any)."""

    name: str
    source: Path
    forward: Callable[[np.ndarray], np.ndarray]
    size: tuple[int, int] | None
    channels: int
    classes: int
    batch: int | None

    def model_input(self, image: np.ndarray) -> np.ndarray:
        """``image`` as the model sees it: float32, at ``size`` when there is one."""
        image = np.asarray(image, np.float32)
        return image if self.size is None else resize_bilinear(image, self.size)

    def masks(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Class masks of ``images`` at their own sizes; images of equal model-input size share forward passes."""
        inputs = [self.model_input(image) for image in images]
        groups: dict[tuple, list[int]] = {}
        for i, x in enumerate(inputs):
            groups.setdefault(x.shape, []).append(i)
        out: list[np.ndarray | None] = [None] * len(images)
        step = self.batch or len(images)
        for members in groups.values():
            for start in range(0, len(members), step):
                chunk = members[start:start + step]
                batch = np.stack([inputs[i] for i in chunk])
                if self.batch:  # a fixed-batch export: fill the batch with blank images
                    batch = np.concatenate([batch, np.zeros((self.batch - len(chunk), *batch.shape[1:]), np.float32)])
                logits = np.asarray(self.forward(batch))
                for i, row in zip(chunk, logits):
                    out[i] = labels_at(row, images[i].shape[:2])
        return out


def keras_runner(path: Path, resize: Sequence[int] | None) -> Runner:
    """A ``.keras`` checkpoint, predicted as `segtrain predict` does (float32, at ``data.resize`` if given)."""
    model = float32_copy(load_checkpoint(path))
    if len(model.input_shape) != 4:
        raise SegtrainError(f"{path}: segtrain serve predicts 2-D images; this model's input is {model.input_shape}")
    fixed = tuple(model.input_shape[1:3]) if all(model.input_shape[1:3]) else None
    size = tuple(int(s) for s in resize) if resize else fixed
    return Runner("keras", path, lambda batch: forward_logits(model, batch), size,
                  int(model.input_shape[-1]), int(model.output_shape[-1]), None)


def _channels_first(shape: Sequence) -> bool:
    """An export's input is NCHW when its axis 1 is a channel count and its last axis is not
    (`segtrain export --nchw` writes such files; channel counts are 1-4)."""
    small = lambda d: isinstance(d, (int, np.integer)) and 0 < d <= 4  # noqa: E731
    return small(shape[1]) and not small(shape[-1])


def export_runner(format: str, runtime: str) -> Callable[[Path, Sequence[int] | None], Runner]:
    """A loader of a ``format`` export run in ``runtime`` (one of the format's runtimes)."""

    def load(path: Path, resize: Sequence[int] | None) -> Runner:
        runners = export_format(format).runners(path)
        run = runners.run[runtime]
        nchw = _channels_first(runners.input_shape)
        shape, batch = exported_input_shape(runners.input_shape, nchw)
        size = tuple(int(s) for s in shape[1:3])
        forward = (lambda x: np.asarray(run(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))).transpose(0, 2, 3, 1)) if nchw else run
        channels = int(shape[-1])
        classes = int(np.asarray(forward(np.zeros((batch or 1, *size, channels), np.float32))).shape[-1])
        return Runner(runtime, path, forward, size, channels, classes, batch)

    return load


# file suffix -> loader(path, data.resize of the config or None)
RUNNERS: dict[str, Callable[[Path, Sequence[int] | None], Runner]] = {
    ".keras": keras_runner,
    ".onnx": export_runner("onnx", "onnxruntime"),
    ".tflite": export_runner("tflite", "tflite"),
}


def load_runner(path: str | Path, resize: Sequence[int] | None = None) -> Runner:
    """The runner of the model file at ``path`` (or a `segtrain publish` folder's model.keras), chosen by its suffix."""
    path = checkpoint_file(path)
    if not path.is_file():
        raise SegtrainError(f"{path}: model file not found")
    loader = RUNNERS.get(path.suffix.lower())
    if loader is None:
        raise SegtrainError(f"{path}: segtrain serve runs {', '.join(RUNNERS)} files; export this model with `segtrain export --format onnx|tflite`")
    return loader(path, resize)
