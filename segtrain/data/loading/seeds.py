"""Where each sample of an epoch comes from, as pure functions of (seed, epoch, position).

In training, the order of epoch ``e`` is a permutation seeded by ``(train.seed, e)`` and the
augmentation of position ``p`` is seeded by ``(train.seed, e, p)``; nothing depends on what ran
before, so skipping whole batches gives exactly the tail of the epoch (exact resume).
"""

from __future__ import annotations

import numpy as np


def epoch_order(num_samples: int, seed: int, epoch: int) -> np.ndarray:
    """The sample order of a training epoch: a permutation that depends on (seed, epoch) only."""
    return np.random.default_rng([seed % 2**32, epoch]).permutation(num_samples)


def sample_seeds(seed: int, epoch: int, positions: np.ndarray) -> np.ndarray:
    """One augmentation seed per position of an epoch, independent of every other position."""
    return np.array(
        [np.random.SeedSequence([seed % 2**32, epoch, int(p)]).generate_state(1)[0] for p in positions],
        dtype=np.int64,
    )


def epoch_arrays(num_samples: int, seed: int, epoch: int, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """(sample index, augmentation seed) for the training positions ``start..stop-1`` of an epoch."""
    positions = np.arange(start, stop)
    order = epoch_order(num_samples, seed, epoch)
    return order[positions].astype(np.int64), sample_seeds(seed, epoch, positions)
