"""The run's results table: one row per trial, written as ``RUN/results.csv`` and ``.parquet``.

Rows come from Tune's ``ResultGrid``, which holds exactly the trials of this run (a restored
run included), never from globbing the run folder. Tune's restore is at-least-once: a trial
interrupted after reporting an epoch may report it again, and a retried trial repeats the
epochs after its checkpoint, so each trial's history is deduplicated by epoch (last wins)
before the best epoch is picked.
"""

from __future__ import annotations

import io
import json
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from search.space import trial_overrides
from trainers.run_layout import RUN_LAYOUT

if TYPE_CHECKING:
    from search.config import WenConfig
    from search.storage import RunStorage

__all__ = [
    "RESULT_COLUMNS",
    "best_row",
    "history_frame",
    "results_table",
    "short_error",
    "write_results",
]

#: Columns every results table starts with; the searched keys and metrics follow.
RESULT_COLUMNS = [
    "trial_id",
    "status",
    "stopped_early",
    "fold",
    "best_epoch",
    "epochs_run",
    "resumes",
    "time_total_s",
    "node_ip",
    "node_id",
    "predictions",
    "init_weights",
    "error",
]
_METRICS = [
    "val_wfs",
    "val_acc",
    "val_ba",
    "val_auc",
    "val_kappa",
    "val_f1",
    "val_loss",
    "train_loss",
]


def history_frame(frame: pd.DataFrame | None) -> pd.DataFrame:
    """A trial's per-epoch history with one row per epoch (the last report of each wins)."""
    if frame is None or frame.empty or "epoch" not in frame.columns:
        return pd.DataFrame()
    out = frame.dropna(subset=["epoch"]).copy()
    out["epoch"] = out["epoch"].astype(int)
    return out.drop_duplicates("epoch", keep="last").sort_values("epoch").reset_index(drop=True)


def best_row(history: pd.DataFrame, metric: str, mode: str) -> pd.Series | None:
    """The epoch with the best ``metric`` (first one on ties); None without any value."""
    if history.empty or metric not in history.columns:
        return None
    values = pd.to_numeric(history[metric], errors="coerce")
    if values.notna().sum() == 0:
        return None
    index = values.idxmax() if mode == "max" else values.idxmin()
    return history.loc[index]


def _trial_row(result: Any, config: WenConfig, run: RunStorage | None) -> dict[str, Any]:
    settings = config.search
    metrics = dict(result.metrics or {})
    history = history_frame(result.metrics_dataframe)
    trial_id = metrics.get("trial_id") or (
        history["trial_id"].iloc[-1] if "trial_id" in history else None
    )
    searched = trial_overrides(dict(result.config or {}), settings.folds)
    best = best_row(history, settings.metric, settings.mode)
    last = history.iloc[-1] if not history.empty else pd.Series(metrics)
    epochs_run = int(history["epoch"].max()) if not history.empty else 0
    row: dict[str, Any] = {
        "trial_id": trial_id,
        "status": "ERROR" if result.error else "TERMINATED",
        "stopped_early": bool(not result.error and epochs_run < config.train.epochs),
        "fold": searched.get("data.split.fold", config.data.split.fold),
        "best_epoch": int(best["epoch"]) if best is not None else None,
        "epochs_run": epochs_run,
        "resumes": _resumes(history),
        "time_total_s": float(last.get("time_total_s", np.nan)),
        "node_ip": last.get("node_ip"),
        "node_id": last.get("node_id"),
        "predictions": None,
        "init_weights": last.get("init_weights"),
        "error": short_error(result.error),
    }
    if run is not None and trial_id and run.exists(RUN_LAYOUT.prediction(trial_id)):
        row["predictions"] = run.join(RUN_LAYOUT.prediction(trial_id))
    for key in settings.space:
        row[key] = searched.get(key)
    for name in _METRICS:
        row[name] = (
            float(best[name])
            if best is not None and name in best and pd.notna(best[name])
            else np.nan
        )
    return row


def _resumes(history: pd.DataFrame) -> int:
    """How often the trial continued from a checkpoint (retries, pauses, restores)."""
    if history.empty or "resumed_from_epoch" not in history.columns:
        return 0
    starts = pd.to_numeric(history["resumed_from_epoch"], errors="coerce")
    return int(starts[starts >= 0].nunique())


def short_error(error: Any) -> str | None:
    """A trial error's last line, at most 300 characters (None for no error)."""
    if not error:
        return None
    text = str(error).strip().splitlines()
    return text[-1][:300] if text else type(error).__name__


def results_table(grid: Any, config: WenConfig, run: RunStorage | None = None) -> pd.DataFrame:
    """One row per trial of ``grid`` (a Tune ``ResultGrid``), sorted by trial id."""
    rows = [_trial_row(result, config, run) for result in grid]
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=RESULT_COLUMNS + list(config.search.space) + _METRICS)
    # a trial restored twice appears once in the grid; keep the guard cheap and explicit
    frame = frame.drop_duplicates("trial_id", keep="last")
    return frame.sort_values("trial_id").reset_index(drop=True)


def write_results(frame: pd.DataFrame, run: RunStorage) -> None:
    """Write ``results.csv`` and ``results.parquet`` into the run folder (atomically)."""
    frame = frame.copy()
    for column in frame.columns:
        # searched values may be lists (optim.betas); Parquet needs one type per column
        if frame[column].map(lambda v: isinstance(v, (list, tuple, dict))).any():
            frame[column] = frame[column].map(lambda v: json.dumps(v) if v is not None else None)
    run.write_text(RUN_LAYOUT.results_csv, frame.to_csv(index=False))
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    run.write_bytes(RUN_LAYOUT.results_parquet, buffer.getvalue())
