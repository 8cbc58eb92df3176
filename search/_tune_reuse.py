"""A reused trial worker that died before its next trial is one retried failure, not the end.

With ``TuneConfig(reuse_actors=True)`` (``search/run.py``) a finished trial's worker process is
kept for the next trial, which first runs Tune's ``reset`` task on it. When the worker died in
between (killed, out of memory, its node lost), Ray Tune 2.x handles that death twice
(``ray/tune/execution/tune_controller.py``):

1. the actor's error callback, ``TuneController._actor_failed``, sees a PENDING trial, counts a
   failure and requeues the trial, as it does for a worker that died while starting;
2. then the ``reset`` task's own error callback, ``_trial_task_failure``, counts a second
   failure and, the trial being PENDING again, ends it as ERROR whatever
   ``FailureConfig(max_failures)`` allows; the trial also stays in ``_resetting_trials``.

Ray has no option for this (its maintainers turned actor reuse off by default for its
instability, ray-project/ray#42951), so it is written here by hand: :func:`install` wraps the
``reset`` task's error callback so that a death ``_actor_failed`` already handled is not
handled again, and a ``reset`` that raised on a live worker is retried like any trial failure
(the trial marked RUNNING first, as ``_actor_failed`` does). ``tests/search/test_tune_reuse.py``
kills a reused worker in a real Tune run and fails if Tune's internals move.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

_MARK = "_wen_reset_failure_retried"
#: the TuneController internals the wrapper relies on (checked when it is installed)
_NEEDED = ("_schedule_trial_task", "_actor_failed", "_set_trial_status")


def install() -> None:
    """Wrap ``TuneController._schedule_trial_task`` once per process (the driver's)."""
    import ray
    from ray.tune.execution.tune_controller import TuneController

    if getattr(TuneController, _MARK, False):
        return
    missing = [name for name in _NEEDED if not hasattr(TuneController, name)]
    if missing:
        raise RuntimeError(
            f"Ray {ray.__version__}: TuneController has no {', '.join(missing)}; wen's retry "
            "of a reused worker that died (search/_tune_reuse.py) was written for Ray 2.x: "
            "install the Ray version constraints.txt pins"
        )
    schedule = TuneController._schedule_trial_task

    @functools.wraps(schedule)
    def schedule_trial_task(self: Any, trial: Any, method_name: str, *args: Any, **kw: Any):
        if method_name == "reset" and kw.get("on_error") is not None:
            kw["on_error"] = _reset_failed(self, self._trial_to_actor[trial], kw["on_error"])
        return schedule(self, trial, method_name, *args, **kw)

    TuneController._schedule_trial_task = schedule_trial_task
    setattr(TuneController, _MARK, True)


def _reset_failed(controller: Any, worker: Any, on_error: Callable) -> Callable:
    """The error callback of a ``reset`` task on ``worker`` (a Tune TrackedActor)."""
    from ray.exceptions import RayActorError
    from ray.tune.experiment import Trial

    def handle(trial: Any, exception: Exception) -> None:
        controller._resetting_trials.discard(trial)
        if isinstance(exception, RayActorError) and worker not in controller._actor_to_trial:
            # the worker died and `_actor_failed` (called first, ray/air/execution/_internal/
            # actor_manager.py `_actor_task_failed`) already counted the failure and retried
            return
        if trial.status == Trial.PENDING:
            # a failure is retried only from RUNNING (TuneController._process_trial_failure)
            controller._set_trial_status(trial, Trial.RUNNING)
        on_error(trial, exception)

    return handle
