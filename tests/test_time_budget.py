"""train.time_budget: the planning arithmetic by hand, the schedule ending at the planned step, and
exact resume of a budgeted run. No timing here: step and epoch-end costs are injected."""

import json
import time as real_time

import keras
import numpy as np
import pytest
from test_training import CtrlC, in_memory, make_config, make_data

from segtrain import time_budget, training
from segtrain.errors import SegtrainError
from segtrain.time_budget import BudgetClock, Costs, epoch_ends, plan_steps, remaining_seconds
from segtrain.training import Trainer, TrainingInterrupted

COSTS = Costs(step=1.0, epoch_end=2.0, validation=5.0)


def test_planning_arithmetic_by_hand():
    # At step 10 of epochs of 20 steps, validating every 2nd epoch, 100 s left: 85 steps fit.
    # Steps 11..85: 75 s; epochs 1..5 end (5 x 2 s); validations after epochs 2, 4 and the last (5): 15 s.
    assert epoch_ends(10, 85, 20, 2) == (5, 3)
    assert remaining_seconds(10, 85, 20, 2, COSTS) == 75 + 10 + 15 == 100
    assert remaining_seconds(10, 86, 20, 2, COSTS) == 101
    assert plan_steps(100.0, 10, 20, 2, COSTS) == 85  # the last epoch is partial: 5 of its 20 steps
    # 80 steps end on epoch 4, a validation epoch anyway: 70 + 8 + 10 = 88 s.
    assert remaining_seconds(10, 80, 20, 2, COSTS) == 88
    # Every epoch validated, at epoch 1's last step (its end still to come): the end alone costs 7 s.
    assert epoch_ends(20, 20, 20, 1) == (1, 1)
    assert plan_steps(6.9, 20, 20, 1, COSTS) == 20  # not even that fits: the run ends now
    assert plan_steps(7 + 3, 20, 20, 1, COSTS) == 20  # one more step opens epoch 2 and its end: 1 + 7 + 7 > 10
    assert plan_steps(7 + 1 + 7, 20, 20, 1, COSTS) == 21


def test_the_clock_takes_the_median_step_and_the_compile_excess(monkeypatch):
    now = iter([100.0, 104.0, 105.0, 106.5, 107.5, 130.0])  # began, 4 step ends, the plan
    monkeypatch.setattr(time_budget.time, "perf_counter", lambda: next(now))
    clock = BudgetClock(minutes=2.0, probe_steps=4, started=90.0)
    clock.steps_begin()
    assert [clock.tick() for _ in range(4)] == [False, False, False, True]
    assert clock.step_seconds() == 1.0  # median of 1.0, 1.5, 1.0; the first step (4 s) compiles
    assert clock.compile_seconds() == 3.0
    plan = clock.plan(done=4, steps_per_epoch=20, val_every=1, costs=Costs(1.0, 2.0, 5.0), also=3.0)
    # 120 s - (40 s elapsed + 3 s) = 77 s left. n steps within epochs 1..3 cost (n - 4) s + 3 x (2 + 5) s:
    # 60 steps take 56 + 21 = 77 s; a 61st opens epoch 4 and its end: 57 + 28 = 85 s.
    assert plan["steps"] == 60
    assert plan["planned_seconds"] == 43 + 77 and plan["spent_seconds"] == 43


def bn_model(config, input_shape):
    keras.utils.set_random_seed(1)
    x = keras.Input((None, None, 3))
    y = keras.layers.Rescaling(1 / 127.5, offset=-1)(x)
    y = keras.layers.Conv2D(8, 3, padding="same")(y)
    y = keras.layers.ReLU()(keras.layers.BatchNormalization()(y))
    return keras.Model(x, keras.layers.Conv2D(config.data.num_classes, 1)(y))


def budgeted(tmp_path, callbacks=(), **train):
    """A budgeted run of the tiny BN model (4 steps per epoch), its plan fixed at 11 steps (2.75 epochs)."""
    train = {"epochs": 1, "mixed_precision": "none", "schedule": {"name": "poly", "warmup_steps": 3},
             "precise_bn": {"batches": 2}, **train}
    return Trainer(make_config(tmp_path, **train), model_fn=bn_model, dataset_fn=in_memory(*make_data()),
                   callbacks=list(callbacks), verbose=1)


@pytest.fixture
def planned_11(monkeypatch):
    monkeypatch.setattr(time_budget, "plan_steps", lambda seconds_left, done, *args: 11)


