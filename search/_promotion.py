"""ASHA's promotion variant: trials pause at a rung and go on only when they beat enough rivals.

Ray's ``ASHAScheduler`` is the *stopping* variant: a trial reaching a rung is compared with
the results recorded there so far and continues unless it is below the top
``1/reduction_factor``. With two trials at a time the first trials meet almost no rivals, so
they pass (syne-tune#769; ray#44256): 10 trials spent 0.72 of FIFO's epochs on our benchmark.

This is the *promotion* variant of Li et al., "A System for Massively Parallel
Hyperparameter Tuning" (MLSys 2020), Algorithm 2, written by hand because Ray Tune has none
(Syne Tune's ``type="promotion"`` is the same rule). A trial reaching rung ``k`` records its
metric there; it continues at once only if it is among the top ``floor(n_k / rf)`` of the
``n_k`` trials recorded at rung ``k`` and fewer than that many were promoted from ``k``;
otherwise it is PAUSED (Tune keeps the rung's checkpoint and frees the slot). When a slot is
free, :meth:`PromotionASHA.choose_trial_to_run` resumes the paused trial that has become
promotable (highest rung first), else a new trial starts. When no trial runs and no new
one is left, the best paused trial at the highest rung is promoted (so one trial always
reaches ``max_t``, as in successive halving's last rung), and once nothing can be promoted
any more the remaining paused trials are stopped where they are: the results table marks
them ``stopped_early`` at their rung's epoch.

Ties are broken by a second metric (``tie_metric``; the search stage passes the validation
loss). Early in a trial a score such as WFS on a few validation subjects takes a handful of
values (every trial predicting one class scores the same), so half the trials at a rung can
tie; the loss still orders them. On the search benchmark 5 of 10 trials tied at the first
rung, and without the tie-break the eventual best trial was not promoted.

Paused trials still count as live for Tune's search algorithms, so with this scheduler the
searcher applies no concurrency cap (``search.max_concurrent`` must be unset;
:func:`search.schedulers.scheduler_problems` says so): the resources each trial asks for
bound how many run at once.

A driver restored with ``--resume`` starts this scheduler with no rung records; the
trials the search knew continue from their checkpoints, so no result is lost or repeated,
but the records (and so the promotions) begin again from the trials still to come.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

if TYPE_CHECKING:
    from ray.tune.execution.tune_controller import TuneController

__all__ = ["PromotionASHA"]


def _signed(value: Any, sign: float) -> float:
    """``sign x value`` (larger is better); a missing or NaN value ranks last."""
    if value is None or math.isnan(float(value)):
        return -math.inf
    return sign * float(value)


class PromotionASHA(FIFOScheduler):
    """Promotion-based asynchronous successive halving (see the module docstring).

    ``rungs`` are the values of ``time_attr`` at which trials are judged (ascending, all
    below ``max_t``); ``reduction_factor`` keeps the top ``1/reduction_factor`` of each rung.

    >>> s = PromotionASHA(time_attr="epoch", rungs=[2, 6], reduction_factor=3,
    ...                   metric="val_wfs", mode="max")
    >>> s.promotable_count(0), s.rungs
    (0, [2.0, 6.0])
    """

    def __init__(
        self,
        *,
        time_attr: str,
        rungs: list[float],
        reduction_factor: float,
        metric: str,
        mode: str,
        tie_metric: str | None = None,
        tie_mode: str = "min",
    ) -> None:
        super().__init__()
        for name, value in (("mode", mode), ("tie_mode", tie_mode)):
            if value not in ("min", "max"):
                raise ValueError(f"{name} must be 'min' or 'max', got {value!r}")
        self._time_attr = time_attr
        self.rungs = [float(r) for r in rungs]
        self._rf = float(reduction_factor)
        self._metric = metric
        self._sign = 1.0 if mode == "max" else -1.0
        self._tie_metric = tie_metric
        self._tie_sign = 1.0 if tie_mode == "max" else -1.0
        #: per rung: trial id -> (metric, tie metric) it reached there (signed: larger is better)
        self._recorded: list[dict[str, tuple[float, float]]] = [{} for _ in self.rungs]
        #: per rung: the trial ids promoted from it
        self._promoted: list[set[str]] = [set() for _ in self.rungs]
        #: trial id -> the rung it is paused at
        self._paused_at: dict[str, int] = {}

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return True  # metric and mode are given explicitly

    def promotable_count(self, rung: int) -> int:
        """How many trials rung ``rung`` may promote now: ``floor(n / rf)``."""
        return math.floor(len(self._recorded[rung]) / self._rf + 1e-9)

    def _ranked(self, rung: int) -> list[str]:
        scores = self._recorded[rung]
        return sorted(scores, key=lambda t: (-scores[t][0], -scores[t][1], t))

    def _may_promote(self, rung: int, trial_id: str) -> bool:
        budget = self.promotable_count(rung) - len(self._promoted[rung])
        if budget <= 0 or trial_id in self._promoted[rung]:
            return False
        top = self._ranked(rung)[: self.promotable_count(rung)]
        return trial_id in top

    def on_trial_result(
        self, tune_controller: TuneController, trial: Trial, result: dict[str, Any]
    ) -> str:
        elapsed = result.get(self._time_attr)
        if elapsed is None or float(elapsed) not in self.rungs:
            return TrialScheduler.CONTINUE
        rung = self.rungs.index(float(elapsed))
        tid = trial.trial_id
        if tid in self._promoted[rung]:
            return TrialScheduler.CONTINUE  # a retried trial repeating a rung it passed
        self._recorded[rung][tid] = (
            _signed(result.get(self._metric), self._sign),
            _signed(result.get(self._tie_metric), self._tie_sign) if self._tie_metric else 0.0,
        )
        if self._may_promote(rung, tid):
            self._promoted[rung].add(tid)
            return TrialScheduler.CONTINUE
        self._paused_at[tid] = rung
        return TrialScheduler.PAUSE

    def _promote_paused(self, trials: list[Trial], force: bool) -> Trial | None:
        paused = {t.trial_id: t for t in trials if t.status == Trial.PAUSED}
        for rung in reversed(range(len(self.rungs))):
            waiting = [tid for tid in self._ranked(rung)
                       if self._paused_at.get(tid) == rung and tid in paused]  # fmt: skip
            for tid in waiting:
                if force or self._may_promote(rung, tid):
                    self._promoted[rung].add(tid)
                    del self._paused_at[tid]
                    return paused[tid]
        return None

    def choose_trial_to_run(self, tune_controller: TuneController) -> Trial | None:
        trials = tune_controller.get_trials()
        chosen = self._promote_paused(trials, force=False)
        if chosen is not None:
            return chosen
        for trial in trials:
            if trial.status == Trial.PENDING and trial.trial_id not in self._paused_at:
                return trial
        if any(t.status == Trial.RUNNING for t in trials):
            return None  # a running trial may still record a result that promotes one
        if not tune_controller.search_alg.is_finished():
            return None  # the searcher has more trials to give
        top = self._promote_paused(trials, force=not self._finished_top(trials))
        if top is not None:
            return top
        for trial in trials:  # nothing left to promote: stop the rest where they paused
            if trial.status == Trial.PAUSED and trial.trial_id in self._paused_at:
                del self._paused_at[trial.trial_id]
                tune_controller.stop_trial(trial)
        return None

    def _finished_top(self, trials: list[Trial]) -> bool:
        """Whether some trial ran to the end (past the last rung) without error."""
        last = len(self.rungs) - 1
        return any(
            t.status == Trial.TERMINATED and t.trial_id in self._promoted[last] for t in trials
        )

    def on_trial_remove(self, tune_controller: TuneController, trial: Trial) -> None:
        self._paused_at.pop(trial.trial_id, None)

    def debug_string(self) -> str:
        counts = ", ".join(
            f"{r:g}: {len(rec)} recorded, {len(pro)} promoted"
            for r, rec, pro in zip(self.rungs, self._recorded, self._promoted)
        )
        return f"PromotionASHA (rungs at {self._time_attr} {counts}; {len(self._paused_at)} paused)"
