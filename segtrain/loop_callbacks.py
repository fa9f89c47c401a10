"""Keras callbacks in segtrain's loop: their hooks, who stopped the run, and the callbacks segtrain replaces.

The loop calls ``on_train_begin/end``, ``on_epoch_begin/end`` (``logs``: the epoch's loss, lr and
val metrics), ``on_train_batch_begin/end`` (``logs``: the step's loss) on each callback in turn, so
that when one sets ``model.stop_training`` it is known by name. Standard callbacks that cannot work
in this loop are refused up front, naming what does their job here (docs/training.md).
"""

from __future__ import annotations

import keras

from segtrain.errors import SegtrainError

# Keras callbacks that cannot work in this loop -> why, and what replaces them.
REPLACED = {
    keras.callbacks.ReduceLROnPlateau: "the learning rate is train.schedule's (the model is not compiled, so there "
                                       "is no model.optimizer to change); use train.schedule, or train.early_stopping",
    keras.callbacks.BackupAndRestore: "segtrain's checkpoints already resume exactly (batch, optimizer, schedule, "
                                      "data order); use --resume or runtime.auto_resume, and train.checkpoint_every_steps",
    keras.callbacks.TensorBoard: "segtrain writes every epoch's loss, lr and val metrics to <output_dir>/tensorboard "
                                 "itself (and the callback needs a compiled model); point TensorBoard there",
}

# Keys of an epoch's log row that Keras callbacks get (scalars; per-class dicts stay in log.csv).
_NOT_LOGS = ("epoch", "step")


def epoch_logs(row: dict) -> dict:
    """An epoch's log row -> the ``logs`` of ``on_epoch_end``: ``loss``, ``lr``, ``val_miou``, ... (scalars)."""
    return {key: value for key, value in row.items()
            if key not in _NOT_LOGS and isinstance(value, (int, float)) and not isinstance(value, bool)}


def refuse_replaced(callbacks: list) -> None:
    """One line naming the first callback of ``REPLACED`` in ``callbacks`` and what to use instead."""
    for callback in callbacks:
        for kind, why in REPLACED.items():
            if isinstance(callback, kind):
                raise SegtrainError(f"Trainer(callbacks=...): keras.callbacks.{kind.__name__} does not work in "
                                    f"segtrain's loop: {why}")


class LoopCallbacks:
    """Calls the hooks of ``callbacks`` in order; ``stopped_by`` names the first that set ``model.stop_training``."""

    def __init__(self, callbacks: list, model: keras.Model, epochs: int, steps: int):
        self.callbacks = list(callbacks)
        self.model = model
        keras.callbacks.CallbackList(self.callbacks, model=model, epochs=epochs, steps=steps, verbose=0)  # set_model/params
        self.stopped_by: str | None = None

    def __call__(self, hook: str, *args, logs: dict | None = None) -> None:
        """Run ``hook`` (e.g. ``"on_epoch_end"``) of every callback with ``args`` and ``logs`` (Keras's calling form)."""
        for callback in self.callbacks:
            getattr(callback, hook)(*args, {} if logs is None else logs)
            if self.stopped_by is None and getattr(self.model, "stop_training", False):
                self.stopped_by = f"callback {type(callback).__name__} set model.stop_training"

    @property
    def batch_hooks(self) -> bool:
        """Whether a callback overrides a per-batch hook: then each step's loss is read before the next
        step starts (the hook may stop the run or change the weights there)."""
        hooks = ("on_train_batch_begin", "on_train_batch_end", "on_batch_begin", "on_batch_end")
        return any(getattr(getattr(cb, hook), "__func__", None) is not getattr(keras.callbacks.Callback, hook)
                   for cb in self.callbacks for hook in hooks)  # LambdaCallback sets them on the instance

    def begin(self) -> None:
        self.model.stop_training = False
        self("on_train_begin")