@pytest.mark.slow  # several runs with precise BN, validation and checkpoints
def test_the_schedule_reaches_zero_at_the_planned_step_and_the_plan_is_kept(tmp_path, planned_11, capsys):
    trainer = budgeted(tmp_path, time_budget={"minutes": 5, "probe_steps": 3})
    result = trainer.fit()
    assert result["steps"] == 11 and result["epochs"] == 3  # the last epoch is partial
    assert trainer.schedule.total_steps == 11
    assert float(trainer.schedule(10)) > 0 and float(trainer.schedule(11)) == 0.0
    state = json.loads((tmp_path / "run" / "checkpoints" / "state.json").read_text())
    plan = state["time_budget"]
    assert plan["steps"] == state["total_steps"] == 11 and plan["planned_at_step"] == 3
    assert plan["step_seconds"] > 0 and plan["epoch_end_seconds"] > 0 and plan["validation_seconds"] > 0
    assert [row["step"] for row in state["history"]] == [4, 8, 11]
    assert state["history"][-1]["lr"] == 0.0
    out = capsys.readouterr().out
    assert "train.time_budget: 5 min -> 11 steps (2.75 epochs of 4;" in out and "train.time_budget: ended at" in out
    assert "train.time_budget: ended at" in (tmp_path / "run" / "run.log").read_text()  # planned vs actual, kept


@pytest.mark.slow  # several runs with precise BN, validation and checkpoints
def test_a_budgeted_run_resumed_after_ctrl_c_ends_like_the_uninterrupted_run_of_its_count(tmp_path, planned_11):
    straight = budgeted(tmp_path / "budget", time_budget={"minutes": 5, "probe_steps": 3})
    straight.fit()
    fixed = budgeted(tmp_path / "fixed", steps=11)  # the same count, no budget: no probe, no measurement
    fixed.fit()
    with pytest.raises(TrainingInterrupted):
        budgeted(tmp_path / "killed", [CtrlC(6)], time_budget={"minutes": 5, "probe_steps": 3}).fit()
    assert json.loads((tmp_path / "killed" / "run" / "checkpoints" / "state.json").read_text())["step"] == 6
    monkey_free = budgeted(tmp_path / "killed", time_budget={"minutes": 5, "probe_steps": 3})
    time_budget_plan = time_budget.plan_steps
    time_budget.plan_steps = lambda *args: pytest.fail("a resumed run plans again")  # the plan is in state.json
    try:
        result = monkey_free.fit(resume=True)
    finally:
        time_budget.plan_steps = time_budget_plan
    assert result["steps"] == 11
    for a, b, c in zip(fixed.model.get_weights(), straight.model.get_weights(), monkey_free.model.get_weights(), strict=True):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-6)
        np.testing.assert_allclose(c, a, rtol=0, atol=1e-6)


@pytest.mark.parametrize("train, message", [
    ({"steps": 20, "time_budget": {"minutes": 5}}, "keys 'train.steps' and 'train.time_budget' both set the run length"),
    ({"schedule": {"name": "poly", "warmup_steps": 5}, "time_budget": {"minutes": 5}},
     r"train.time_budget.probe_steps' \(10\) must fall inside the warmup of the poly schedule \(train.schedule.warmup_steps: 5\)"),
    ({"time_budget": {"minutes": 0}}, "key 'train.time_budget.minutes' must be a positive number of minutes"),
    ({"time_budget": {"minutes": 5, "probe_steps": 1}}, "key 'train.time_budget.probe_steps' must be at least 2"),
])
def test_config_errors(tmp_path, train, message):
    with pytest.raises(SegtrainError, match=message):
        make_config(tmp_path, **train)


def test_a_plan_that_ends_inside_the_probing_epoch_ends_the_run_there(tmp_path, monkeypatch):
    monkeypatch.setattr(time_budget, "plan_steps", lambda seconds_left, done, *args: done)  # no time left
    result = budgeted(tmp_path, time_budget={"minutes": 5, "probe_steps": 3}).fit()
    state = json.loads((tmp_path / "run" / "checkpoints" / "state.json").read_text())
    assert result["steps"] == 3 and [row["step"] for row in state["history"]] == [3] and state["done"]
    assert result["miou"] is not None  # the run's last step is validated, as every run's


class FakeTime:
    """The ``time`` module of ``time_budget`` and ``training`` with a clock that only the steps move, so
    the plan and the re-plan are exact arithmetic, whatever the machine's load."""

    def __init__(self):
        self.now = 1000.0

    def perf_counter(self):
        return self.now

    def __getattr__(self, name):
        return getattr(real_time, name)


