"""A video's frames predicted one by one and written back as an overlay video (OpenCV capture and writer).

Each frame is predicted exactly as an image file is by `segtrain predict`
(``predict_at_training_size``: at ``data.resize`` when the model was trained at a size,
back to the frame's size), drawn as ``visualize.overlay`` of the class colours, and written at
the input's frame rate and size. The codec follows the output's suffix (``CODECS``): MJPG in
``.avi``, mp4v in ``.mp4``, lossless FFV1 in ``.mkv``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

from segtrain.data.formats.palette import ColorTable
from segtrain.errors import SegtrainError
from segtrain.inference import predict_at_training_size
from segtrain.io_utils import progress
from segtrain.prediction_options import PredictOptions
from segtrain.visualize import overlay

CODECS = {".avi": "MJPG", ".mp4": "mp4v", ".mkv": "FFV1"}  # output suffix -> FourCC


class VideoFrames:
    """The frames of a video file as uint8 RGB, one at a time (a long video never sits in memory)."""

    def __init__(self, path: str | Path):
        self.path = path
        self.capture = cv2.VideoCapture(str(path))
        if not self.capture.isOpened():
            raise SegtrainError(f"{path}: cannot open the video (missing, or a format OpenCV cannot read)")
        self.fps = self.capture.get(cv2.CAP_PROP_FPS) or 25.0
        self.count = max(int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0)  # from the header: an estimate
        self.size = (int(self.capture.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(self.capture.get(cv2.CAP_PROP_FRAME_WIDTH)))

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[np.ndarray]:
        try:
            while True:
                ok, frame = self.capture.read()
                if not ok:
                    return
                yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        finally:
            self.capture.release()


def _writer(path: Path, fps: float, size: tuple[int, int]):
    codec = CODECS.get(path.suffix.lower())
    if codec is None:
        raise SegtrainError(f"--output {path}: write a video ending in {', '.join(CODECS)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, (size[1], size[0]))
    if not writer.isOpened():
        raise SegtrainError(f"--output {path}: OpenCV cannot write {codec} video here; try another suffix ({', '.join(CODECS)})")
    return writer


def predict_video(model, source: str | Path, output: str | Path, table: ColorTable, resize: Sequence[int] | None = None,
                  alpha: float = 0.5, options: PredictOptions = PredictOptions()) -> tuple[int, float]:
    """Write the overlay video of ``source`` to ``output``; (frames, frames per second of prediction and writing)."""
    frames = VideoFrames(source)
    if min(frames.size) <= 0:
        raise SegtrainError(f"{source}: the video has no frames OpenCV can decode")
    writer = _writer(Path(output), frames.fps, frames.size)
    channels = int(model.input_shape[-1])
    count, start = 0, time.perf_counter()
    try:
        for frame in progress(frames, "predict video", unit="frame"):
            image = frame if channels == 3 else cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)[..., None]
            mask = predict_at_training_size(model, image, resize, options)
            writer.write(cv2.cvtColor(overlay(frame, table.colorize(mask), alpha), cv2.COLOR_RGB2BGR))
            count += 1
    finally:
        writer.release()
    if count == 0:
        raise SegtrainError(f"{source}: the video has no frames OpenCV can decode")
    return count, count / (time.perf_counter() - start)
