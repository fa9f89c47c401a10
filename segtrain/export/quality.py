"""The check of a quantized export by what a user cares about: val mIoU next to Keras's, speed next to the float export's.

A quantized file cannot match Keras's logits to 1e-4 (that is the point of quantizing), so
instead of the parity rule it is scored on a whole split with segtrain's own evaluation:
every image is resized to the export size, run, and its class mask (softmax resized back to
the image's size, as ``predict_at_training_size`` does) is written as a prediction file and
scored by ``segtrain.evaluation.evaluate(config, split, pred_dir=...)``. Keras (its compiled
``predict_on_batch``) and the float export of the same format go through the same pipeline in
the same run, so the three mIoUs and the per-image times are comparable. It fails if any runtime's mIoU is more than
``max_drop`` below Keras's.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from segtrain.config import Config, load_config
from segtrain.data.formats import get_format
from segtrain.data.formats.splits import list_samples, split_name
from segtrain.errors import SegtrainError
from segtrain.evaluation import evaluate
from segtrain.export.formats import export_format
from segtrain.export.shapes import exported_input_shape, perms
from segtrain.export.writing import export_model
from segtrain.heads import softmax
from segtrain.inference import resize_bilinear

MAX_MIOU_DROP = 0.02  # default limit: 2 mIoU points below Keras on the split


@dataclasses.dataclass
class Scored:
    """One model in one runtime on the split: its mIoU and the median milliseconds of one image's forward pass."""

    name: str
    miou: float
    ms_per_image: float


@dataclasses.dataclass
class QualityReport:
    """The quantized export per runtime, next to Keras and to the float export of the same format."""

    path: Path
    format: str
    quantize: str
    split: str  # e.g. "101 images of the val split of runs/x/config.yaml"
    keras: Scored
    float_export: list[Scored]
    quantized: list[Scored]
    max_drop: float

    def passes(self, r: Scored) -> bool:
        return self.keras.miou - r.miou <= self.max_drop

    @property
    def ok(self) -> bool:
        return all(self.passes(r) for r in self.quantized)

    def summary(self) -> str:
        lines = [f"{self.quantize} {self.path} ({self.format}) vs Keras on {self.split} "
                 f"(limit: mIoU at most {self.max_drop:.3f} below Keras's):",
                 f"  {'keras':<24} mIoU {self.keras.miou:.4f}  {self.keras.ms_per_image:8.2f} ms/image"]
        for r in self.float_export:
            lines.append(f"  {'float ' + r.name:<24} mIoU {r.miou:.4f}  {r.ms_per_image:8.2f} ms/image")
        for r in self.quantized:
            floats = {f.name: f.ms_per_image for f in self.float_export}
            speedup = f"  ({floats[r.name] / r.ms_per_image:.2f}x the float export)" if r.name in floats else ""
            lines.append(f"  {self.quantize + ' ' + r.name:<24} mIoU {r.miou:.4f}  {r.ms_per_image:8.2f} ms/image{speedup}  "
                         f"{'ok' if self.passes(r) else f'FAIL: {self.keras.miou - r.miou:.4f} below Keras'}")
        return "\n".join(lines)

    def as_dict(self) -> dict:
        """The report as JSON-ready values (the export's report file)."""
        return {"split": self.split, "max_miou_drop": self.max_drop, "ok": self.ok,
                "keras": dataclasses.asdict(self.keras),
                "float_export": [dataclasses.asdict(r) for r in self.float_export],
                "quantized": [{**dataclasses.asdict(r), "miou_drop": self.keras.miou - r.miou, "ok": self.passes(r)}
                              for r in self.quantized]}


def score_split(run: Callable[[np.ndarray], np.ndarray], config: Config, split: str, spatial, pred_dir: Path) -> tuple[float, float]:
    """(mIoU, median ms per image) of ``run`` (channels-last ``x -> logits`` at ``spatial``) on a split, scored by ``evaluate``."""
    fmt = get_format(config.data.format)
    if fmt.patches or fmt.spatial_rank != 2:
        raise SegtrainError(f"the quantized export's check scores 2-D images; data.format {config.data.format} is not one (pass --no-check)")
    pred_dir.mkdir(parents=True, exist_ok=True)
    times = []
    for sample in list_samples(config.data, split):
        image = fmt.read(sample, config.data).image.astype(np.float32)
        x = resize_bilinear(image, tuple(spatial))[None]
        start = time.perf_counter()
        logits = np.asarray(run(x))[0]
        times.append((time.perf_counter() - start) * 1000)
        mask = np.argmax(resize_bilinear(softmax(logits), image.shape[:2]), axis=-1).astype(np.uint8)
        fmt.write_prediction(pred_dir / (sample.name + fmt.prediction_extension), mask)
    metrics = evaluate(config, split, pred_dir=pred_dir, verbose=False)
    return float(metrics["miou"]), float(np.median(times))


def _channels_last(run, nchw: bool, rank: int = 2):
    """``run`` of an export fed and read channels-last (the transposes are outside the timed call's model)."""
    if not nchw:
        return run
    to_last, to_first = perms(rank)
    return lambda x: np.asarray(run(np.ascontiguousarray(x.transpose(to_first)))).transpose(to_last)


def score_runtimes(path: Path, format: str, nchw: bool, config: Config, split: str, work: Path) -> tuple[list[Scored], tuple]:
    """(one ``Scored`` per runtime of the export at ``path``, its channels-last input shape, batch None if dynamic)."""
    runners = export_format(format).runners(path)
    shape, batch = exported_input_shape(runners.input_shape, nchw)
    scored = []
    for name, run in runners.run.items():
        miou, ms = score_split(_channels_last(run, nchw), config, split, shape[1:-1], work / f"{path.name}-{name}")
        scored.append(Scored(name, miou, ms))
    return scored, (batch, *shape[1:])


def check_quantized(model, exported: str | os.PathLike, format: str, quantize: str, config, nchw: bool = False,
                    split: str = "val", max_drop: float = MAX_MIOU_DROP) -> QualityReport:
    """Score ``exported`` (quantized), a float export of the same format and ``model`` on ``split`` of ``config``."""
    config = config if isinstance(config, Config) else load_config(config)
    exported = Path(exported)
    with tempfile.TemporaryDirectory(prefix="segtrain-quality-") as tmp:
        work = Path(tmp)
        quantized, shape = score_runtimes(exported, format, nchw, config, split, work)
        float_path = export_model(model, format, work / f"float{export_format(format).suffix}", nchw=nchw,
                                  size=shape[1:-1], batch=shape[0])
        float_scores, _ = score_runtimes(float_path, format, nchw, config, split, work)
        keras_miou, keras_ms = score_split(model.predict_on_batch, config, split, shape[1:-1], work / "keras")
    described = f"{len(list_samples(config.data, split))} images of the {split_name(config.data, split)} split of {config.source}"
    return QualityReport(exported, format, quantize, described, Scored("keras", keras_miou, keras_ms),
                         float_scores, quantized, max_drop)