class Paced(keras.callbacks.Callback):
    """Steps cost 0.125 s of the fake clock while the run probes, then 1 s: the probe was optimistic;
    from step ``quieter_after`` on, 0.5 s (the machine got quieter)."""

    def __init__(self, clock: FakeTime, quieter_after: int | None = None):
        super().__init__()
        self.clock, self.steps, self.quieter_after = clock, 0, quieter_after

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        quieter = self.quieter_after is not None and self.steps > self.quieter_after
        self.clock.now += 0.125 if self.steps <= 3 else 0.5 if quieter else 1.0


@pytest.mark.slow  # a few dozen steps with precise BN, validation and checkpoints
def test_a_run_slower_than_its_probe_replans_at_its_pace_and_ends_on_budget(tmp_path, monkeypatch, capsys):
    clock = FakeTime()
    monkeypatch.setattr(time_budget, "time", clock)
    monkeypatch.setattr(training, "time", clock)  # epoch ends, validations and checkpoints cost no fake time
    trainer = budgeted(tmp_path, [Paced(clock)], val_every=2, time_budget={"minutes": 0.5, "probe_steps": 3})
    result = trainer.fit()
    state = json.loads((tmp_path / "run" / "checkpoints" / "state.json").read_text())
    plan = state["time_budget"]
    out = capsys.readouterr().out
    # Planned at 0.125 s a step after 3 steps (0.375 s): 237 more steps fit in 29.625 s.
    assert "train.time_budget: 0.5 min -> 240 steps" in out
    # Re-planned at the first validation a whole cycle (2 epochs of 4 steps) after the plan at step 3:
    # epoch 4's end, step 16, 13 steps at 1 s since; 30 s - 13.375 s = 16.625 s: 16 more steps.
    assert plan["replanned_at_step"] == 16 and plan["replanned_step_seconds"] == 1.0
    assert plan["steps"] == result["steps"] == state["total_steps"] == 32
    assert trainer.schedule.total_steps == 32 and state["history"][-1]["lr"] == 0.0
    assert clock.now - 1000.0 == 0.375 + 29 * 1.0  # 29.375 s: on budget
    assert "re-planned from 240 to 32 steps" in out


@pytest.mark.slow  # a few dozen steps with precise BN, validation and checkpoints
def test_a_run_whose_pace_changes_again_replans_again(tmp_path, monkeypatch, capsys):
    clock = FakeTime()
    monkeypatch.setattr(time_budget, "time", clock)
    monkeypatch.setattr(training, "time", clock)
    trainer = budgeted(tmp_path, [Paced(clock, quieter_after=16)], val_every=2,
                       time_budget={"minutes": 0.5, "probe_steps": 3})
    result = trainer.fit()
    plan = json.loads((tmp_path / "run" / "checkpoints" / "state.json").read_text())["time_budget"]
    out = capsys.readouterr().out
    assert "re-planned from 240 to 32 steps" in out  # step 16, as above
    # Step 24 (the next whole cycle): 8 steps at 0.5 s since step 16; 17.375 s spent, 12.625 s left: 25 more.
    assert "re-planned from 32 to 49 steps" in out
    assert plan["replans"] == 2 and plan["replanned_at_step"] == 24 and plan["replanned_step_seconds"] == 0.5
    assert result["steps"] == 49 and trainer.schedule.total_steps == 49
    assert clock.now - 1000.0 == 17.375 + 25 * 0.5  # 29.875 s of 30: on budget; later validations kept the plan


@pytest.mark.parametrize("pace, steps", [(0.502, None), (0.52, 115)])
def test_a_replan_happens_only_when_its_steps_are_worth_more_than_one_percent_of_the_budget(monkeypatch, pace, steps):
    clock = FakeTime()
    monkeypatch.setattr(time_budget, "time", clock)
    budget = time_budget.BudgetClock(1.0, 3, started=clock.now)
    clock.now += 5.0
    plan = budget.plan(10, 10, 1, time_budget.Costs(step=0.5, epoch_end=0.0, validation=0.0), also=0.0)
    assert plan["steps"] == 120  # 55 s left at 0.5 s a step
    clock.now += 10 * pace
    replanned = budget.replan(plan, 20, 10, 1)
    # 0.502 s: 99 more steps fit, 1 fewer than planned, worth 0.5 s <= 0.6 s (1 % of 60 s): kept.
    # 0.52 s: 95 more fit, 5 fewer, worth 2.6 s: re-planned.
    assert (replanned and replanned["steps"]) == steps
