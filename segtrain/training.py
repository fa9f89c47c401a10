"""`segtrain train`: the training loop, one loop for every Keras backend and every distribution.

The loop, the loss, the schedule, precise BN, validation, checkpoints, resume and logs are
written once, here; a ``segtrain.engines`` engine supplies the backend-specific half: the
compiled step (``tf.function`` under a tf.distribute strategy on TensorFlow, ``jax.jit`` on
JAX, eager autograd on PyTorch), batch feeding and compiled forward passes. The step
minimises the mean loss of the global batch (``segtrain.losses.build_loss``), whatever the
number of replicas.

Run folder (``output_dir``): ``config.yaml`` (resolved), ``class_weights.json`` (when
computed), ``checkpoints/`` (see ``segtrain.checkpoints``), ``curves.png``, ``pictures/``, and
what the loggers of ``runtime.loggers`` write (``log.csv``, ``tensorboard/``; see
``segtrain.tracking``). Resume restores weights, optimizer slots and step (hence the schedule),
epoch and batch position (the data layer replays the same batches), loss accumulators,
best mIoU and history; a finished run resumed with a larger length continues to it.

Faults end the run with one ``SegtrainError`` line and never leave a bad checkpoint
committed: a non-finite or exploded loss stops it, a checkpoint is written only when the
weights and the model's outputs are finite, and a checkpoint whose weights then produce a
bad loss is discarded for the one before (``CheckpointStore.discard_newest``). The run
folder is locked while a run writes in it (``segtrain.run_lock``). Ctrl-C, SIGTERM and SIGUSR1
stop a run at the next step boundary with a checkpoint (``STOP_SIGNALS``: exit code 130 or 143);
``runtime.auto_resume`` makes a plain re-run continue it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import yaml  # noqa: E402

from segtrain.best_checkpoint import best_metric, improves  # noqa: E402
from segtrain.checkpoints import CheckpointStore, LoopState  # noqa: E402
from segtrain.config import Config, TrainConfig, flatten, load_config, save_config, to_dict  # noqa: E402
from segtrain.data.formats import get_format, input_channels  # noqa: E402
from segtrain.data.formats.decode import class_names  # noqa: E402
from segtrain.data.formats.palette import VOID  # noqa: E402
from segtrain.data.formats.splits import iter_labels  # noqa: E402
from segtrain.data.loading.batches import DataClock, RunBatches, build_batches, count_batches, numpy_batches  # noqa: E402
from segtrain.distribute import launch_local_workers  # noqa: E402
from segtrain.early_stopping import count_validation  # noqa: E402
from segtrain.engines import make_engine, thread_settings  # noqa: E402
from segtrain.errors import SegtrainError  # noqa: E402
from segtrain.evaluation import evaluate, scored_groups  # noqa: E402
from segtrain.loop_callbacks import LoopCallbacks, epoch_logs, refuse_replaced  # noqa: E402
from segtrain.losses import build_loss, median_frequency_weights  # noqa: E402
from segtrain.heads import head_of, region_order  # noqa: E402
from segtrain.machine import cpu_summary  # noqa: E402
from segtrain.metrics import ConfusionMatrix, group_metrics  # noqa: E402
from segtrain.models import build_model_from_config  # noqa: E402
from segtrain.precise_bn import precise_bn_for  # noqa: E402
from segtrain.precision import Float32Mirror, resolve_policy  # noqa: E402
from segtrain.io_utils import remove_stale_temporaries, write_json  # noqa: E402
from segtrain.run_lock import RunLock  # noqa: E402
from segtrain.run_log import COMMAND_NOTE, CWD_NOTE, ConsoleLog  # noqa: E402
from segtrain.schedules import build_schedule  # noqa: E402
from segtrain.time_budget import BudgetClock, Costs, describe  # noqa: E402
from segtrain.weight_average import WeightAverage  # noqa: E402
from segtrain.tracking.tracker import RunTracker  # noqa: E402

# A step whose loss exceeds this multiple of the first step's (or of 1, if larger) has diverged.
DIVERGENCE_FACTOR = 1000.0

ModelFn = Callable[[Config, tuple], keras.Model]
DatasetFn = Callable[..., object]  # -> tf.data.Dataset, NumpyLoader or a sized iterable of NumPy batches


def build_optimizer(train: TrainConfig, learning_rate) -> keras.optimizers.Optimizer:
    """``train.optimizer`` -> a Keras optimizer (loss-scaled under mixed_float16), accumulating
    ``train.accumulate_steps`` micro-batches per update and averaging the weights for ``train.ema``."""
    cfg, n = train.optimizer, train.accumulate_steps
    common = {"learning_rate": learning_rate, "clipnorm": cfg.clipnorm, "gradient_accumulation_steps": n if n > 1 else None}
    if train.ema is not None:  # Keras averages after every micro-batch: momentum ** (1/n) is train.ema.momentum per update
        common.update(use_ema=True, ema_momentum=train.ema.momentum ** (1 / n))
    decay = cfg.weight_decay or None
    if cfg.name == "sgd":
        opt = keras.optimizers.SGD(momentum=cfg.momentum, weight_decay=decay, **common)
    elif cfg.name == "adam":
        opt = keras.optimizers.Adam(weight_decay=decay, **common)
    else:
        opt = keras.optimizers.AdamW(weight_decay=cfg.weight_decay, **common)
    if keras.mixed_precision.global_policy().name == "mixed_float16":
        opt = keras.optimizers.LossScaleOptimizer(opt)
    return opt


def class_weights_for(config: Config, run_dir: Path, write: bool) -> list[float] | None:
    """``train.class_weights`` -> per-class weights; median frequency is cached in the run folder."""
    spec = config.train.class_weights
    if isinstance(spec, list):
        return [float(w) for w in spec]
    if spec == "none":
        return None
    cache = run_dir / "class_weights.json"
    key = {"root": config.data.root, "split": config.data.train_split, "num_classes": config.data.num_classes}
    if cache.is_file():
        cached = json.loads(cache.read_text(encoding="utf-8"))
        if cached.get("key") == key:
            return cached["weights"]
    weights = median_frequency_weights(iter_labels(config.data, config.data.train_split), config.data.num_classes)
    if write:
        write_json(cache, {"key": key, "method": "median_frequency", "weights": weights.tolist()})
    return weights.tolist()


def _default_model(config: Config, input_shape: tuple) -> keras.Model:
    return build_model_from_config(config, input_shape)


def _default_dataset(config: Config, split: str, training: bool, *, epoch: int = 0, skip_batches: int = 0):
    return build_batches(config, split, training, epoch=epoch, skip_batches=skip_batches)


def _input_shape(config: Config) -> tuple:
    """Spatial size left open (training crops and validation images differ in size), as many
    axes as the format's samples have (2 for images, 3 for volumes, 1 for signals)."""
    rank = get_format(config.data.format).spatial_rank
    return (None,) * rank + (input_channels(config.data),)


