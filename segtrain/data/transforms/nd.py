"""Augmentation of N-D patches (3-D volumes, 1-D signals) in NumPy: flips, rot90, intensity.

albumentations works on 2-D images; volume and signal patches need the same few nnU-Net
transforms on any number of spatial axes. Geometry (flips, quarter turns, zoom about the patch
centre) moves image and label together, the label always resampled nearest and filled with
void; intensity changes (scale, shift, gamma, noise) touch the image only, per channel, in the
z-scored units the data layer produces. Everything is drawn from the caller's
``numpy.random.Generator``, so a patch seeded by (seed, epoch, index) is augmented the same
way every time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from segtrain.labels import VOID


@dataclass(frozen=True)
class NdAugment:
    """What to apply; each flip with p = 0.5, each other transform on every patch (0 = off)."""

    flip_axes: tuple[int, ...] = ()  # spatial axes that may be flipped, e.g. (0, 1, 2)
    rot90_axes: tuple[int, int] | None = None  # the plane of quarter turns, e.g. (0, 1): axial for (X, Y, Z)
    zoom: float = 0.0  # spatial scale U[1 - zoom, 1 + zoom] about the patch centre, same size out
    scale: float = 0.0  # multiply each channel by U[1 - scale, 1 + scale]
    shift: float = 0.0  # add U[-shift, shift] to each channel
    gamma: float = 0.0  # gamma U[1 - gamma, 1 + gamma] on each channel's min..max range
    noise: float = 0.0  # Gaussian noise, std U[0, noise]


def augment_patch(image: np.ndarray, label: np.ndarray, aug: NdAugment, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One random draw of ``aug`` on a (spatial..., C) float image and its (spatial...) label."""
    for axis in aug.flip_axes:
        if rng.random() < 0.5:
            image, label = np.flip(image, axis), np.flip(label, axis)
    if aug.rot90_axes is not None:
        a, b = aug.rot90_axes
        square = label.shape[a] == label.shape[b]
        k = int(rng.integers(4)) if square else 2 * int(rng.integers(2))  # a non-square plane only turns by 180
        image, label = np.rot90(image, k, (a, b)), np.rot90(label, k, (a, b))
    if aug.zoom:
        image, label = zoom_patch(image, label, float(rng.uniform(1 - aug.zoom, 1 + aug.zoom)))
    image = np.array(image, dtype=np.float32)  # a contiguous copy: the caller's patch is never changed
    channels = image.shape[-1]
    if aug.scale:
        image *= rng.uniform(1 - aug.scale, 1 + aug.scale, channels).astype(np.float32)
    if aug.shift:
        image += rng.uniform(-aug.shift, aug.shift, channels).astype(np.float32)
    if aug.gamma:
        for c, g in enumerate(rng.uniform(1 - aug.gamma, 1 + aug.gamma, channels)):
            low, high = float(image[..., c].min()), float(image[..., c].max())
            if high > low:
                image[..., c] = ((image[..., c] - low) / (high - low)) ** g * (high - low) + low
    if aug.noise:
        image += rng.normal(0.0, rng.uniform(0, aug.noise), image.shape).astype(np.float32)
    return image, np.ascontiguousarray(label)


def zoom_patch(image: np.ndarray, label: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Scale a patch by ``factor`` about its centre, keeping its size: > 1 magnifies (the border
    falls off), < 1 shrinks (the border is filled with 0 in the image and void in the label).

    Output voxel ``o`` reads input position ``c + (o - c) / factor`` (``c`` the centre): the
    image linearly, the label nearest, so no class value is ever invented.
    """
    spatial = label.shape
    centre = (np.asarray(spatial, dtype=np.float64) - 1) / 2
    matrix = np.full(len(spatial), 1.0 / factor)
    offset = centre - centre / factor
    zoomed = np.stack([ndimage.affine_transform(image[..., c].astype(np.float32), matrix, offset, order=1,
                                                mode="constant", cval=0.0) for c in range(image.shape[-1])], axis=-1)
    labels = ndimage.affine_transform(label, matrix, offset, order=0, mode="constant", cval=VOID)
    return zoomed, labels.astype(label.dtype)
