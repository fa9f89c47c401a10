"""The parity check: an export run in its format's runtimes next to the Keras model, on real images.

It runs on real images whenever any are at hand (given files, else a few of the run
config's val split), on random 0..255 pixels only when none are, and fails if the logits
differ by more than ``atol`` (relative to the largest logit where that exceeds 1) or the
per-pixel argmax agrees on fewer than ``min_agreement`` of the pixels. Random noise is an
easy input (SegNet's max-unpooling agreed on it while real street images did not), so it
is never mixed into a check that has real images. Which runtimes run an export is the
format's business (``ExportFormat.runners``).
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Iterable

import numpy as np

from segtrain.errors import SegtrainError
from segtrain.export.formats import export_format
from segtrain.export.images import expand_image_paths, read_resized, split_images
from segtrain.export.shapes import exported_input_shape, perms


@dataclasses.dataclass
class RuntimeParity:
    """How one runtime's logits compare with Keras's on the check inputs."""

    runtime: str
    max_abs_diff: float
    agreement: float  # fraction of pixels whose argmax class equals Keras's
    pixels: int
    share_over: float = 0.0  # fraction of logits whose difference exceeds the report's limit
    ms_per_image: float | None = None  # median wall time of one call divided by its batch


@dataclasses.dataclass
class ParityReport:
    """Per-runtime comparison; passes if every runtime is within ``limit`` and ``min_agreement``.

    ``limit = atol * max(1, scale)`` where ``scale`` is the largest |Keras logit|: ``atol``
    is absolute for logits within +-1 and relative beyond, since fp32 rounding grows with
    the magnitude (OpenCV sums in another order; docs/export.md, benchmarks/export_parity_extremes.py).
    """

    path: Path
    format: str
    results: list[RuntimeParity]
    atol: float
    min_agreement: float
    images: int
    scale: float
    inputs: str = ""  # what the check ran on, e.g. "4 images of val split of runs/x/config.yaml"
    index_unpooling: bool = False  # the model unpools by max-pool indices (near-tie flips, docs/export.md)

    @property
    def limit(self) -> float:
        return self.atol * max(1.0, self.scale)

    def passes(self, r: RuntimeParity) -> bool:
        """Masks agree on ``min_agreement`` of the pixels, and logits are within ``limit`` everywhere,
        except for index unpooling, where a near-tied pooling window moves a value a pixel
        (inherent, docs/export.md): there the masks alone are judged."""
        return r.agreement >= self.min_agreement and (self.index_unpooling or r.max_abs_diff <= self.limit)

    @property
    def ok(self) -> bool:
        return all(self.passes(r) for r in self.results)

    def summary(self) -> str:
        lines = [f"parity of {self.path} ({self.format}) vs Keras on {self.inputs or f'{self.images} images'}, "
                 f"max |Keras logit| {self.scale:.3g} (limits: max |diff| <= {self.limit:.3g}, "
                 f"argmax agreement >= {self.min_agreement:.2%}):"]
        if self.index_unpooling:
            lines.append("  (max-unpooling model: near-tied pooling windows may move a value one pixel, so the logits are "
                         "reported, not judged; the masks are; see docs/export.md)")
        for r in self.results:
            lines.append(f"  {r.runtime:<12} max |logit diff| {r.max_abs_diff:.3g} ({r.share_over:.4%} of logits over "
                         f"the limit)  argmax agreement {r.agreement:.4%} of {r.pixels} pixels  "
                         f"{'ok' if self.passes(r) else 'FAIL'}")
        return "\n".join(lines)

    def as_dict(self) -> dict:
        """The report as JSON-ready values (the export's report file)."""
        return {"inputs": self.inputs, "max_abs_keras_logit": self.scale, "limit": self.limit,
                "min_agreement": self.min_agreement, "index_unpooling": self.index_unpooling, "ok": self.ok,
                "runtimes": [{**dataclasses.asdict(r), "ok": self.passes(r)} for r in self.results]}


def check_parity(model, exported: str | os.PathLike, format: str, nchw: bool = False,
                 images: Iterable[str | os.PathLike] = (), count: int | None = None, seed: int = 0,
                 atol: float = 1e-4, min_agreement: float = 0.9999, config=None,
                 max_images: int = 4) -> ParityReport:
    """Run ``exported`` in its runtimes next to ``model`` (Keras) and compare the logits.

    Inputs are real images when any are at hand: ``images`` (files or folders), else up to
    ``max_images`` of the val split of ``config`` (a ``Config`` or a YAML path), resized to
    the export size. ``count`` random 0..255 images are added; by default (``None``) only
    when there is no real image, because easy synthetic inputs can agree where real ones
    do not and would dilute the argmax agreement. The export runs in every runtime its format
    names (ONNX: onnxruntime and OpenCV DNN; SavedModel: TensorFlow). ``report.ok`` says whether it passes: every runtime's
    max |logit diff| <= ``atol * max(1, max |Keras logit|)`` and argmax agreement >=
    ``min_agreement``.
    """
    from segtrain.precision import float32_copy  # imports Keras: only when a check runs

    model = float32_copy(model)  # what export_model wrote: a mixed-precision model is exported as its float32 twin
    exported = Path(exported)
    runners = export_format(format).runners(exported)
    shape, batch = exported_input_shape(runners.input_shape, nchw)
    spatial, channels = shape[1:-1], shape[-1]
    image_model = len(spatial) == 2 and channels == 3
    paths, described, missing = expand_image_paths(images), [], "no real images: pass --images or --config"
    if paths:
        if not image_model:
            raise SegtrainError(f"--images: image files only fit 2-D RGB models, this one takes {tuple(shape[1:])}; omit --images")
        described.append(f"{len(paths)} given image(s)")
    elif config is not None and image_model:
        try:
            paths, text = split_images(config, limit=max_images)
            described.append(text)
        except SegtrainError as err:  # e.g. the dataset is not on the machine that exports
            missing = f"the config's val images are unavailable: {err}"
    arrays = [read_resized(p, spatial, "--images" if images else "parity image") for p in paths]
    count = (0 if arrays else 3) if count is None else count
    if count:
        arrays += list(np.random.default_rng(seed).integers(0, 256, (count, *spatial, channels)))
        described.append(f"{count} random 0..255 image(s)" + ("" if paths else f" ({missing})"))
    if not arrays:
        raise SegtrainError("parity check: no images to run; pass --images or a count of random images")
    x = np.stack(arrays).astype(np.float32)
    reference = np.concatenate([np.asarray(model(x[i : i + 1], training=False)) for i in range(len(x))])
    rank = x.ndim - 2
    to_last, to_first = perms(rank)
    feed = x.transpose(to_first) if nchw else x
    scale = float(np.max(np.abs(reference)))
    limit = atol * max(1.0, scale)
    results = []
    for name, run in runners.run.items():
        step = batch or len(feed)
        out, times = timed_calls(run, [feed[i : i + step] for i in range(0, len(feed), step)])
        out = out.transpose(to_last) if nchw else out
        if out.shape != reference.shape:
            raise SegtrainError(f"{exported}: {name} returns shape {out.shape}, Keras {reference.shape}; re-export it")
        agree = np.argmax(out, -1) == np.argmax(reference, -1)
        diff = np.abs(out - reference)
        results.append(RuntimeParity(name, float(diff.max()), float(agree.mean()), int(agree.size),
                                     float(np.mean(diff > limit)), times))
    return ParityReport(exported, format, results, atol, min_agreement, len(x), scale, " + ".join(described),
                        _unpools_by_index(model))


def timed_calls(run, batches) -> tuple[np.ndarray, float]:
    """(the outputs of ``run`` on each batch, concatenated; median milliseconds per image of a call)."""
    outs, times = [], []
    for x in batches:
        start = time.perf_counter()
        outs.append(np.asarray(run(x)))
        times.append((time.perf_counter() - start) * 1000 / len(x))
    return np.concatenate(outs), float(np.median(times))


def _unpools_by_index(model) -> bool:
    """Whether ``model`` unpools by max-pool indices (near-tied windows may flip between runtimes)."""
    from segtrain.models.pooling import MaxUnpool  # imports Keras (and TensorFlow, export's backend)

    return any(isinstance(layer, MaxUnpool) for layer in model._flatten_layers(include_self=False, recursive=True))
