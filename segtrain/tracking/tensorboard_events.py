"""TensorBoard event files on every backend, written with the tensorboard package's protos and record
framing only: its ``EventFileWriter`` (and tensorboardX, and ``torch.utils.tensorboard``) import
TensorFlow or PyTorch when installed, which would cost a JAX or PyTorch run seconds and, on a GPU,
the memory its backend needs.

Event files are append-only: each (re)start opens a new file, so an epoch replayed after a
crash appears again with the same values.
"""

from __future__ import annotations

import io
import os
import socket
import time
from pathlib import Path

from PIL import Image

from segtrain.tracking.base import Logger, Picture, RunInfo, epoch_scalars


class TensorBoardLogger(Logger):
    name = "tensorboard"

    def open(self, run: RunInfo) -> None:
        from tensorboard.compat.proto import event_pb2, summary_pb2  # optional heavy: protos of the event files
        from tensorboard.summary.writer.record_writer import RecordWriter  # (same; plain file I/O, no TensorFlow)

        self._event, self._summary = event_pb2.Event, summary_pb2
        folder = Path(run.run_dir) / "tensorboard"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}.segtrain"
        self._writer = RecordWriter(open(path, "ab"))
        self._write(self._event(wall_time=time.time(), file_version="brain.Event:2"))
        facts = "\n".join(f"- {key}: {value}" for key, value in run.facts.items())
        params = "\n".join(f"- {key}: {value}" for key, value in run.params.items())
        self._text("run/facts", facts, 0)
        self._text("run/config", params, 0)

    def _write(self, event) -> None:
        self._writer.write(event.SerializeToString())

    def _values(self, step: int, values: list) -> None:
        self._write(self._event(wall_time=time.time(), step=step, summary=self._summary.Summary(value=values)))

    def _text(self, tag: str, text: str, step: int) -> None:
        from tensorboard.compat.proto import tensor_pb2, types_pb2  # optional heavy (see open)

        meta = self._summary.SummaryMetadata(plugin_data=self._summary.SummaryMetadata.PluginData(plugin_name="text"))
        tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[text.encode("utf-8")])
        self._values(step, [self._summary.Summary.Value(tag=tag, metadata=meta, tensor=tensor)])

    def _scalars(self, step: int, values: dict[str, float]) -> None:
        self._values(step, [self._summary.Summary.Value(tag=tag, simple_value=v) for tag, v in values.items()])

    def step(self, step: int, values: dict[str, float]) -> None:
        self._scalars(step, values)

    def epoch(self, history: list[dict]) -> None:
        self._scalars(history[-1]["epoch"], epoch_scalars(history[-1]))
        self._writer.flush()

    def pictures(self, epoch: int, step: int, pictures: list[Picture]) -> None:
        values = []
        for picture in pictures:
            png = io.BytesIO()
            Image.fromarray(picture.array).save(png, format="PNG")
            height, width = picture.array.shape[:2]
            image = self._summary.Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=png.getvalue())
            values.append(self._summary.Summary.Value(tag=picture.tag, image=image))
        self._values(epoch, values)

    def close(self, status: str) -> None:
        self._writer.close()
