"""Precise BatchNorm: population statistics over N training batches, instead of running averages.

During training a BatchNormalization layer keeps an exponential moving average of its
batch statistics (momentum 0.99). When the weights move fast (SGD at lr 0.1) those
averages lag behind them, and a model evaluated with them scores far below what its
weights can do. PreciseBN (Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021;
Detectron2's ``PreciseBN`` hook; SegNet's ``compute_bn_statistics.py``) recomputes them
with the weights frozen.

What is computed, per BN layer and channel: the forward pass runs with every (trainable)
BN layer in training mode, i.e. normalising by its batch statistics as in a training
step, while the rest of the model (dropout) is in inference mode; no gradient, no
optimizer step. Each BN layer's float32 input gives per-batch means ``m_k`` and biased
variances ``v_k`` over ``n_k`` values (what Keras itself computes and averages into
``moving_variance``: no Bessel correction), and the layer gets the exact mean and biased
variance of all the values of all the batches::

    moving_mean     = sum_k n_k m_k / sum_k n_k
    moving_variance = sum_k n_k (v_k + (m_k - moving_mean)^2) / sum_k n_k

i.e. the average of the batch variances plus the variance of the batch means (Detectron2
averages the batch variances only, which leaves out that second, small term).

Layers are found wherever they are nested (the zoo's ``ConvNormAct`` holds its BN), and
their inputs are read by shadowing each layer's ``call`` while the forward pass is traced
and compiled for the running backend (``BatchMoments``: ``tf.function``, ``jax.jit`` or
eager PyTorch; the trainer compiles it once per run).
Under tf.distribute every worker runs the same N global batches, so every replica
computes the same statistics and no all-reduce is needed (at the cost of N un-sharded
forward passes per worker). Frozen (non-trainable) BN layers keep their statistics.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator

import keras
import numpy as np
from keras import ops

from segtrain.data.loading.batches import build_batches, numpy_batches
from segtrain.engines import compile_forward
from segtrain.errors import SegtrainError


def batchnorm_layers(model: keras.layers.Layer) -> list[keras.layers.BatchNormalization]:
    """Every trainable BatchNormalization layer of ``model``, nested ones included, once each."""
    found, seen = [], set()
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable and id(layer) not in seen:
            seen.add(id(layer))
            found.append(layer)
    return found


def _input_moments(layer: keras.layers.BatchNormalization, inputs) -> tuple:
    """(mean, biased variance, number of values) per channel of one BN layer's input, in float32."""
    x = ops.cast(inputs, "float32")
    rank = len(x.shape)
    channels = layer.axis % rank
    mean, variance = ops.moments(x, axes=[i for i in range(rank) if i != channels])
    return mean, variance, ops.size(x) // x.shape[channels]


class BatchMoments:
    """A compiled forward pass that returns every trainable BN layer's per-batch input moments.

    While tracing, each layer's ``call`` is shadowed by one that records its input's moments
    and runs the layer in training mode; the traced graph keeps that, so later calls with
    the same input signature need no tracing. Keep one per model to trace once.
    """

    def __init__(self, model: keras.Model):
        self.model = model
        self.layers = batchnorm_layers(model)
        self._seen: dict[str, list] = {}
        self._forward = compile_forward(self._run, model)

    def _run(self, images):
        self._seen = {}
        self.model(images, training=False)
        return self._seen

    def _recording_call(self, index: int, layer, original: Callable) -> Callable:
        def call(inputs, training=None, mask=None):
            if mask is not None:
                raise SegtrainError(f"precise BN: layer {layer.name} got a mask; masked BatchNorm is not supported")
            self._seen.setdefault(str(index), []).append(_input_moments(layer, inputs))
            return original(inputs, training=True)

        return call

    def __call__(self, images) -> dict[int, list[tuple[np.ndarray, np.ndarray, int]]]:
        """Layer index -> [(mean, variance, count) per call of that layer] for one batch."""
        for index, layer in enumerate(self.layers):
            # An instance attribute shadows the class's call, for (re)tracing only.
            object.__setattr__(layer, "call", self._recording_call(index, layer, layer.call))
        try:
            out = self._forward(images)
        finally:
            for layer in self.layers:
                del layer.__dict__["call"]
        return {int(k): [tuple(np.asarray(t) for t in entry) for entry in v] for k, v in out.items()}


