"""What a run tells the person running it: run facts in ``run.log``, and the console.
(Per-epoch logs, curves and tracking services: ``segtrain.tracking``.)

The console shows a one-line progress bar only when stdout is a terminal; redirected to a
file it gets one plain line per epoch (no carriage returns, no ANSI codes). The bar and the
epoch line show the same loss: the mean of the epoch's batch losses so far.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TextIO

from segtrain.io_utils import Progress


# run.log's lines naming the command that started or resumed a run and where it ran (segtrain publish reads them).
COMMAND_NOTE = "command: "
CWD_NOTE = "working directory: "


def read_notes(run_dir: str | Path, prefix: str) -> list[str]:
    """The text after ``prefix`` of every ``run.log`` line that has it, oldest first (none without a run.log)."""
    try:
        lines = (Path(run_dir) / "run.log").read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    # A line is '<date> <time> <text>'.
    texts = [line.split(" ", 2)[2] if line.count(" ") >= 2 else "" for line in lines]
    return [text[len(prefix):] for text in texts if text.startswith(prefix)]


def append_note(run_dir: str | Path, text: str) -> None:
    """Append a timestamped line to ``run.log`` (run facts that are not per-epoch numbers)."""
    folder = Path(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "run.log", "a", encoding="utf-8") as fh:
        fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")


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