# Signals that stop a run at the next step boundary with a checkpoint -> the exit code `segtrain train`
# then returns. 143 (128 + SIGTERM) is what job scripts and restart policies read as "stopped, requeue me";
# SIGUSR1 is Slurm's usual warning before its kill (``--signal=B:USR1@120``).
STOP_SIGNALS = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGUSR1: 143}


class _StopFlag:
    """A stop signal asks the loop to checkpoint and stop at the next step boundary; a second Ctrl-C aborts.

    The handler only records the signal, so a save, validation or precise-BN pass it interrupts
    runs to its end. Repeated SIGTERM/SIGUSR1 (schedulers resend) change nothing.
    """

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = {signum: signal.signal(signum, self._handle) for signum in STOP_SIGNALS}
        return self

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = self.signum or signum

    def __exit__(self, *exc):
        for signum, previous in self._previous.items():
            signal.signal(signum, signal.SIG_DFL if previous is None else previous)  # None: not set from Python

    def interrupted(self, step: int, folder: Path) -> "TrainingInterrupted":
        """The exception that ends the stopped run (its checkpoint is on disk)."""
        what = "interrupted" if self.signum == signal.SIGINT else f"stopped by {signal.Signals(self.signum).name}"
        code = STOP_SIGNALS[self.signum]
        return TrainingInterrupted(f"{what} at step {step}; checkpoint saved in {folder}, continue with --resume "
                                   f"(exit code {code})", code)


class TrainingInterrupted(Exception):
    """Raised by ``Trainer.fit`` after a stop signal, once a resumable checkpoint is on disk."""

    def __init__(self, message: str, exit_code: int = 130):
        super().__init__(message)
        self.exit_code = exit_code


