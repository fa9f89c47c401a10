"""Augmentation of N-D patches (3-D volumes, 1-D signals) in NumPy: flips, rot90, intensity.

albumentations works on 2-D images; volume and signal patches need the same few nnU-Net
transforms on any number of spatial axes. Geometry (flips, quarter turns) moves image and
label together; intensity changes (scale, shift, gamma, noise) touch the image only, per
channel, in the z-scored units the data layer produces. Everything is drawn from the caller's
``numpy.random.Generator``, so a patch seeded by (seed, epoch, index) is augmented the same
way every time. Scaling (zoom) is not here: it needs an interpolating resampler.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class NdAugment:
    """What to apply; each flip with p = 0.5, each other transform on every patch (0 = off)."""

    flip_axes: tuple[int, ...] = ()  # spatial axes that may be flipped, e.g. (0, 1, 2)
    rot90_axes: tuple[int, int] | None = None  # the plane of quarter turns, e.g. (0, 1): axial for (X, Y, Z)
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
