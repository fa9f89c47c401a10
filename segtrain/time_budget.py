"""``train.time_budget``: a run length in minutes, turned into a step count on the machine that runs it.

A schedule that decays to zero exactly at the budget beats one cut short by the clock (Li, Yumer &
Ramanan, "Budgeted Training", ICLR 2020). So the run is not stopped when time runs out: after
``probe_steps`` training steps the trainer measures what a step, an epoch end (precise BN and a
checkpoint) and a validation cost here, and ``plan_steps`` fixes the number of steps whose
remaining work fits in what is left of the budget. The schedule then spans exactly that count,
which ``state.json`` keeps, so ``--resume`` continues the same plan instead of planning again.

A probe of a few steps can be optimistic: a run whose data loading stalls now and then, or whose
steps slow down later (a machine that gets busier or quieter), runs longer or shorter than
planned. So at every validation a whole validation cycle or more after the last plan, the run
checks its own pace: the seconds per step since that plan, everything included (epoch ends,
validation, waiting for data), and re-plans the remaining steps at that pace when the change is
worth more than 1 % of the budget (``BudgetClock.replan``). The schedule then spans the new count
(a small bend of the curve); a resumed run keeps the plan it resumed with.

The probe steps must fall inside the schedule's warmup when the schedule decays over the run
(poly, cosine): warmup does not depend on the run length, so the probe steps are the same steps
whatever length is planned after them. The last epoch may be partial (it ends at the planned step).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass


# A re-plan changes the step count only when the steps it adds or removes are worth more than this
# share of the budget at the measured pace: less would not move the end noticeably, and each re-plan
# bends the schedule and compiles the step again.
REPLAN_SHARE = 0.01


@dataclass(frozen=True)
class Costs:
    """Seconds measured on this machine, in this run."""

    step: float  # one training step (median of the probe steps after the first)
    epoch_end: float  # precise BN and a checkpoint, at every epoch end
    validation: float  # one validation (every train.val_every epochs, and after the last step)


def epoch_ends(done: int, total: int, steps_per_epoch: int, val_every: int) -> tuple[int, int]:
    """(epoch ends, validations) still to come for a run at step ``done`` (mid-epoch or at an epoch's last
    step, whose end has not run yet) that stops at step ``total``; epochs count from 1."""
    current = (max(done, 1) - 1) // steps_per_epoch + 1
    last = (max(total, 1) - 1) // steps_per_epoch + 1
    validations = last // val_every - (current - 1) // val_every + (1 if last % val_every else 0)
    return last - current + 1, validations


def remaining_seconds(done: int, total: int, steps_per_epoch: int, val_every: int, costs: Costs) -> float:
    """What steps ``done + 1 .. total`` and the epoch ends on the way cost, at ``costs``."""
    ends, validations = epoch_ends(done, total, steps_per_epoch, val_every)
    return (total - done) * costs.step + ends * costs.epoch_end + validations * costs.validation


def plan_steps(seconds_left: float, done: int, steps_per_epoch: int, val_every: int, costs: Costs) -> int:
    """The largest step count whose remaining work fits in ``seconds_left`` (``done``: the run ends now).

    ``remaining_seconds`` never decreases with the count, so a bisection finds it.
    """
    low, high = done, done + int(max(seconds_left, 0.0) / max(costs.step, 1e-9)) + 1
    while low < high:
        middle = (low + high + 1) // 2
        if remaining_seconds(done, middle, steps_per_epoch, val_every, costs) <= seconds_left:
            low = middle
        else:
            high = middle - 1
    return low


class BudgetClock:
    """The wall clock of one budgeted run: when it started, and the ends of the probe steps."""

    def __init__(self, minutes: float, probe_steps: int, started: float):
        self.seconds = minutes * 60.0
        self.probe_steps = probe_steps
        self.started = started
        self._ticks: list[float] = []
        self._first_began: float | None = None
        self._planned: tuple[float, int] | None = None  # (when, at which step) this process last planned

    def steps_begin(self) -> None:
        """Steps are about to run (an epoch's loop starts): the first probe step is timed from here."""
        if not self._ticks:
            self._first_began = time.perf_counter()

    def tick(self) -> bool:
        """A step ended; returns whether the probe is complete (time to plan)."""
        self._ticks.append(time.perf_counter())
        return len(self._ticks) >= self.probe_steps

    def step_seconds(self) -> float:
        """Median seconds between step ends (the first step, which compiles, aside)."""
        return statistics.median(b - a for a, b in zip(self._ticks, self._ticks[1:]))

    def compile_seconds(self) -> float:
        """What the first step cost beyond a steady one: the price of compiling the step again."""
        return max(self._ticks[0] - (self._first_began or self._ticks[0]) - self.step_seconds(), 0.0)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def plan(self, done: int, steps_per_epoch: int, val_every: int, costs: Costs, also: float) -> dict:
        """The plan kept in ``state.json``: the step count and what it was planned from; ``also``:
        seconds still to spend before the first planned step (compiling the step again, a checkpoint)."""
        now = time.perf_counter()
        spent = now - self.started + also
        steps = plan_steps(self.seconds - spent, done, steps_per_epoch, val_every, costs)
        self._planned = (now + also, done)
        return {"minutes": self.seconds / 60.0, "steps": steps, "planned_at_step": done,
                "spent_seconds": round(spent, 2), **{f"{k}_seconds": round(v, 4) for k, v in asdict(costs).items()},
                "planned_seconds": round(spent + remaining_seconds(done, steps, steps_per_epoch, val_every, costs), 2)}

    def replan(self, plan: dict, done: int, steps_per_epoch: int, val_every: int) -> dict | None:
        """At a validation a whole validation cycle or more after the last plan: the plan re-made at the
        pace since that plan (seconds per step, epoch ends, validations and data waits included), or None
        when the two plans differ by steps worth ``REPLAN_SHARE`` of the budget or less (the pace is then
        measured on, from the same start), or when this process did not plan (a resumed run keeps its plan)."""
        if self._planned is None or done - self._planned[1] < val_every * steps_per_epoch:
            return None  # not planned here, or less than a whole validation cycle since: its pace would mislead
        when, at_step = self._planned
        now = time.perf_counter()
        pace = (now - when) / (done - at_step)
        spent = now - self.started
        left = self.seconds - spent - plan["validation_seconds"]  # the last step's validation comes on top
        steps = max(plan_steps(left, done, steps_per_epoch, val_every, Costs(step=pace, epoch_end=0.0, validation=0.0)),
                    done + 1)
        if abs(steps - plan["steps"]) * pace <= REPLAN_SHARE * self.seconds:
            return None  # not worth a bend of the schedule and compiling the step again
        self._planned = (now, done)
        return {**plan, "steps": steps, "replanned_at_step": done, "replanned_step_seconds": round(pace, 4),
                "replans": plan.get("replans", 0) + 1,
                "planned_seconds": round(spent + (steps - done) * pace + plan["validation_seconds"], 2)}


def describe(plan: dict, steps_per_epoch: int) -> str:
    """The one line a budgeted run logs when it has planned."""
    return (f"train.time_budget: {plan['minutes']:g} min -> {plan['steps']} steps "
            f"({plan['steps'] / steps_per_epoch:.2f} epochs of {steps_per_epoch}; {plan['step_seconds']:.3f} s per step, "
            f"{plan['epoch_end_seconds']:.1f} s per epoch end, {plan['validation_seconds']:.1f} s per validation; "
            f"planned to end at {plan['planned_seconds']:.0f} s)")
