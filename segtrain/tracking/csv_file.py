"""``log.csv``: one row per epoch, rewritten whole from the history so a resumed run never shows an epoch twice."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from segtrain.io_utils import atomic_write
from segtrain.tracking.base import Logger, RunInfo

COLUMNS = ("epoch", "step", "loss", "lr", "val_miou", "val_pixel_accuracy", "val_mean_accuracy", "seconds",
           "images_per_second", "data_wait")


class CsvLogger(Logger):
    name = "csv"

    def open(self, run: RunInfo) -> None:
        self.path = Path(run.run_dir) / "log.csv"

    def epoch(self, history: list[dict]) -> None:
        names = list(history[-1].get("val_per_class_iou") or {})
        fields = [*COLUMNS, *(f"iou_{n}" for n in names)]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for row in history:
            flat = dict(row)
            for name, iou in (row.get("val_per_class_iou") or {}).items():
                flat[f"iou_{name}"] = iou
            writer.writerow(flat)
        text = buffer.getvalue()
        atomic_write(self.path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
