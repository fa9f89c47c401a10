"""Checkerboard analysis: how much of an upsampler's output is a pattern with the stride's period.

Feed a constant (or smooth) probe through a freshly initialised block and measure the share
of the output's energy at the stride's periodic frequencies (every non-zero multiple of
``N / stride`` per axis, i.e. patterns that repeat every ``stride`` pixels), after cutting
a border so zero padding does not count. A flat input should give a flat output, so a
checkerboard-free upsampler scores ~0; a transposed convolution whose kernel size is not
divisible by the stride (Odena, Dumoulin and Olah, Distill 2016) scores high. Scores are
averaged over random initialisations because an untrained kernel decides the pattern.

``segtrain checkerboard`` prints the table for every decoder (``--model`` scores whole
zoo models instead of single upsampling blocks).
"""

from __future__ import annotations

import argparse
from typing import Callable, Sequence

import keras
import numpy as np

from segtrain.errors import SegtrainError
from segtrain.models import build_model
from segtrain.models.blocks import ConvNormAct
from segtrain.models.pooling import MaxPoolWithIndices
from segtrain.models.registry import decoders_of
from segtrain.models.upsampling import DECODERS, LEARNED_DECODERS, ResizeConv, nearest_upsample, upsampler

PROBES = ("constant", "smooth")
BLOCKS = DECODERS + ("resize_conv_bilinear",)  # + a resize-conv with linear instead of nearest resizing


