"""Random training patches from N-D arrays (3-D volumes, 1-D signals) with foreground oversampling.

A whole 240x240x155 volume does not fit a batch, and a random patch of it is mostly
background: nnU-Net therefore centres a third of its patches on a random foreground voxel
and draws the rest uniformly. The same here, as pure NumPy: each patch is fully determined
by (seed, epoch, index), so a resumed or parallel pipeline draws the same patches. A patch
that reaches past the array (or an array smaller than the patch) is padded: the image with
0 (the mean after z-scoring), the label with void (255), so padding never counts as a class.
With a region mask, uniform patches are drawn inside the mask's bounding box (nnU-Net crops
cases to it first).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from segtrain.data.formats.palette import VOID

MAX_FOREGROUND_VOXELS = 100_000  # a random subset is as good for centring and keeps the index small


def foreground_voxels(label: np.ndarray, num_classes: int, seed: int = 0) -> np.ndarray:
    """(N, ndim) coordinates of voxels of a class other than 0 (void excluded); at most ``MAX_FOREGROUND_VOXELS``, a seeded subset."""
    coords = np.argwhere((label > 0) & (label < num_classes))
    if len(coords) > MAX_FOREGROUND_VOXELS:
        keep = np.random.default_rng(seed).choice(len(coords), MAX_FOREGROUND_VOXELS, replace=False)
        coords = coords[np.sort(keep)]
    return coords


def bounding_box(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) corners, high exclusive, of the nonzero region of ``mask``."""
    coords = np.argwhere(mask)
    return coords.min(axis=0), coords.max(axis=0) + 1


def patch_start(
    shape: Sequence[int],
    patch: Sequence[int],
    foreground: np.ndarray,
    rng: np.random.Generator,
    foreground_fraction: float = 1 / 3,
    bounds: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """The corner of one patch: with probability ``foreground_fraction`` (and some foreground)
    the patch holds a random foreground voxel near its centre, else it is uniform within ``bounds``.

    The start may be negative or the patch may end past ``shape`` only where the array (or the
    bounds) is smaller than the patch; ``extract_patch`` pads there.
    """
    shape, patch = np.asarray(shape), np.asarray(patch)
    low, high = (np.zeros_like(shape), shape) if bounds is None else (np.asarray(bounds[0]), np.asarray(bounds[1]))
    force = rng.random() < foreground_fraction
    if force and len(foreground):
        voxel = foreground[rng.integers(len(foreground))]
        start = voxel - patch // 2
        # Keep the patch inside the array where it fits; it still holds the voxel.
        return np.where(shape >= patch, np.clip(start, 0, np.maximum(shape - patch, 0)), start)
    span = high - low - patch  # room to move; negative: the region is smaller than the patch, centre it
    offsets = np.array([rng.integers(s + 1) if s >= 0 else s // 2 for s in span])
    return low + offsets


def extract_patch(image: np.ndarray, label: np.ndarray, start: Sequence[int], patch: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """``image[start:start+patch]`` (trailing channel axis kept) and the same of ``label``, padded with 0 / void outside."""
    start, patch = np.asarray(start), np.asarray(patch)
    shape = np.asarray(label.shape)
    lo, hi = np.maximum(start, 0), np.minimum(start + patch, shape)
    inner = tuple(slice(a, b) for a, b in zip(lo, hi))
    pad = [(int(a), int(b)) for a, b in zip(lo - start, start + patch - hi)]
    img = np.pad(image[inner], pad + [(0, 0)] * (image.ndim - label.ndim), constant_values=0)
    lab = np.pad(label[inner], pad, constant_values=VOID)
    return img, lab


def sample_patch(
    image: np.ndarray,
    label: np.ndarray,
    patch: Sequence[int],
    foreground: np.ndarray,
    *,
    seed: int,
    epoch: int,
    index: int,
    foreground_fraction: float = 1 / 3,
    bounds: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Patch number ``index`` of ``epoch``: the same (seed, epoch, index) always gives the same patch."""
    rng = np.random.default_rng((seed, epoch, index))
    start = patch_start(label.shape, patch, foreground, rng, foreground_fraction, bounds)
    return extract_patch(image, label, start, patch)