class Trainer:
    """Builds everything from a ``Config`` and runs the loop.

    Args:
        config: the run's config; ``output_dir`` is the run folder.
        model_fn: ``(config, input_shape) -> keras.Model`` (default: the model zoo).
        dataset_fn: ``(config, split, training, *, epoch, skip_batches) ->`` ``(image float32, mask
            uint8)`` batches: a tf.data.Dataset, a ``NumpyLoader`` or any sized iterable of NumPy
            batches (default: ``segtrain.data.loading.batches.build_batches``, the backend's data layer).
            For exact resume it must return the same batches for the same (epoch, skip_batches).
        callbacks: Keras callbacks (``segtrain.loop_callbacks``): every ``on_train_*``/``on_epoch_*`` hook, the
            val metrics in ``on_epoch_end``'s logs; one that sets ``model.stop_training`` ends the run cleanly.
        strategy: a tf.distribute strategy (TensorFlow only; default: from ``train.distribute``).
        loss_fn: replaces ``train.loss`` and ``train.class_weights``: a ``segtrain.losses.SegmentationLoss``,
            or ``(masks, logits) -> scalar`` taken as the mean loss of a replica's batch.
        verbose: 0 silent, 1 progress (a bar on a terminal) and epoch summaries.
        command: the command line that started (or resumed) the run, noted in ``run.log`` with its working
            directory (`segtrain publish` puts it in the model card).
    """

    def __init__(self, config: Config, *, model_fn: ModelFn | None = None, dataset_fn: DatasetFn | None = None,
                 callbacks: list | None = None, strategy=None,
                 loss_fn: Callable | None = None, verbose: int = 1, command: str | None = None):
        self.config = config
        self.model_fn = model_fn or _default_model
        self.dataset_fn = dataset_fn or _default_dataset
        self.callbacks = list(callbacks or [])
        refuse_replaced(self.callbacks)
        self._strategy = strategy
        self.loss_fn = loss_fn
        self.verbose = verbose
        self.command = command
        self.run_dir = Path(config.output_dir)
        self.store = CheckpointStore(self.run_dir)
        self.model: keras.Model | None = None
        self.optimizer = None
        self._lock: RunLock | None = None
        self._last_batch = None
        self.budget: BudgetClock | None = None  # train.time_budget's clock, from _run_length
        self._run_batches: RunBatches | None = None  # the training pipeline kept for the run, from _setup

    # ---- setup -------------------------------------------------------------------------
    def _setup(self, resume: bool) -> bool:
        """Build everything; returns whether the run resumes (``resume``, or ``runtime.auto_resume`` found one)."""
        cfg = self.config
        self.engine = make_engine(cfg.train, self._strategy)
        self.chief = self.engine.chief
        self.engine.setup(cfg.train.seed, cfg.train.deterministic)
        policy, why = resolve_policy(cfg.train.mixed_precision, get_format(cfg.data.format).spatial_rank)
        keras.mixed_precision.set_global_policy(policy)
        if self.chief:
            self._lock = RunLock(self.run_dir)
            self._lock.acquire()
            for folder in (self.run_dir, self.store.dir):
                remove_stale_temporaries(folder)
        resume = resume or self._auto_resume()
        if self.chief:
            if not resume:
                self.store.clear_resume_state()
            try:
                save_config(cfg, self.run_dir / "config.yaml")
            except OSError as err:
                raise SegtrainError(f"output_dir: cannot write {self.run_dir / 'config.yaml'} "
                                    f"({err.strerror or err}); free space or choose another output_dir") from None
        self.steps_per_epoch = self._steps_per_epoch()
        if self.dataset_fn is _default_dataset and self.engine.one_pipeline_per_run:
            split = cfg.data.train_split
            self._run_batches = RunBatches(lambda epoch, batch: self.engine.endless_batches(cfg, split, epoch, batch),
                                           self.steps_per_epoch)
        self.total_steps = self._run_length(resume)
        micro = cfg.train.accumulate_steps  # loop steps count batches; the schedule counts optimizer updates
        # A user's loss_fn replaces train.loss and train.class_weights: no mask scan for weights it ignores.
        self.class_weights = None if self.loss_fn is not None else class_weights_for(cfg, self.run_dir, self.chief)
        with self.engine.scope():
            self.model = self.model_fn(cfg, _input_shape(cfg))
            self.schedule = build_schedule(cfg.train.schedule, cfg.train.optimizer.learning_rate,
                                           max(self.total_steps // micro, 1), micro)
            self.optimizer = build_optimizer(cfg.train, self.schedule)
            self.optimizer.build(self.model.trainable_variables)
        self.average = WeightAverage(self.model, self.optimizer)
        self.head = head_of(cfg.model.head, cfg.data.regions)
        self.best_metric = best_metric(cfg)  # what picks best.keras
        self._loss_share = build_loss(self.loss_fn or cfg.train.loss, self.class_weights, VOID,
                                      regions=self.head.regions, num_classes=cfg.data.num_classes)
        self._train_step = self.engine.make_train_step(self.model, self.optimizer, self._loss_share)
        self._finite_after_step = self.engine.make_finite_check(self.model, self.optimizer)
        self.precise_bn = precise_bn_for(self.model, cfg, self.dataset_fn, self.verbose and self.chief)
        self._float32_model = Float32Mirror(self.model)
        self._predict = self.engine.make_predict(self.model, self.head.decode)
        # ---- run tracking (segtrain.tracking): opened here, fed in _run_epoch / _end_epoch, closed in fit
        self.log = RunTracker(cfg, self.run_dir, enabled=self.chief, resume=resume, backend=self.engine.name,
                              precision=policy, predict=self._predict,
                              val_batches=lambda: self.dataset_fn(cfg, cfg.data.val_split, False, epoch=0, skip_batches=0))
        facts = f"backend {self.engine.name} ({self.engine.replicas} replica{'s' * (self.engine.replicas > 1)})"
        if micro > 1:
            facts += (f"; effective batch {micro * cfg.train.batch_size} ({micro} micro-batches of "
                      f"{cfg.train.batch_size} per optimizer update)")
        if self.command:
            self.log.note(f"{COMMAND_NOTE}{self.command}")
            self.log.note(f"{CWD_NOTE}{Path.cwd()}")
        self.log.note(f"{facts}; dtype policy {policy} ({why}); validation in float32")
        threads = ", ".join(f"{key} {value}" for key, value in thread_settings().items())
        self.log.note(f"machine: {cpu_summary()}; threads: {threads}")
        self.console = ConsoleLog(enabled=bool(self.verbose and self.chief))
        if self.verbose and self.chief:
            print(f"{facts}; dtype policy: {policy} ({why}); validation in float32")
        return resume

    def _steps_per_epoch(self) -> int:
        n = count_batches(self.dataset_fn(self.config, self.config.data.train_split, True, epoch=0, skip_batches=0))
        if n == 0:
            raise SegtrainError(
                f"{self.config.source}: the training split yields no complete batch of train.batch_size="
                f"{self.config.train.batch_size}; lower train.batch_size or add samples"
            )
        return n

    def _run_length(self, resume: bool) -> int:
        """``train.steps`` or ``train.epochs``; under ``train.time_budget`` the resumed run's planned count, else
        whole epochs covering the probe steps until the plan replaces them (``_plan_budget``)."""
        cfg = self.config.train
        if cfg.time_budget is None:
            return cfg.steps or cfg.epochs * self.steps_per_epoch
        self.budget = BudgetClock(cfg.time_budget.minutes, cfg.time_budget.probe_steps, self._started)
        committed = self.store.load_state() if resume else None
        if committed is not None and committed.time_budget is not None:
            return committed.time_budget["steps"]
        return -(-cfg.time_budget.probe_steps // self.steps_per_epoch) * self.steps_per_epoch

    def _auto_resume(self) -> bool:
        """``runtime.auto_resume``: a plain re-run (a requeued job) resumes the run its folder holds, if that
        run has this config; a run of another config is refused rather than overwritten."""
        state = self.store.load_state() if self.config.runtime.auto_resume else None
        if state is None:
            return False
        difference = config_difference(self.run_dir / "config.yaml", self.config)
        if difference:
            raise SegtrainError(f"runtime.auto_resume: {self.run_dir} holds a run of another config ({difference}); "
                                "run it with that config (or --resume to change it on purpose), or choose a new output_dir")
        if self.verbose and self.chief:
            print(f"runtime.auto_resume: resuming the run in {self.run_dir} from step {state.step}")
        return True

    # ---- loop --------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> dict:
        """Train (or continue with ``resume``) to the end; returns the final metrics."""
        previous_policy = keras.mixed_precision.global_policy()
        self._started = time.perf_counter()
        try:
            return self._loop(self._setup(resume))
        finally:
            keras.mixed_precision.set_global_policy(previous_policy)
            if getattr(self, "log", None):
                self.log.close(sys.exc_info()[1])
            if self._run_batches is not None:
                self._run_batches.close()
            if self._lock is not None:
                self._lock.release()

    def _loop(self, resume: bool) -> dict:
        state = self._resumed_state() if resume else LoopState(total_steps=self.total_steps)
        self.epochs = state.epoch + math.ceil((self.total_steps - state.step + state.batch) / self.steps_per_epoch)
        if state.stopped_by:
            self.console.line(f"the run in {self.run_dir} stopped at epoch {state.epoch} (step {state.step}): "
                              f"{state.stopped_by}; start a new run (another output_dir) to train more")
            return self._final_metrics(state)
        if state.done:
            self.console.line(f"the run in {self.run_dir} is complete (step {state.step} of {self.total_steps}); "
                              "raise train.epochs or train.steps to continue it")
            return self._final_metrics(state)
        cbs = LoopCallbacks(self.callbacks, self.model, epochs=self.epochs, steps=self.steps_per_epoch)
        cbs.begin()
        with _StopFlag() as stop:
            while not state.done:
                cbs("on_epoch_begin", state.epoch)
                started = time.perf_counter()
                clock = self._run_epoch(state, stop, cbs)
                if stop.requested:  # mid-epoch (or after its last step): the epoch's end runs after --resume
                    self._save(state)
                else:  # a signal during the epoch's end (precise BN, validation, save) stops after its save
                    self._end_epoch(state, time.perf_counter() - started, clock, cbs)
                if stop.requested and not state.done:
                    raise stop.interrupted(state.step, self.store.dir)
        cbs("on_train_end")
        if state.time_budget is not None:
            ended = (f"train.time_budget: ended at {time.perf_counter() - self._started:.0f} s of this "
                     f"process (planned {state.time_budget['planned_seconds']:.0f} s)")
            self.console.line(ended)
            self.log.note(ended)
        if state.stopped_by:
            self.console.line(f"stopped at epoch {state.epoch} (step {state.step} of {self.total_steps}): {state.stopped_by}")
            self.log.note(f"stopped at epoch {state.epoch} (step {state.step}): {state.stopped_by}")
        return self._final_metrics(state)

    def _resumed_state(self) -> LoopState:
        """The committed state, continued to this config's length (``train.epochs``/``steps`` may have grown)."""
        state = self.store.restore(self.model, self.optimizer)
        self.average.swap()  # the resume arrays hold the average as the model's weights (segtrain.weight_average)
        planned = state.total_steps if state.total_steps is not None else (state.step if state.done else None)
        if state.step > self.total_steps:
            raise SegtrainError(
                f"train.steps/train.epochs: the run in {self.run_dir} is already at step {state.step}, past the "
                f"{self.total_steps} steps this config asks for; raise them to continue, or use a new output_dir"
            )
        schedule = self.config.train.schedule.name
        if planned is not None and planned != self.total_steps and schedule in ("poly", "cosine"):
            raise SegtrainError(
                f"train.steps/train.epochs: the run in {self.run_dir} decays its learning rate ({schedule}) over "
                f"{planned} steps; resuming with {self.total_steps} would bend that curve at step {state.step}. "
                "Resume with the original length, or start a new run (constant and step schedules can be extended)"
            )
        state.total_steps = self.total_steps
        state.done = bool(state.stopped_by) or (state.step >= self.total_steps and state.batch == 0)
        return state

    def _run_epoch(self, state: LoopState, stop: _StopFlag, cbs: LoopCallbacks) -> DataClock:
        """Train to the end of the epoch (or a stop signal or callback); returns how long it waited for its batches."""
        cfg, epoch = self.config, state.epoch
        steps_here = min(self.steps_per_epoch, state.batch + self.total_steps - state.step)
        every = cfg.train.checkpoint_every_steps
        clock = DataClock()
        with clock.waiting():  # building the pipeline (and a first batch, for some) is waiting for data too
            if self._run_batches is not None:
                epoch_batches = self._run_batches.epoch(epoch, state.batch, steps_here - state.batch)
            else:
                ds = self.dataset_fn(cfg, cfg.data.train_split, True, epoch=epoch, skip_batches=state.batch)
                epoch_batches = self.engine.epoch_batches(ds, steps_here - state.batch)
        probing, planned_end = self.budget is not None and state.time_budget is None, None
        if probing:
            self.budget.steps_begin()
        lag = not cbs.batch_hooks  # read a step's loss after the next step is queued (see _finish_step)
        queued: list = []  # dispatched steps whose loss is not read yet: (loss, lr, batch)
        with epoch_batches as batches:
            for batch in clock.timed(batches):
                cbs("on_train_batch_begin", state.batch + len(queued))
                queued.append((*self._train_step(batch), batch))
                newest = state.step + len(queued)
                at_end = planned_end is not None and state.batch + len(queued) >= planned_end
                # probing steps are timed one by one, so each is read before the next is dispatched
                keep = lag and not probing and not at_end and not stop.requested and not (every and newest % every == 0)
                while len(queued) > keep:
                    self._finish_step(state, *queued.pop(0), steps_here, cbs)
                    if probing and self.budget.tick():
                        probing = False
                        self._plan_budget(state)
                        steps_here = planned_end = min(steps_here, state.batch + self.total_steps - state.step)
                if stop.requested or cbs.stopped_by or (planned_end is not None and state.batch >= planned_end):
                    break
                if not queued and every and state.step % every == 0 and state.batch < steps_here:
                    self._save(state)
            while queued:  # the epoch's last step
                self._finish_step(state, *queued.pop(0), steps_here, cbs)
        return clock

    def _plan_budget(self, state: LoopState) -> None:
        """``train.time_budget``: measure an epoch end (precise BN, a checkpoint) and a validation, plan the step
        count (``segtrain.time_budget``), let the schedule span it, compile the step for it and commit the plan."""
        cfg, budget = self.config.train, self.budget
        bn_state = [v.numpy() for v in self.model.non_trainable_variables]  # precise BN here is only a measurement
        started = time.perf_counter()
        if self.precise_bn:  # twice: the first compiles its forward pass, which later epoch ends do not pay
            self.precise_bn.refresh()
            started = time.perf_counter()
            self.precise_bn.refresh()
        bn_seconds = time.perf_counter() - started
        started = time.perf_counter()
        self.validate()
        validation_seconds = time.perf_counter() - started
        for variable, value in zip(self.model.non_trainable_variables, bn_state):
            variable.assign(value)
        self._save(state)  # twice: the first writes the run's first checkpoint files, which costs more
        started = time.perf_counter()
        self._save(state)
        save_seconds = time.perf_counter() - started
        costs = Costs(step=budget.step_seconds(), epoch_end=bn_seconds + save_seconds, validation=validation_seconds)
        plan = budget.plan(state.step, self.steps_per_epoch, cfg.val_every, costs,
                           also=budget.compile_seconds() + save_seconds)
        self._adopt_plan(state, plan)
        self._save(state)
        self.console.line(describe(plan, self.steps_per_epoch))
        self.log.note(describe(plan, self.steps_per_epoch))

    def _replan_budget(self, state: LoopState) -> None:
        """``train.time_budget``, at a validation a whole cycle after the last plan: re-plan at the pace kept since."""
        plan = self.budget.replan(state.time_budget, state.step, self.steps_per_epoch, self.config.train.val_every)
        if plan is None:
            return
        line = (f"train.time_budget: {plan['replanned_step_seconds']:.3f} s per step since the plan, everything included "
                f"(planned {plan['step_seconds']:.3f} s per step): re-planned from {state.time_budget['steps']} to "
                f"{plan['steps']} steps, to end at {plan['planned_seconds']:.0f} s")
        self._adopt_plan(state, plan)
        self.console.line(line)
        self.log.note(line)

    def _adopt_plan(self, state: LoopState, plan: dict) -> None:
        """Run for ``plan["steps"]``: the state keeps the plan, the schedule spans the count, the step is compiled for it."""
        state.time_budget = plan
        self.total_steps = state.total_steps = plan["steps"]
        self.epochs = state.epoch + math.ceil((self.total_steps - state.step + state.batch) / self.steps_per_epoch)
        self.schedule.total_steps = max(self.total_steps // self.config.train.accumulate_steps, 1)
        self._train_step = self.engine.make_train_step(self.model, self.optimizer, self._loss_share)

    def _finish_step(self, state: LoopState, loss, lr, batch, steps_here: int, cbs: LoopCallbacks) -> None:
        """Read a dispatched step's loss and count it (divergence check, logs, callbacks).

        An engine may return the loss still on its device (JAX): reading it waits for the step.
        Without per-batch callbacks the loop reads step k's loss after step k + 1 is queued, so the
        device never waits for the host; a step that is checkpointed (``checkpoint_every_steps``), the
        epoch's last step and a stop signal are read before anything else runs, so a NaN at step k
        still stops with step k's message, and checkpoints and resume hold the same state as before.
        """
        loss, lr = float(loss), float(lr)
        self._last_batch = batch
        self._record(state, loss)
        self.log.step(state.step, loss, lr)
        self.console.step(state.epoch, self.epochs, state.batch, steps_here, state.loss_sum / state.batch, lr)
        cbs("on_train_batch_end", state.batch - 1, logs={"loss": loss})

    def _record(self, state: LoopState, loss: float) -> None:
        """Count a finished step; stop on a non-finite or exploding loss before anything is saved."""
        step = state.step + 1
        if not math.isfinite(loss):
            raise self._stopped(step, f"loss is {loss}", loss_of_newest=True)
        if state.first_loss is None and loss > 0:
            state.first_loss = loss
        reference = max(state.first_loss or 1.0, 1.0)
        if loss > DIVERGENCE_FACTOR * reference:
            raise self._stopped(step, f"loss {loss:.3g} is over {DIVERGENCE_FACTOR:g} times {reference:.3g} (the "
                                      "first step's loss, at least 1): the run diverged", loss_of_newest=True)
        state.step, state.batch, state.loss_sum = step, state.batch + 1, state.loss_sum + loss

    def _stopped(self, step: int, what: str, loss_of_newest: bool = False) -> SegtrainError:
        """The error that ends a failed run; ``loss_of_newest``: the failure is the loss of ``step``, made with
        the weights of step ``step - 1``, so a checkpoint of that step is bad and is discarded."""
        if loss_of_newest and self.chief:
            committed = self.store.load_state()
            if committed is not None and committed.step == step - 1:
                self.store.discard_newest()
        return SegtrainError(
            f"train step {step}: {what}; training stopped ({self.store.describe_committed()}). Lower "
            "train.optimizer.learning_rate, add train.schedule.warmup_steps or check the labels"
        )

    def _lr(self) -> float:
        return float(self.optimizer.learning_rate)  # the schedule at the optimizer's counter

    def _end_epoch(self, state: LoopState, seconds: float, clock: DataClock, cbs: LoopCallbacks) -> None:
        """Precise BN, validation and best.keras (on the averaged weights, ``train.ema``), callbacks, early
        stopping, then the checkpoint: a stop decided here is in that checkpoint."""
        epoch = state.epoch
        self._check_finite(state)  # before validation can save best.keras
        row = {"epoch": epoch + 1, "step": state.step, "loss": state.loss_sum / max(state.batch, 1),
               "lr": self._lr(), "seconds": round(seconds, 2),
               "images_per_second": round(clock.batches * self.config.train.batch_size / max(seconds, 1e-9), 2),
               "data_wait": round(clock.waited / max(seconds, 1e-9), 4)}
        last = state.step >= self.total_steps or bool(cbs.stopped_by)  # a callback's stop mid-epoch: validate it
        validation = (epoch + 1) % self.config.train.val_every == 0 or last
        with self.average.applied():
            self._validate_into(row, state, validation=validation)
        if validation and not last and self.budget is not None and state.time_budget is not None:
            self._replan_budget(state)
        cbs("on_epoch_end", epoch, logs=epoch_logs(row))
        state.stopped_by = cbs.stopped_by or count_validation(self.config.train.early_stopping, state, row)
        state.history.append(row)
        state.epoch, state.batch, state.loss_sum = epoch + 1, 0, 0.0
        state.done = last or bool(state.stopped_by)
        self._save(state)
        self.log.epoch_end(state.history)
        self.console.epoch_end(row, self.epochs)

    def _validate_into(self, row: dict, state: LoopState, validation: bool) -> None:
        """Precise BN, then (``validation``) the val metrics into ``row`` and a new best into best.keras."""
        epoch = state.epoch
        if self.precise_bn:  # population BN statistics for this validation, best and last
            self.precise_bn.refresh()
        if validation:
            metrics = self.validate()
            names = metrics["class_names"]
            row.update(val_miou=metrics["miou"], val_pixel_accuracy=metrics["pixel_accuracy"],
                       val_mean_accuracy=metrics["mean_accuracy"],
                       val_per_class_iou={n: _num(v) for n, v in zip(names, metrics["per_class_iou"])},
                       val_mdice=metrics["mdice"],
                       val_per_class_dice={n: _num(v) for n, v in zip(names, metrics["per_class_dice"])})
            if metrics.get("groups"):  # regions of a sigmoid head, label groups of evaluate.groups
                scored = [g["dice"] for g in metrics["groups"].values() if not math.isnan(g["dice"])]
                row.update(val_group_dice={n: _num(g["dice"]) for n, g in metrics["groups"].items()},
                           val_group_mdice=sum(scored) / len(scored) if scored else math.nan)
            self.log.validated(epoch + 1, state.step, metrics)
            if improves(self.best_metric, row, state):
                state.best_score, state.best_miou, state.best_epoch = row[self.best_metric], metrics["miou"], epoch + 1
                if self.chief:
                    self.store.save_best(self.model)

    def _check_finite(self, state: LoopState) -> None:
        """Refuse to go on (or save) when the last update left non-finite weights or outputs."""
        if self._last_batch is not None and not self._finite_after_step(self._last_batch):
            raise self._stopped(state.step, "the update left non-finite weights or model outputs (the run diverged)")

    def _save(self, state: LoopState) -> None:
        self._check_finite(state)
        if self.chief:
            with self.average.applied():  # the average as the model's weights, the raw ones in its slots
                self.store.save(self.model, self.optimizer, state)

    def validate(self) -> dict:
        """Confusion matrix over the validation split -> ``segtrain.metrics`` report.

        With the default data layer this is ``segtrain evaluate`` on the float32 weights (native
        labels), so the logged number and the checkpoint's evaluation agree; a custom
        ``dataset_fn``, volumes and signals (the fixed validation patches of
        ``segtrain.data.loading.patch_plans``) are scored on the batches it yields. Label groups
        (``evaluate.groups``, or the regions of a sigmoid head) are scored from the same matrix.
        """
        cfg = self.config
        if self.dataset_fn is _default_dataset and not get_format(cfg.data.format).patches:  # evaluate's per-image path: native labels, float32
            return evaluate(cfg, "val", model=self._float32_model(), verbose=False)
        cm = ConfusionMatrix(cfg.data.num_classes, VOID)
        with numpy_batches(self.dataset_fn(cfg, cfg.data.val_split, False, epoch=0, skip_batches=0)) as batches:
            for images, masks in batches:
                cm.update(masks, self._predict(images))
        try:
            names = class_names(cfg.data)
        except SegtrainError:
            names = None
        return {**cm.metrics(names), "confusion_matrix": cm.result().tolist(),
                "groups": group_metrics(cm.result(), scored_groups(cfg))}

    def _final_metrics(self, state: LoopState) -> dict:
        last = next((r for r in reversed(state.history) if "val_miou" in r), {})
        out = {"loss": state.history[-1]["loss"] if state.history else None,
               "miou": last.get("val_miou"), "pixel_accuracy": last.get("val_pixel_accuracy"),
               "mean_accuracy": last.get("val_mean_accuracy"), "per_class_iou": last.get("val_per_class_iou"),
               "mdice": last.get("val_mdice"), "per_class_dice": last.get("val_per_class_dice"),
               "best_miou": state.best_miou, "best_epoch": state.best_epoch,
               "best_metric": self.best_metric, "best_score": state.best_score,
               "epochs": state.epoch, "steps": state.step, "run_dir": str(self.run_dir)}
        if out["miou"] is not None:
            self.console.line(f"mIoU: {out['miou']:.3f}")
        return out


def config_difference(saved: Path, config: Config) -> str | None:
    """The first key whose value differs between a run folder's ``config.yaml`` and ``config`` (``runtime.*`` aside)."""
    try:
        loaded = yaml.safe_load(saved.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        loaded = None
    if not isinstance(loaded, dict):
        return f"its {saved.name} is missing or unreadable"
    old, new = flatten(loaded), flatten(yaml.safe_load(yaml.safe_dump(to_dict(config))))
    for key in sorted(set(old) | set(new)):
        if not key.startswith("runtime.") and old.get(key, "(absent)") != new.get(key, "(absent)"):
            return f"{key}: {old.get(key, '(absent)')!r} there, {new.get(key, '(absent)')!r} here"
    old_regions = [name for name, _ in region_order(loaded)]
    if old_regions != list(config.data.regions):  # flattened keys lose the order, which is the head's channel order
        return f"data.regions: in the order {old_regions} there, {list(config.data.regions)} here (the order of the head's outputs)"
    return None


def _num(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def train(config: Config, resume: bool = False, **kwargs) -> dict:
    """Python entry point: ``train(load_config("configs/x.yaml"))`` -> final metrics dict."""
    return Trainer(config, **kwargs).fit(resume=resume)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML config file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set train.epochs=3 (repeatable)")
    parser.add_argument("--resume", action="store_true", help="continue the run in output_dir from its last checkpoint")
    parser.add_argument("--workers", type=int, default=0, metavar="N",
                        help="start N local multi-worker processes on 127.0.0.1 (sets TF_CONFIG for each)")


def run(args: argparse.Namespace) -> int:
    if args.workers:
        argv = ["--config", args.config, *(x for o in args.overrides for x in ("--set", o))]
        return launch_local_workers(args.workers, argv + (["--resume"] if args.resume else []))
    config = load_config(args.config, args.overrides)
    try:
        train(config, resume=args.resume, command=shlex.join(["segtrain", "train", *args.argv]))
    except TrainingInterrupted as err:
        print(f"\n{err}", file=sys.stderr)
        return err.exit_code
    return 0
