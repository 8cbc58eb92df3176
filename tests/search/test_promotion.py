"""ASHA's promotion variant (search._promotion.PromotionASHA) against a simulated Tune loop.

The simulator plays Tune's part: two slots, one epoch per tick per running trial, the
scheduler's decision applied to each result, paused trials resumed only when the scheduler
picks them. Each trial's metric is a fixed score, so the right promotions are known.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler

from search._promotion import PromotionASHA

MAX_T = 8
RUNGS = [2.0, 6.0]


class FakeController:
    """The part of Tune's controller the scheduler reads."""

    def __init__(self, trials: list[Any], finished: bool = True) -> None:
        self.trials = trials
        self.search_alg = SimpleNamespace(is_finished=lambda: finished)
        self.stopped: list[str] = []

    def get_trials(self) -> list[Any]:
        return self.trials

    def stop_trial(self, trial: Any) -> None:
        trial.status = Trial.TERMINATED
        self.stopped.append(trial.trial_id)


def simulate(scores: list[float], slots: int = 2) -> tuple[dict[str, int], FakeController]:
    """Run every trial under the scheduler; the epochs each trial ran."""
    trials = [SimpleNamespace(trial_id=f"t{i}", status=Trial.PENDING, epoch=0, score=s)
              for i, s in enumerate(scores)]  # fmt: skip
    tune = FakeController(trials)
    sched = PromotionASHA(
        time_attr="epoch", rungs=RUNGS, reduction_factor=3, metric="val_wfs", mode="max"
    )
    for _ in range(1000):
        while sum(t.status == Trial.RUNNING for t in trials) < slots:
            chosen = sched.choose_trial_to_run(tune)
            if chosen is None:
                break
            chosen.status = Trial.RUNNING
        running = [t for t in trials if t.status == Trial.RUNNING]
        if not running:
            break
        for trial in running:
            trial.epoch += 1
            decision = sched.on_trial_result(
                tune, trial, {"epoch": trial.epoch, "val_wfs": trial.score}
            )
            if trial.epoch == MAX_T:
                trial.status = Trial.TERMINATED
            elif decision == TrialScheduler.PAUSE:
                trial.status = Trial.PAUSED
    assert all(t.status == Trial.TERMINATED for t in trials), [t.status for t in trials]
    return {t.trial_id: t.epoch for t in trials}, tune


def test_ten_trials_spend_the_promotion_budget_and_the_best_runs_to_the_end() -> None:
    # the best trials are not the first ones: the stopping variant would let t0, t1 pass
    scores = [0.50, 0.55, 0.90, 0.60, 0.95, 0.40, 0.70, 0.85, 0.30, 0.65]
    epochs, tune = simulate(scores)
    # rung 2: all 10; rung 6: floor(10/3) = 3 promoted; the end: floor(3/3) = 1
    assert sum(epochs.values()) == 10 * 2 + 3 * 4 + 1 * 2  # 34 of FIFO's 80
    assert epochs["t4"] == MAX_T  # the best score
    assert sorted(t for t, e in epochs.items() if e >= 6) == ["t2", "t4", "t7"]  # the top 3
    assert set(tune.stopped) == {t for t, e in epochs.items() if e < MAX_T}


def test_the_first_trial_at_a_rung_waits_for_rivals() -> None:
    sched = PromotionASHA(
        time_attr="epoch", rungs=RUNGS, reduction_factor=3, metric="val_wfs", mode="max"
    )
    trial = SimpleNamespace(trial_id="a", status=Trial.RUNNING)
    tune = FakeController([trial], finished=False)
    assert sched.on_trial_result(tune, trial, {"epoch": 1, "val_wfs": 0.9}) == "CONTINUE"
    assert sched.on_trial_result(tune, trial, {"epoch": 2, "val_wfs": 0.9}) == "PAUSE"


def test_a_few_trials_still_bring_one_to_the_end() -> None:
    # floor(2/3) = 0 promotions by the rule: the best paused trial is promoted once nothing
    # else can run, at each rung, so one trial completes max_t; the other stops at rung 2
    epochs, tune = simulate([0.3, 0.8])
    assert epochs == {"t0": 2, "t1": MAX_T}
    assert tune.stopped == ["t0"]


def test_min_mode_promotes_the_lowest() -> None:
    sched = PromotionASHA(
        time_attr="epoch", rungs=[1.0], reduction_factor=2, metric="val_loss", mode="min"
    )
    trials = [SimpleNamespace(trial_id=f"t{i}", status=Trial.RUNNING) for i in range(2)]
    tune = FakeController(trials, finished=False)
    assert sched.on_trial_result(tune, trials[0], {"epoch": 1, "val_loss": 2.0}) == "PAUSE"
    trials[0].status = Trial.PAUSED
    # the second arrives better (lower): floor(2/2) = 1 promotion, and it is the top
    assert sched.on_trial_result(tune, trials[1], {"epoch": 1, "val_loss": 1.0}) == "CONTINUE"
    assert sched.choose_trial_to_run(tune) is None  # t0 is second of two: not promotable


def test_a_retried_trial_repeating_a_passed_rung_continues() -> None:
    sched = PromotionASHA(
        time_attr="epoch", rungs=[1.0], reduction_factor=2, metric="val_wfs", mode="max"
    )
    a, b = (SimpleNamespace(trial_id=n, status=Trial.RUNNING) for n in "ab")
    tune = FakeController([a, b], finished=False)
    sched.on_trial_result(tune, a, {"epoch": 1, "val_wfs": 0.1})
    assert sched.on_trial_result(tune, b, {"epoch": 1, "val_wfs": 0.9}) == "CONTINUE"
    assert sched.on_trial_result(tune, b, {"epoch": 1, "val_wfs": 0.2}) == "CONTINUE"


def test_mode_is_checked() -> None:
    with pytest.raises(ValueError, match="mode must be"):
        PromotionASHA(time_attr="epoch", rungs=[1.0], reduction_factor=2, metric="m", mode="up")


def test_ties_on_the_metric_are_broken_by_the_tie_metric() -> None:
    sched = PromotionASHA(time_attr="epoch", rungs=[1.0], reduction_factor=3, metric="val_wfs",
                          mode="max", tie_metric="val_loss", tie_mode="min")  # fmt: skip
    trials = [SimpleNamespace(trial_id=f"t{i}", status=Trial.RUNNING) for i in range(3)]
    tune = FakeController(trials, finished=False)
    for trial, loss in zip(trials, (0.7, 0.6, 0.9)):
        decision = sched.on_trial_result(
            tune, trial, {"epoch": 1, "val_wfs": 0.5, "val_loss": loss}
        )
        if decision == TrialScheduler.PAUSE:
            trial.status = Trial.PAUSED
    # three tied at 0.5: floor(3/3) = 1 promotion, the lowest loss (t1), not the first (t0)
    assert sched.choose_trial_to_run(tune) is trials[1]