def periodic_energy_share(y: np.ndarray, factors: Sequence[int], margin: int = 0) -> float:
    """Share of the energy of ``y`` (B, *spatial, C) at the non-zero multiples of N_i/f_i.

    ``margin`` elements are cut from both ends of every spatial axis, then each axis is
    trimmed to a multiple of its factor so the periodic frequencies fall on exact bins.
    """
    y = np.asarray(y, "float64")
    rank = y.ndim - 2
    index = [slice(None)]
    for n, f in zip(y.shape[1:-1], factors):
        keep = (n - 2 * margin) // f * f
        if keep < 2 * f:
            raise SegtrainError(f"checkerboard: output axis of {n} leaves no room after a {margin} border; "
                                "use a larger --size")
        index.append(slice(margin, margin + keep))
    y = y[tuple(index) + (slice(None),)]
    energy = np.abs(np.fft.fftn(y, axes=range(1, rank + 1))) ** 2
    mask = np.ones((1,) * (rank + 2), bool)
    for axis, (n, f) in enumerate(zip(y.shape[1:-1], factors), start=1):
        shape = [1] * (rank + 2)
        shape[axis] = n
        mask = mask & (np.arange(n) % (n // f) == 0).reshape(shape)
    mask = np.array(mask)
    mask[(0,) * (rank + 2)] = False  # the mean (DC) is not a pattern
    total = energy.sum()
    return float(energy[np.broadcast_to(mask, energy.shape)].sum() / total) if total > 0 else 0.0


def make_probe(shape: Sequence[int], probe: str = "constant", seed: int = 0) -> np.ndarray:
    """A (1, *spatial, C) input: all ones, or ones plus a smooth low-frequency field."""
    if probe not in PROBES:
        raise SegtrainError(f"checkerboard: unknown probe {probe!r}; use one of {', '.join(PROBES)}")
    x = np.ones((1,) + tuple(shape), "float32")
    if probe == "smooth":
        rng = np.random.default_rng(seed)
        field = np.ones(shape[:-1] + (1,))
        for axis, n in enumerate(shape[:-1]):
            grid = np.arange(n).reshape([-1 if a == axis else 1 for a in range(len(shape))])
            field = field * np.cos(2 * np.pi * rng.uniform(0.5, 1.5) * grid / n + rng.uniform(0, 2 * np.pi))
        x = x + 0.5 * field.astype("float32")
    return x


def upsampling_block(kind: str, filters: int, factor: int, kernel_size: int, seed: int) -> Callable:
    """One decoder stage as the SegNets build it: x``factor`` upsampling then a conv, no norm.

    ``unpool`` is fed the pool indices of the probe upsampled to the output resolution
    (the encoder feature its pool saw); ties go to the first position in the window.
    """
    if kind not in BLOCKS:
        raise SegtrainError(f"checkerboard: unknown block {kind!r}; use one of {', '.join(BLOCKS)}")
    init = keras.initializers.GlorotUniform(seed=seed)
    if kind == "resize_conv_bilinear":
        return ResizeConv(filters, factor, kernel_size, interpolation="bilinear", kernel_initializer=init)
    up = upsampler(kind, factor, filters, kernel_size, kernel_initializer=init)
    if kind in LEARNED_DECODERS:
        return up
    conv = ConvNormAct(filters, kernel_size, norm="none", activation=None, kernel_initializer=init)
    if kind == "bilinear":
        return lambda x: conv(up(x))

    def unpool_block(x):
        high = nearest_upsample(x, (factor,) * (len(x.shape) - 2))
        pooled, indices = MaxPoolWithIndices(factor)(high)
        return conv(up([pooled, indices, high]))

    return unpool_block


def block_score(kind: str, rank: int = 2, factor: int = 2, kernel_size: int = 3, channels: int = 8,
                size: int = 24, trials: int = 8, seed: int = 0, probe: str = "constant") -> float:
    """Mean periodic energy share of ``kind``'s output over ``trials`` random initialisations."""
    scores = []
    for t in range(trials):
        x = make_probe((size,) * rank + (channels,), probe, seed + t)
        y = upsampling_block(kind, channels, factor, kernel_size, seed + t)(x)
        scores.append(periodic_energy_share(y, (factor,) * rank, margin=factor * (kernel_size + 1)))
    return float(np.mean(scores))


def model_score(name: str, decoder: str, rank: int = 2, size: int = 192, width: int = 4, trials: int = 2,
                seed: int = 0, probe: str = "constant") -> float:
    """The same score for a whole zoo model's logits (norm none), at its total stride."""
    scores = []
    for t in range(trials):
        keras.utils.set_random_seed(seed + t)
        model = build_model(name, 4, (size,) * rank + (3,), decoder=decoder, norm="none", width=width,
                            mean=None, std=None, **({"fc_width": 4 * width} if name.startswith("dilated") else {}))
        stride = model.get_layer("pad_to_stride").multiple
        y = model(make_probe((size,) * rank + (3,), probe, seed + t), training=False)
        scores.append(periodic_energy_share(y, (stride,) * rank, margin=size // 4))
    return float(np.mean(scores))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--blocks", nargs="+", default=list(BLOCKS), metavar="KIND",
                        help=f"upsampling blocks to score ({', '.join(BLOCKS)})")
    parser.add_argument("--model", default=None, help="score whole zoo models with each decoder instead")
    parser.add_argument("--rank", type=int, default=2, choices=(1, 2, 3), help="spatial axes of the probe")
    parser.add_argument("--factor", type=int, default=2, help="upsampling factor of the blocks")
    parser.add_argument("--kernel-size", type=int, default=3, help="kernel size of the blocks' convolutions")
    parser.add_argument("--size", type=int, default=None, help="probe size per axis (blocks 24, models 192)")
    parser.add_argument("--width", type=int, default=4, help="--model: base channel width")
    parser.add_argument("--trials", type=int, default=None, help="random initialisations averaged (blocks 8, models 2)")
    parser.add_argument("--probe", choices=PROBES, default="constant", help="constant or smooth input")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    rows = []
    if args.model:
        for decoder in decoders_of(args.model):
            rows.append((decoder, model_score(args.model, decoder, args.rank, args.size or 192, args.width,
                                              args.trials or 2, args.seed, args.probe)))
        title = f"{args.model} logits, {args.probe} probe"
    else:
        for kind in args.blocks:
            rows.append((kind, block_score(kind, args.rank, args.factor, args.kernel_size, size=args.size or 24,
                                           trials=args.trials or 8, seed=args.seed, probe=args.probe)))
        title = f"x{args.factor} blocks, kernel {args.kernel_size}, {args.probe} probe"
    print(f"checkerboard score ({title}): share of output energy at the stride's periodic frequencies")
    print(f"{'decoder':<22}{'score':>10}")
    for kind, score in rows:
        print(f"{kind:<22}{score:>10.2e}")
    return 0
