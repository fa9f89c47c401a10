"""Sub-pixel form of nearest-resize + stride-1 'same' convolution.

Nearest upsampling by ``s`` followed by a 'same' convolution with kernel ``w`` equals,
at LOW resolution, one convolution per output phase whose kernel is a sum of taps of
``w``, followed by interleaving the phases (depth-to-space). Zero padding at high
resolution maps to zero padding at low resolution, so the borders match exactly.

Per axis (cross-correlation, Keras 'same' left pad ``pl = (k - 1) // 2``)::

    out[m] = sum_t w[t] * x[floor((m + t - pl) / s)]

We group the outputs as ``m = s*i + q - c`` with ``c = (-pl) mod s``; that shift makes
every phase ``q`` start at the same low-resolution offset ``a``, so all phases share
one ``L``-tap window and run as ONE convolution with ``s^rank * Cout`` output channels
(the fastest layout here), then one reshape/transpose interleave and a crop by ``c``.
For k = 7, s = 2 this is a 4x4 kernel per phase: 64 taps per low-res pixel instead of
196 for the naive form (4 high-res pixels x 49 taps).

Only ``keras.ops`` is used (pad, matmul, conv, reshape, transpose, slice), so the
graph stays backend-neutral and exports to ONNX / OpenCV DNN. The phase kernels are
derived from ``w`` in the graph with a fixed 0/1 tap-sum matrix (built in NumPy at
trace time), so gradients flow to the k x k kernel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from keras import ops

from segtrain.io_utils import per_axis


@dataclass(frozen=True)
class _AxisPlan:
    """How one spatial axis maps to the low-resolution phase convolution."""

    taps: np.ndarray  # (s, L, k) 0/1: taps[q, j, t] = 1 if w[t] feeds phase q, tap j
    pad_left: int  # low-res zero padding before the 'valid' phase convolution
    pad_right: int
    crop: int  # c: high-res output m is interleaved position m + c
    extra: int  # 1 if the phase convolution needs one more low-res position (c > 0)


def _axis_plan(k: int, s: int) -> _AxisPlan:
    pl = (k - 1) // 2
    c = (-pl) % s
    a = (-c - pl) // s  # exact: -c - pl is a multiple of s
    last = (s - 1 - c + k - 1 - pl) // s  # offset of the last tap of the last phase
    length = last - a + 1
    taps = np.zeros((s, length, k), np.float32)
    for q in range(s):
        for t in range(k):
            taps[q, (q - c + t - pl) // s - a, t] = 1.0
    extra = int(c > 0)
    return _AxisPlan(taps, -a, last + extra, c, extra)


def _normalize_factors(factors: int | Sequence[int], rank: int) -> tuple[int, ...]:
    factors = per_axis(factors, rank, "factors")
    if any(f < 1 for f in factors):
        raise ValueError(f"factors must be {rank} positive integers, got {factors}")
    return factors


def _plans(kernel_shape: Sequence[int], factors) -> tuple[list[_AxisPlan], tuple[int, ...]]:
    rank = len(kernel_shape) - 2
    factors = _normalize_factors(factors, rank)
    return [_axis_plan(int(k), s) for k, s in zip(kernel_shape[:rank], factors)], factors


def _tap_matrix(plans: list[_AxisPlan]) -> np.ndarray:
    """Kronecker product of the per-axis tap matrices: (S * prod(L), prod(k)).

    Rows are ordered (q_1..q_r, j_1..j_r), columns (t_1..t_r).
    """
    full = np.ones((1, 1, 1), np.float32)  # (phases, window taps, kernel taps)
    for p in plans:
        full = np.einsum("qjt,QJT->qQjJtT", full, p.taps).reshape(
            full.shape[0] * p.taps.shape[0],
            full.shape[1] * p.taps.shape[1],
            full.shape[2] * p.taps.shape[2],
        )
    return full.reshape(-1, full.shape[2])


def phase_kernels(kernel, factors: int | Sequence[int]):
    """Low-resolution kernel of the fused phase convolution.

    Args:
        kernel: conv kernel, shape ``(k_1, ..., k_r, Cin, Cout)``.
        factors: nearest upsampling factor, one int or one per spatial axis.

    Returns:
        Tensor ``(L_1, ..., L_r, Cin, S * Cout)`` with ``S = prod(factors)``; output
        channel ``(q_1, ..., q_r, co)`` (``co`` fastest) is phase ``q`` of channel ``co``.
        It is a linear function of ``kernel`` (a fixed 0/1 matrix product), so
        gradients flow to ``kernel``.
    """
    kernel = ops.convert_to_tensor(kernel)  # a variable yields its (autocast) value
    shape = tuple(int(d) for d in kernel.shape)
    plans, factors = _plans(shape, factors)
    rank = len(plans)
    cin, cout = shape[-2], shape[-1]
    lengths = [p.taps.shape[1] for p in plans]
    num_phases = int(np.prod(factors))
    tap = ops.convert_to_tensor(_tap_matrix(plans), dtype=kernel.dtype)
    flat = ops.reshape(kernel, (-1, cin * cout))
    v = ops.matmul(tap, flat)  # (S * prod(L), Cin * Cout)
    v = ops.reshape(v, (num_phases, *lengths, cin, cout))
    # -> (L_1..L_r, Cin, S, Cout)
    v = ops.transpose(v, (*range(1, rank + 1), rank + 1, 0, rank + 2))
    return ops.reshape(v, (*lengths, cin, num_phases * cout))


def resize_conv_subpixel(x, kernel, factors: int | Sequence[int]):
    """Nearest-resize by ``factors`` then stride-1 'same' conv with ``kernel`` (no bias).

    Exactly ``conv(repeat(x, factors), kernel, padding="same")`` (Keras/TF 'same'
    semantics, odd and even kernels), computed at low resolution.

    Args:
        x: channels-last input ``(B, N_1, ..., N_r, Cin)``, rank r in 1..3.
        kernel: ``(k_1, ..., k_r, Cin, Cout)``.
        factors: one int or one per spatial axis.

    Returns:
        ``(B, s_1 N_1, ..., s_r N_r, Cout)``.
    """
    shape = tuple(int(d) for d in kernel.shape)
    plans, factors = _plans(shape, factors)
    rank = len(plans)
    cout = shape[-1]
    v = phase_kernels(kernel, factors)

    pads = [[0, 0]] + [[p.pad_left, p.pad_right] for p in plans] + [[0, 0]]
    x_in = ops.pad(x, pads) if any(p.pad_left or p.pad_right for p in plans) else x
    z = ops.conv(x_in, v, strides=1, padding="valid")  # (B, N+e, ..., S*Cout)

    in_shape = ops.shape(x)
    low = [in_shape[1 + d] + plans[d].extra for d in range(rank)]
    z = ops.reshape(z, (-1, *low, *factors, cout))
    # (B, N_1', s_1, N_2', s_2, ..., Cout): phases next to their axis, then merge.
    perm = [0]
    for d in range(rank):
        perm += [1 + d, 1 + rank + d]
    perm.append(1 + 2 * rank)
    z = ops.transpose(z, perm)
    z = ops.reshape(z, (-1, *[n * s for n, s in zip(low, factors)], cout))
    if not any(p.crop for p in plans):
        return z
    start = [0] + [p.crop for p in plans] + [0]
    size = [-1] + [in_shape[1 + d] * factors[d] for d in range(rank)] + [cout]
    return ops.slice(z, start, size)


__all__ = ["phase_kernels", "resize_conv_subpixel"]
