"""The search's live state in the run folder, written by the driver as Tune reports.

``wen dashboard`` reads a run only from its folder (local or ``s3://``/``gs://``), so the
driver writes what a page needs while the search runs, through :class:`RunStorage` (each file
atomically; an object store sees whole files only):

* ``RUN/live/search.json`` (``RUN_LAYOUT.live_search``): the metric and mode, the last
  epoch, the scheduler and its rungs (the epochs where ASHA judges), the searched keys,
  the Ray dashboard's address, and whether the search is running or finished;
* ``RUN/live/trials/<trial_id>.json`` (``RUN_LAYOUT.live_trial``): one per trial, rewritten
  on every report: status, searched values, fold, node, every epoch's metrics (the last
  report of an epoch wins: a restored trial repeats epochs), where the scheduler stopped it,
  the error.

One writer (the driver's Tune callback), so no two processes write one file. Tune's own
trial folders are synced to storage on Tune's schedule (minutes for remote storage); these
files are written within the report that produced them. ``results.csv`` stays the search's
final table; the records are what a page shows before it exists.
"""

from __future__ import annotations

import json
import logging
import math
import time
from typing import TYPE_CHECKING, Any

from ray.tune import Callback

from search.results import short_error
from search.schedulers import rung_epochs
from search.space import trial_overrides
from trainers.errors import WenError
from trainers.run_layout import RUN_LAYOUT

if TYPE_CHECKING:
    from search.config import WenConfig
    from search.storage import RunStorage

__all__ = ["LIVE_METRIC_PREFIXES", "LiveFeed", "search_state"]

#: Result keys a trial record keeps per epoch (Tune's own bookkeeping keys are left out).
LIVE_METRIC_PREFIXES = ("val_", "train_", "best_", "lr")
log = logging.getLogger(__name__)
_KEPT = ("epoch", "time_total_s", "snapshot_epoch", "lr_cycles")


def search_state(
    config: WenConfig, status: str, ray_dashboard: str | None, started: float
) -> dict[str, Any]:
    """``live/search.json``: what a page needs to read the trial records."""
    settings = config.search
    return {
        "name": config.name,
        "status": status,
        "metric": settings.metric,
        "mode": settings.mode,
        "max_epochs": config.train.epochs,
        "scheduler": settings.scheduler.name,
        "rungs": rung_epochs(config),
        "searched": list(settings.space) + (["data.split.fold"] if settings.folds else []),
        "ray_dashboard": ray_dashboard,
        "started": started,
        "updated": time.time(),
    }


def _epoch_row(result: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for key, value in result.items():
        if key in _KEPT or key.startswith(LIVE_METRIC_PREFIXES):
            if isinstance(value, float) and not math.isfinite(value):
                value = None  # JSON has no NaN
            if isinstance(value, (int, float, str, list)) or value is None:
                row[key] = value
    return row


class LiveFeed(Callback):
    """A Tune callback writing the search's live state into ``run`` (see the module doc).

    Module-level and holding only picklable state: Tune pickles the run config, callbacks
    included, and ``--resume`` brings this object back (records are re-read from the run).
    """

    def __init__(self, config: WenConfig, run: RunStorage, ray_dashboard: str | None) -> None:
        self.config = config
        self.run = run
        self.ray_dashboard = ray_dashboard
        self.started = time.time()
        self.records: dict[str, dict[str, Any]] = {}
        self._failed: set[str] = set()

    def _put(self, rel: str, text: str) -> None:
        """Write one live file; a failure (a full disk, a storage hiccup) is logged once per
        file and skipped: the records are a view of the search, never a reason to stop it."""
        try:
            self.run.write_text(rel, text)
        except (OSError, WenError) as exc:
            if rel not in self._failed:
                log.warning("live record %s not written (%s); the search goes on", rel, exc)
                self._failed.add(rel)

    def _write_search(self, status: str) -> None:
        state = search_state(self.config, status, self.ray_dashboard, self.started)
        self._put(RUN_LAYOUT.live_search, json.dumps(state, indent=1))

    def _record(self, trial: Any) -> dict[str, Any]:
        tid = str(trial.trial_id)
        if tid not in self.records:
            searched = trial_overrides(dict(trial.config or {}), self.config.search.folds)
            self.records[tid] = _read_record(self.run, tid) or {
                "trial_id": tid,
                "status": "PENDING",
                "params": {k: v for k, v in searched.items() if k != "data.split.fold"},
                "fold": searched.get("data.split.fold"),
                "node_ip": None,
                "epochs": [],
                "stopped_at": None,
                "error": None,
            }
        return self.records[tid]

    def _write(self, trial: Any, **changes: Any) -> None:
        record = self._record(trial)
        record.update(changes, updated=time.time())
        self._put(RUN_LAYOUT.live_trial(record["trial_id"]), json.dumps(record, default=str))

    def setup(self, *args: Any, **info: Any) -> None:
        self._write_search("running")

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._write(trial, status="RUNNING")

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        record = self._record(trial)
        row = _epoch_row(result)
        if "epoch" in row:
            epochs = [e for e in record["epochs"] if e.get("epoch") != row["epoch"]]
            record["epochs"] = sorted([*epochs, row], key=lambda e: e["epoch"])
        self._write(trial, status="RUNNING", node_ip=result.get("node_ip"))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        record = self._record(trial)
        last = max((int(e["epoch"]) for e in record["epochs"]), default=0)
        # a trial that ends on its own runs every epoch: one that did not was stopped by the
        # scheduler at the rung it reached
        stopped = last if last < self.config.train.epochs else None
        self._write(trial, status="TERMINATED", stopped_at=stopped)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._write(trial, status="ERROR", error=_error_text(trial))

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._write_search("finished")


def _read_record(run: RunStorage, trial_id: str) -> dict[str, Any] | None:
    """A record written before a driver restart (``--resume`` continues it)."""
    rel = RUN_LAYOUT.live_trial(trial_id)
    try:
        return json.loads(run.read_text(rel)) if run.exists(rel) else None
    except (OSError, ValueError):
        return None


def _error_text(trial: Any) -> str:
    """The last line of a trial's error (Tune keeps the whole traceback in its folder)."""
    for attr in ("error_msg", "get_error"):
        value = getattr(trial, attr, None)
        value = value() if callable(value) else value
        if value:
            return short_error(value) or str(value)[:300]
    return "the trial failed (see its error.txt in Tune's trial folder)"