def population_statistics(moments: list[tuple[np.ndarray, np.ndarray, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Exact mean and biased variance of all values, from per-batch (mean, biased variance, count)."""
    n = np.asarray([count for _, _, count in moments], dtype=np.float64)[:, None]
    means = np.stack([m for m, _, _ in moments]).astype(np.float64)
    variances = np.stack([v for _, v, _ in moments]).astype(np.float64)
    mean = (n * means).sum(0) / n.sum()
    variance = (n * (variances + (means - mean) ** 2)).sum(0) / n.sum()
    return mean, variance


def recompute_bn_statistics(model: keras.Model, batches: Iterable, forward: BatchMoments | None = None) -> int:
    """Set every trainable BN layer's moving mean/variance to the population statistics of ``batches``.

    ``batches`` yields model inputs (or ``(inputs, labels)`` pairs); ``forward`` is a
    ``BatchMoments`` of ``model`` to reuse (its trace). Returns the number of batches used.
    On any error the layers keep the statistics they had.
    """
    forward = forward or BatchMoments(model)
    layers = forward.layers
    if not layers:
        return 0
    before = [(layer.moving_mean.numpy(), layer.moving_variance.numpy()) for layer in layers]
    collected: dict[int, list] = {}
    used = 0
    try:
        for batch in batches:
            images = batch[0] if isinstance(batch, (tuple, list)) else batch
            for index, entries in forward(images).items():
                collected.setdefault(index, []).extend(entries)
            used += 1
        if used == 0:
            raise SegtrainError("precise BN: the training split yielded no batch to compute statistics from")
        for index, layer in enumerate(layers):
            if index in collected:  # a layer the forward pass never reached keeps its statistics
                mean, variance = population_statistics(collected[index])
                layer.moving_mean.assign(mean.astype(np.float32))
                layer.moving_variance.assign(variance.astype(np.float32))
    except BaseException:
        for layer, (mean, variance) in zip(layers, before):
            layer.moving_mean.assign(mean)
            layer.moving_variance.assign(variance)
        raise
    return used


def training_batches(config, dataset_fn: Callable, count: int) -> Iterator:
    """The first ``count`` batches of the training pipeline from epoch 0 on (epochs 0, 1, ... if needed).

    The same batches every time: the data layer seeds order and augmentation by
    (train.seed, epoch, position), never by the step, so a resumed run recomputes exactly
    what the uninterrupted one did.
    """
    epoch = 0
    while count > 0:
        got = 0
        with numpy_batches(dataset_fn(config, config.data.train_split, True, epoch=epoch, skip_batches=0), count) as ds:
            for batch in ds:
                yield batch
                got += 1
        if got == 0:
            return
        count -= got
        epoch += 1


class PreciseBN:
    """The trainer's hook: ``refresh()`` before validation and before checkpoints are written."""

    def __init__(self, model: keras.Model, config, dataset_fn: Callable, verbose: bool = False):
        self.model, self.config, self.dataset_fn, self.verbose = model, config, dataset_fn, verbose
        self.num_batches = config.train.precise_bn.batches
        self.forward = BatchMoments(model)

    def refresh(self) -> None:
        started = time.perf_counter()
        batches = training_batches(self.config, self.dataset_fn, self.num_batches)
        used = recompute_bn_statistics(self.model, batches, self.forward)
        if self.verbose:
            print(f"  precise BN: statistics of {len(self.forward.layers)} BatchNorm layers recomputed "
                  f"over {used} training batches ({time.perf_counter() - started:.1f} s)")


def precise_bn_for(model: keras.Model, config, dataset_fn: Callable, verbose: bool = False) -> PreciseBN | None:
    """A ``PreciseBN`` hook when ``train.precise_bn.batches`` > 0 and the model has BatchNorm, else None."""
    if config.train.precise_bn.batches <= 0 or not batchnorm_layers(model):
        return None
    return PreciseBN(model, config, dataset_fn, verbose)


def recompute_for_config(model: keras.Model, config, num_batches: int) -> int:
    """``recompute_bn_statistics`` over the first ``num_batches`` batches of ``config``'s training pipeline."""
    return recompute_bn_statistics(model, training_batches(config, build_batches, num_batches))
