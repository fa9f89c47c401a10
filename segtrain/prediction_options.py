"""How a model is run over one sample: test-time flips and scales, sliding windows and their blend.

One ``PredictOptions`` travels from the command line (`segtrain evaluate` and `segtrain predict`
share the flags) or from Python to ``inference.predict_sample``; the trainer's validation uses
the defaults. It is also what ``metrics.json`` records under ``options``.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass

from segtrain.errors import SegtrainError
from segtrain.io_utils import parse_size
from segtrain.sliding_window import BLENDS

WindowSize = int | tuple[int, ...] | None


@dataclass(frozen=True)
class PredictOptions:
    """``flip``/``scales``: average softmax over mirrored and rescaled copies (2-D images only).
    ``window``/``stride``: predict by sliding windows (None: the whole input, or ``data.patch``
    for formats that train on patches); ``blend``: ``margin`` or ``gaussian`` (None: margin for
    2-D, gaussian otherwise); ``batch_size``: windows per forward pass, and whole images of one
    size per forward pass on the plain path (``inference.predict_samples``)."""

    flip: bool = False
    scales: tuple[float, ...] = (1.0,)
    window: WindowSize = None
    stride: WindowSize = None
    blend: str | None = None
    batch_size: int = 4

    def __post_init__(self) -> None:
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))
        if not self.scales or min(self.scales) <= 0:
            raise SegtrainError(f"--scales {','.join(map(str, self.scales))}: expected positive numbers, e.g. 0.75,1.0,1.25")
        if self.batch_size < 1:
            raise SegtrainError("--window-batch must be at least 1")
        if self.blend is not None and self.blend not in BLENDS:
            raise SegtrainError(f"--blend {self.blend}: expected one of {', '.join(BLENDS)}")

    @property
    def augmented(self) -> bool:
        """Whether test-time flips or scales are asked for."""
        return self.flip or self.scales != (1.0,)

    @property
    def plain(self) -> bool:
        """Whole input, no test-time augmentation, default blend (what ``--pred-dir`` scoring allows)."""
        return self == PredictOptions(batch_size=self.batch_size)

    def as_dict(self) -> dict:
        return {**asdict(self), "scales": list(self.scales)}

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> PredictOptions:
        """The options of ``add_arguments``' flags."""
        try:
            scales = tuple(float(s) for s in args.scales.split(","))
        except ValueError:
            scales = ()
        if not scales or min(scales) <= 0:
            raise SegtrainError(f"--scales {args.scales!r}: expected positive numbers separated by commas, e.g. 0.75,1.0,1.25")
        return cls(
            flip=args.tta == "flip",
            scales=scales,
            window=None if args.window is None else parse_size(args.window, "--window", rank=None),
            stride=None if args.stride is None else parse_size(args.stride, "--stride", rank=None),
            blend=args.blend,
            batch_size=args.window_batch,
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The test-time flags shared by `segtrain evaluate` and `segtrain predict`."""
    parser.add_argument("--tta", choices=["none", "flip"], default="none", help="flip: also predict the mirrored image and average")
    parser.add_argument("--scales", default="1.0", help="comma-separated image scales to average, e.g. 0.75,1.0,1.25")
    parser.add_argument("--window", help="sliding-window size in pixels, N or HxW (default: whole image)")
    parser.add_argument("--stride", help="sliding-window step, N or HxW (default: 2/3 of the window)")
    parser.add_argument("--window-batch", type=int, default=4, help="windows per forward pass (bounds memory); also whole images of one size per forward pass")
    parser.add_argument("--blend", choices=BLENDS, help="how overlapping windows combine: margin (default for images) or gaussian (default for volumes and series)")
