"""PyTorch: an eager step (``loss.backward()`` and the Keras optimizer), as Keras's own torch trainer does it.

One process, the model on Keras's default torch device (a GPU when one is visible).
``train.distribute: mirrored`` is not implemented here (torch DDP needs one process per
device); it says so in one line.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import torch

from segtrain.engines.base import Engine, TrainStep, single_device_sum
from segtrain.errors import SegtrainError


def compile_forward(function: Callable, model: keras.Model) -> Callable:
    """Eager: the forward pass runs as written, without recording gradients."""

    def forward(images):
        with torch.no_grad():
            return function(keras.ops.convert_to_tensor(images))

    return forward


def inference_forward(model: keras.Model) -> Callable:
    """The model's inference forward, eager, without recording gradients."""
    return compile_forward(lambda images: model(images, training=False), model)


def gpu_capabilities() -> list[tuple[int, int]]:
    """Compute capability ``(major, minor)`` of each GPU torch sees."""
    return [tuple(torch.cuda.get_device_capability(i)) for i in range(torch.cuda.device_count())]


def thread_settings() -> dict:
    """The CPU threads torch runs on (intra-op: one op's work; inter-op: ops side by side) and oneDNN."""
    return {"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads(),
            "onednn": bool(torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled)}


class TorchEngine(Engine):
    name = "torch"
    compile_forward = staticmethod(compile_forward)

    def __init__(self, distribute: str):
        super().__init__(distribute)
        if distribute != "none":
            raise SegtrainError("train.distribute: on KERAS_BACKEND=torch segtrain trains on one device; set "
                                "train.distribute: none, or use KERAS_BACKEND=jax or tensorflow for several")

    def setup(self, seed: int, deterministic: bool) -> None:
        if deterministic:
            torch.use_deterministic_algorithms(True)
        super().setup(seed, deterministic)

    def make_train_step(self, model: keras.Model, optimizer, loss_share: Callable) -> TrainStep:
        trainable = model.trainable_variables

        def run(batch) -> tuple[float, float]:
            lr = float(optimizer.learning_rate)
            images, masks = (keras.ops.convert_to_tensor(x) for x in batch)
            logits = model(images, training=True)
            loss = loss_share(masks, logits, single_device_sum)
            if model.losses:
                loss = loss + sum(keras.ops.cast(x, "float32") for x in model.losses)
            for variable in trainable:
                variable.value.grad = None
            optimizer.scale_loss(loss).backward()
            grads = [variable.value.grad for variable in trainable]
            with torch.no_grad():
                optimizer.apply(grads, trainable)
            return float(loss.detach()), lr

        return run


ENGINE = TorchEngine
