"""What a run reports: per-epoch logs (``log.csv``, TensorBoard scalars, ``curves.png``), run facts in ``run.log``, and the console.

TensorBoard event files need TensorFlow's writer, so only TensorFlow runs write them: in a
JAX or PyTorch process, TensorFlow would cost seconds of start-up and, on a GPU, claim the
memory the backend needs. Those runs write everything else.

The CSV and the plot are rewritten from the full history (kept in the checkpoint state)
each epoch, so a resumed run never shows an epoch twice. TensorBoard event files are
append-only: an epoch replayed after a crash appears again there with the same values.

The console shows a one-line progress bar only when stdout is a terminal; redirected to a
file it gets one plain line per epoch (no carriage returns, no ANSI codes). The bar and the
epoch line show the same loss: the mean of the epoch's batch losses so far.
"""

from __future__ import annotations

import csv
import io
import math
import sys
import time
from pathlib import Path
from typing import TextIO

from segtrain.backend import backend
from segtrain.io_utils import Progress, atomic_write
from segtrain.errors import SegtrainError

SCALARS = ("loss", "lr", "val_miou", "val_pixel_accuracy", "val_mean_accuracy")


class RunLog:
    """Writes the logs of one run folder; a no-op writer on non-chief workers."""

    def __init__(self, run_dir: str | Path, enabled: bool = True):
        self.dir = Path(run_dir)
        self.enabled = enabled
        self._writer = None

    def epoch_end(self, history: list[dict]) -> None:
        """Record the newest entry of ``history`` and refresh the CSV and the plot."""
        if not self.enabled or not history:
            return
        try:
            self._tensorboard(history[-1])
            self._csv(history)
            self._plot(history)
        except OSError as err:
            raise SegtrainError(
                f"{self.dir}: could not write the run logs ({err.strerror or err}); the checkpoint of epoch "
                f"{history[-1]['epoch']} is saved: free space or fix the folder, then continue with --resume"
            ) from None

    def _tensorboard(self, row: dict) -> None:
        """TensorBoard scalars, written with TensorFlow's event writer on the TensorFlow backend only."""
        if backend() != "tensorflow":
            return
        import tensorflow as tf  # TensorBoard events: TensorFlow runs only
        from tensorflow.core.framework import summary_pb2  # (same)

        # tf.summary.scalar needs the tensorboard package; the raw write with the scalars
        # plugin tag produces the same events without it.
        meta = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(str(self.dir / "tensorboard"))
        values = {key: row.get(key) for key in SCALARS}
        values.update({f"val_iou/{n}": v for n, v in (row.get("val_per_class_iou") or {}).items()})
        with self._writer.as_default():
            for tag, value in values.items():
                if value is not None:
                    tf.summary.write(tag, tf.constant(value, tf.float32), step=row["epoch"], metadata=meta)
        self._writer.flush()

    def _csv(self, history: list[dict]) -> None:
        names = list(history[-1].get("val_per_class_iou") or {})
        fields = ["epoch", "step", *SCALARS, "seconds", "images_per_second", "data_wait", *(f"iou_{n}" for n in names)]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for row in history:
            flat = dict(row)
            for name, iou in (row.get("val_per_class_iou") or {}).items():
                flat[f"iou_{name}"] = iou
            writer.writerow(flat)
        text = buffer.getvalue()
        atomic_write(self.dir / "log.csv", lambda tmp: tmp.write_text(text, encoding="utf-8"))

    def _plot(self, history: list[dict]) -> None:
        import matplotlib  # plotting only when curves are drawn

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # (after choosing the Agg backend)

        epochs = [r["epoch"] for r in history]
        fig, (ax_loss, ax_miou) = plt.subplots(1, 2, figsize=(9, 3.5))
        ax_loss.plot(epochs, [r["loss"] for r in history], marker="o")
        ax_loss.set(xlabel="epoch", ylabel="train loss", title="loss")
        val = [(r["epoch"], r["val_miou"]) for r in history if r.get("val_miou") is not None
               and not math.isnan(r["val_miou"])]
        if val:
            ax_miou.plot(*zip(*val), marker="o", color="tab:green")
        ax_miou.set(xlabel="epoch", ylabel="val mIoU", title="val mIoU", ylim=(0, 1))
        for ax in (ax_loss, ax_miou):
            ax.grid(alpha=0.3)
        fig.tight_layout()
        atomic_write(self.dir / "curves.png", lambda tmp: fig.savefig(tmp, format="png", dpi=80))
        plt.close(fig)

    def note(self, text: str) -> None:
        """Append a timestamped line to ``run.log`` (run facts that are not per-epoch numbers)."""
        if self.enabled:
            self.dir.mkdir(parents=True, exist_ok=True)
            with open(self.dir / "run.log", "a", encoding="utf-8") as fh:
                fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class ConsoleLog:
    """Progress and epoch summaries on stdout (chief only).

    On a terminal each epoch gets the shared ``io_utils.Progress`` bar with the running mean
    loss and the learning rate; off a terminal (logs, CI) only the epoch lines are written.
    """

    def __init__(self, enabled: bool = True, stream: TextIO | None = None, refresh_s: float = 0.2):
        self.enabled = enabled
        self.stream = stream or sys.stdout
        self.live = enabled and self.stream.isatty()
        self.refresh_s = refresh_s
        self._bar: Progress | None = None

    def step(self, epoch: int, epochs: int, batch: int, batches: int, mean_loss: float, lr: float) -> None:
        """Redraw the epoch's bar (terminals only, at most every ``refresh_s`` and at the last batch)."""
        if not self.live:
            return
        if self._bar is None:
            self._bar = Progress(batches, f"epoch {epoch + 1}/{epochs}", unit="step", stream=self.stream,
                                 refresh_s=self.refresh_s)
        self._bar.update_to(batch, f"mean loss {mean_loss:.4f}  lr {lr:.3g}")

    def epoch_end(self, row: dict, epochs: int) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self.stream.write(epoch_summary(row, epochs) + "\n")
        self.stream.flush()

    def line(self, text: str) -> None:
        if self.enabled:
            self.stream.write(text + "\n")
            self.stream.flush()


def epoch_summary(row: dict, epochs: int) -> str:
    """One epoch's line (two with per-class IoU): ``epoch 3/10: mean loss 0.2711  lr 0.005 ...``."""
    text = f"epoch {row['epoch']}/{epochs}: mean loss {row['loss']:.4f}  lr {row['lr']:.3g}"
    if "val_miou" in row:
        text += (f"  val mIoU {row['val_miou']:.4f}  pixel acc {row['val_pixel_accuracy']:.4f}"
                 f"  mean acc {row['val_mean_accuracy']:.4f}")
    text += f"  ({row['seconds']:.1f} s"
    if "data_wait" in row:  # rows of runs started before it was logged have no data_wait
        text += f", {row['images_per_second']:.1f} img/s, waiting for data {100 * row['data_wait']:.0f}%"
    text += ")"
    if "val_miou" in row:
        ious = "  ".join(f"{n} {'n/a' if v is None else f'{v:.3f}'}" for n, v in row["val_per_class_iou"].items())
        text += f"\n  per-class IoU: {ious}"
    return text
