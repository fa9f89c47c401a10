"""TensorFlow: one ``tf.function`` step run through ``strategy.run``, for one device, mirrored and multi-worker.

Keras 3 ``model.fit`` fails under MultiWorkerMirroredStrategy (keras-team/keras#20585), so
the step is our own. Each replica returns its share of the loss
(``segtrain.losses.build_loss``): pixel sums are divided by the weight sum of the *global*
batch, so N replicas see exactly the loss of one device; the optimizer sums gradients over
replicas. Batches come from the tf.data pipeline (``segtrain.data.loading.tf_batches``).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from segtrain.config import Config, TrainConfig
from segtrain.data.loading.tf_batches import BatchIterator, build_dataset
from segtrain.distribute import is_chief, make_strategy
from segtrain.engines.base import Engine, TrainStep


def compile_forward(function: Callable, model: keras.Model) -> Callable:
    """One ``tf.function`` graph, retraced only when the input's shape really changes."""
    return tf.function(function, reduce_retracing=True)


def inference_forward(model: keras.Model) -> Callable:
    """The model's inference forward, eager: a ``tf.function`` would retrace for every new
    image size of a split of many sizes (VOC), and eager TensorFlow has no per-op compile cost."""
    return lambda images: model(images, training=False)


def gpu_capabilities() -> list[tuple[int, int]]:
    """Compute capability ``(major, minor)`` of each GPU TensorFlow sees."""
    found = []
    for gpu in tf.config.list_physical_devices("GPU"):
        capability = tf.config.experimental.get_device_details(gpu).get("compute_capability")
        if capability:
            found.append(tuple(int(v) for v in capability))
    return found


def thread_settings() -> dict:
    """TensorFlow's intra-op and inter-op pools (0: its default, one thread per core) and oneDNN
    (on by default on x86; ``TF_ENABLE_ONEDNN_OPTS=0`` turns it off)."""
    default = f"{os.cpu_count()} (default)"
    return {"intra_op": tf.config.threading.get_intra_op_parallelism_threads() or default,
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads() or default,
            "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1") not in ("0", "false", "False")}


class TensorFlowEngine(Engine):
    name = "tensorflow"
    one_pipeline_per_run = True
    compile_forward = staticmethod(compile_forward)

    @classmethod
    def create(cls, train: TrainConfig, strategy: tf.distribute.Strategy | None = None) -> TensorFlowEngine:
        """The one engine that takes a tf.distribute ``strategy`` (and ``train.jit_compile``)."""
        return cls(train.distribute, strategy, train.jit_compile)

    def __init__(self, distribute: str, strategy: tf.distribute.Strategy | None = None, jit_compile: bool = False):
        # Collective ops must be configured before TensorFlow runs anything else.
        self.strategy = strategy or make_strategy(distribute)
        self.chief = is_chief()
        self.replicas = self.strategy.num_replicas_in_sync
        self.jit_compile = jit_compile or None  # None: TensorFlow decides

    def setup(self, seed: int, deterministic: bool) -> None:
        if deterministic:
            tf.config.experimental.enable_op_determinism()
        keras.utils.set_random_seed(seed)

    def scope(self):
        return self.strategy.scope()

    def epoch_batches(self, dataset, count: int):
        if not isinstance(dataset, tf.data.Dataset):  # a sized iterable of NumPy batches from a custom dataset_fn
            dataset = _as_dataset(dataset)
        return BatchIterator(self.strategy.experimental_distribute_dataset(dataset.take(count)))

    def endless_batches(self, config: Config, split: str, epoch: int, skip_batches: int) -> BatchIterator:
        dataset = build_dataset(config, split, True, epoch=epoch, skip_batches=skip_batches, repeat=True)
        return BatchIterator(self.strategy.experimental_distribute_dataset(dataset))

    def make_train_step(self, model: keras.Model, optimizer, loss_share: Callable) -> TrainStep:
        strategy, replicas = self.strategy, self.replicas

        def replica_step(images, masks):
            ctx = tf.distribute.get_replica_context()
            with tf.GradientTape() as tape:
                logits = model(images, training=True)
                loss = loss_share(masks, logits, lambda x: ctx.all_reduce(tf.distribute.ReduceOp.SUM, x))
                if model.losses:
                    loss += tf.add_n([tf.cast(x, tf.float32) for x in model.losses]) / replicas
                scaled = optimizer.scale_loss(loss)
            grads = tape.gradient(scaled, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return loss

        @tf.function(jit_compile=self.jit_compile)
        def step(batch):
            lr = tf.identity(optimizer.learning_rate)  # the rate this step uses, read in-graph
            per_replica = strategy.run(replica_step, args=batch)
            return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None), lr

        def run(batch) -> tuple[float, float]:
            loss, lr = step(batch)
            return float(loss), float(lr)

        return run

    def make_finite_check(self, model: keras.Model, optimizer) -> Callable[[object], bool]:
        strategy = self.strategy
        variables = [v for v in [*model.variables, *optimizer.variables] if "float" in str(v.dtype)]

        def replica_bad(images, masks):
            logits = model(images, training=False)
            return tf.cast(tf.logical_not(tf.reduce_all(tf.math.is_finite(logits))), tf.int32)

        @tf.function
        def check(batch):
            bad = strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(replica_bad, args=batch), axis=None)
            weights_ok = tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in variables])
            return tf.logical_and(tf.equal(bad, 0), weights_ok)

        return lambda batch: bool(check(batch))

    def make_predict(self, model: keras.Model, decode: Callable[[np.ndarray], np.ndarray]) -> Callable[[object], np.ndarray]:
        forward = tf.function(lambda images: model(images, training=False), reduce_retracing=True)
        return lambda images: decode(forward(images).numpy())


def _as_dataset(batches) -> tf.data.Dataset:
    """An iterable of ``(images, masks)`` NumPy batches as a tf.data.Dataset (a strategy distributes only those)."""
    iterator = iter(batches)
    first = next(iterator, None)
    if first is None:
        return tf.data.Dataset.from_tensor_slices((np.zeros((0, 1, 1, 1), np.float32), np.zeros((0, 1, 1), np.uint8)))
    signature = tuple(tf.TensorSpec((None,) * np.ndim(x), tf.as_dtype(np.asarray(x).dtype)) for x in first)
    return tf.data.Dataset.from_generator(lambda: itertools.chain([first], iterator), output_signature=signature)


ENGINE = TensorFlowEngine
