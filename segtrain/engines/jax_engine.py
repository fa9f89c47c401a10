"""JAX: a ``jax.jit`` step on the model's variable values (``stateless_call`` + ``stateless_apply``).

After each step the new values are assigned back to the Keras variables (on JAX an assign
only swaps the array), so checkpoints, precise BN and validation read the model as on any
backend. ``train.distribute: mirrored`` with more than one local device shards each batch
over them with ``keras.distribution.DataParallel`` (variables replicated); XLA then
computes the loss and gradients of the global batch, which is what one device computes.
BatchNorm statistics are then those of the global batch too (TensorFlow's mirrored
strategy uses each replica's share).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import jax
import keras

from segtrain.engines.base import Engine, TrainStep, single_device_sum


def compile_forward(function: Callable, model: keras.Model) -> Callable:
    """One ``jax.jit`` of ``function`` over the variables' current values, passed in at each call."""
    variables = model.variables

    @jax.jit
    def forward(values, images):
        # Reads see these values; writes (BatchNorm's moving averages in training mode) are dropped.
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            return function(images)

    return lambda images: forward([v.value for v in variables], images)


def inference_forward(model: keras.Model) -> Callable:
    """One ``jax.jit`` of the model's inference forward: run eagerly, JAX compiles each of the
    model's ops separately for each new input shape (5 s of a 6-s validation of a small model)."""
    return compile_forward(lambda images: model(images, training=False), model)


def gpu_capabilities() -> list[tuple[int, int]]:
    """Compute capability ``(major, minor)`` of each GPU JAX sees."""
    gpus = [d for d in jax.devices() if d.platform == "gpu"]
    return [tuple(int(v) for v in str(d.compute_capability).split(".")[:2]) for d in gpus
            if getattr(d, "compute_capability", None)]


def thread_settings() -> dict:
    """XLA's CPU runtime runs each op on one pool of all cores; ``XLA_FLAGS`` is the only thread knob."""
    return {"intra_op": f"all {os.cpu_count()} cores (XLA)", "xla_flags": os.environ.get("XLA_FLAGS", "")}


class JaxEngine(Engine):
    name = "jax"
    compile_forward = staticmethod(compile_forward)

    def __init__(self, distribute: str):
        super().__init__(distribute)
        devices = keras.distribution.list_devices()
        self.distribution = None
        if distribute == "mirrored" and len(devices) > 1:
            self.distribution = keras.distribution.DataParallel(devices=devices)
            self.replicas = len(devices)

    def scope(self):
        return self.distribution.scope() if self.distribution is not None else super().scope()

    def _place(self, batch):
        if self.distribution is None:
            return batch
        return tuple(keras.distribution.distribute_tensor(x, self.distribution.get_data_layout(x.shape)) for x in batch)

    def make_train_step(self, model: keras.Model, optimizer, loss_share: Callable) -> TrainStep:
        trainable, non_trainable = model.trainable_variables, model.non_trainable_variables
        slots = optimizer.variables

        def loss_and_state(tv, ntv, ov, images, masks):
            logits, ntv, losses = model.stateless_call(tv, ntv, images, training=True, return_losses=True)
            loss = loss_share(masks, logits, single_device_sum)
            if losses:
                loss = loss + sum(keras.ops.cast(x, "float32") for x in losses)
            with keras.StatelessScope(state_mapping=list(zip(slots, ov))):
                scaled = optimizer.scale_loss(loss)  # mixed_float16: the loss-scale optimizer's current scale
            return scaled, (loss, ntv)

        gradient = jax.value_and_grad(loss_and_state, has_aux=True)

        @jax.jit
        def step(tv, ntv, ov, images, masks):
            with keras.StatelessScope(state_mapping=list(zip(slots, ov))):
                lr = optimizer.learning_rate  # the schedule at this step's iteration count
            (_, (loss, ntv)), grads = gradient(tv, ntv, ov, images, masks)
            tv, ov = optimizer.stateless_apply(ov, grads, tv)
            return loss, lr, tv, ntv, ov

        def run(batch):
            """Queue the step and return its loss and rate as device scalars: nothing here waits for
            the device (the loop reads them with ``float`` after queueing the next step)."""
            images, masks = self._place(batch)
            loss, lr, tv, ntv, ov = step([v.value for v in trainable], [v.value for v in non_trainable],
                                         [v.value for v in slots], images, masks)
            for variables, values in ((trainable, tv), (non_trainable, ntv), (slots, ov)):
                for variable, value in zip(variables, values):
                    variable.assign(value)
            return loss, lr

        return run


ENGINE = JaxEngine
