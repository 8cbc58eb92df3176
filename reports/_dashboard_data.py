"""What ``wen dashboard`` shows, computed from a run folder and nothing else.

Every function takes a :class:`RunSource` (a local folder or ``search.storage.RunStorage`` on
``s3://``/``gs://``: anything that reads a run's files by their ``RUN_LAYOUT`` names) and
returns plain JSON-able data for the page:

* :func:`trials_view`: one row per trial (status, node, fold, every searched value, best
  epoch and metrics, epochs run, where the scheduler stopped it, the error), each trial's
  learning curves and learning-rate trace, and the rung view. While a search runs the rows
  come from the driver's live records (``search.live``); once ``results.csv`` exists it is
  the authority for status, best epoch and metrics. Runs made before the live records
  existed fall back to ``results.csv`` and the TensorBoard logs (local folders only).
* :func:`ensemble_view`: the comparison table with intervals, the paired tests with their
  adjusted p-values, every method's weights, the candidates' diversity, the chosen method
  and why, the export's manifest summary (once ``wen ensemble``/``wen export`` ran).
"""

from __future__ import annotations

import io
import json
import math
import posixpath
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import yaml

from ensemble.export import MANIFEST_FILE
from trainers.run_layout import RUN_LAYOUT

__all__ = ["LocalRun", "RunSource", "ensemble_view", "run_summary", "trials_view"]

#: The metrics a trial row and its curves show (the search metric is added when missing).
ROW_METRICS = ("val_wfs", "val_auc", "val_acc", "val_kappa", "val_loss", "train_loss")


class RunSource(Protocol):
    """Read access to one run folder by relative POSIX names (``RunStorage`` has these)."""

    def exists(self, rel: str) -> bool: ...

    def read_text(self, rel: str) -> str: ...

    def list(self, rel: str) -> list[str]: ...


class LocalRun:
    """A local run folder as a :class:`RunSource`.

    >>> import tempfile; run = LocalRun(tempfile.mkdtemp())
    >>> run.exists("results.csv"), run.list("live/trials")
    (False, [])
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.uri = str(self.path)

    def exists(self, rel: str) -> bool:
        """Whether ``rel`` exists in the run folder."""
        return (self.path / rel).exists()

    def read_text(self, rel: str) -> str:
        """A file's text."""
        return (self.path / rel).read_text()

    def list(self, rel: str) -> list[str]:
        """Names directly inside ``rel`` (empty when it does not exist)."""
        folder = self.path / rel
        return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def _json(source: RunSource, rel: str) -> Any:
    """A JSON file, or None when absent or half-written (a reader never fails the page)."""
    try:
        return json.loads(source.read_text(rel)) if source.exists(rel) else None
    except (OSError, ValueError):
        return None


def _csv(source: RunSource, rel: str) -> pd.DataFrame | None:
    try:
        return pd.read_csv(io.StringIO(source.read_text(rel))) if source.exists(rel) else None
    except (OSError, ValueError):
        return None


def _clean(value: Any) -> Any:
    """JSON-able: NaN and inf become None, numpy scalars plain numbers."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _config(source: RunSource) -> dict[str, Any]:
    try:
        raw = (
            yaml.safe_load(source.read_text(RUN_LAYOUT.config))
            if source.exists(RUN_LAYOUT.config)
            else None
        )
    except (OSError, yaml.YAMLError):
        raw = None
    return raw if isinstance(raw, dict) else {}


def run_summary(source: RunSource, name: str) -> dict[str, Any]:
    """The run's name, status and search settings (``live/search.json``, else the config)."""
    state = _json(source, RUN_LAYOUT.live_search) or {}
    config = _config(source)
    search = config.get("search", {}) if isinstance(config.get("search"), dict) else {}
    finished = source.exists(RUN_LAYOUT.results_csv)
    return _clean(
        {
            "name": name,
            "status": "finished" if finished else state.get("status", "unknown"),
            "metric": state.get("metric") or search.get("metric", "val_wfs"),
            "mode": state.get("mode") or search.get("mode", "max"),
            "max_epochs": state.get("max_epochs") or config.get("train", {}).get("epochs"),
            "scheduler": state.get("scheduler")
            or (search.get("scheduler") or {}).get("name", "fifo"),
            "rungs": state.get("rungs", []),
            "searched": state.get("searched") or list((search.get("space") or {}).keys()),
            "ray_dashboard": None if finished else state.get("ray_dashboard"),
            "has_ensemble": source.exists(RUN_LAYOUT.comparison),
        }
    )


def _records(source: RunSource) -> dict[str, dict[str, Any]]:
    out = {}
    for name in source.list(RUN_LAYOUT.live_trials):
        if name.endswith(".json") and not name.startswith("."):
            record = _json(source, posixpath.join(RUN_LAYOUT.live_trials, name))
            if isinstance(record, dict) and "trial_id" in record:
                out[str(record["trial_id"])] = record
    return out


def _curve(epochs: list[dict[str, Any]], metrics: list[str]) -> dict[str, Any]:
    """A trial's per-epoch series and its learning-rate trace (x in fractional epochs)."""
    curve: dict[str, Any] = {"epoch": [e.get("epoch") for e in epochs]}
    for m in metrics:
        curve[m] = [e.get(m) for e in epochs]
    lr_x, lr_y = [], []
    for e in epochs:
        points = e.get("lr_points") or ([e["lr"]] if e.get("lr") is not None else [])
        for i, value in enumerate(points):
            # the points span the epoch that ends at e["epoch"]
            lr_x.append(e["epoch"] - 1 + (i + 1) / len(points))
            lr_y.append(value)
    curve["lr"] = {"x": lr_x, "y": lr_y}
    return curve


def _row_from_record(record: dict[str, Any], metric: str, mode: str) -> dict[str, Any]:
    epochs = record.get("epochs", [])
    scored = [e for e in epochs if e.get(metric) is not None]
    pick = max if mode == "max" else min
    best = pick(scored, key=lambda e: e[metric]) if scored else {}
    return {
        "trial_id": record["trial_id"],
        "status": record.get("status", "PENDING"),
        "node": record.get("node_ip"),
        "fold": record.get("fold"),
        "params": record.get("params", {}),
        "best_epoch": best.get("epoch"),
        "metrics": {m: best.get(m) for m in ROW_METRICS if m in best},
        "epochs_run": max((int(e["epoch"]) for e in epochs), default=0),
        "stopped_at": record.get("stopped_at"),
        "error": record.get("error"),
    }


def _row_from_results(row: pd.Series, searched: list[str]) -> dict[str, Any]:
    epochs_run = int(row.get("epochs_run", 0) or 0)
    stopped = bool(row.get("stopped_early", False)) and row.get("status") != "ERROR"
    return {
        "trial_id": str(row["trial_id"]),
        "status": row.get("status"),
        "node": row.get("node_ip"),
        "fold": row.get("fold"),
        "params": {k: row.get(k) for k in searched if k in row.index},
        "best_epoch": row.get("best_epoch"),
        "metrics": {m: row.get(m) for m in ROW_METRICS if m in row.index},
        "epochs_run": epochs_run,
        "stopped_at": epochs_run if stopped else None,
        "error": row.get("error") if isinstance(row.get("error"), str) else None,
    }


def _tensorboard_curves(
    source: RunSource, trial_ids: list[str], metrics: list[str]
) -> dict[str, Any]:
    """Curves of a run without live records, from its TensorBoard logs (local runs only)."""
    path = getattr(source, "path", None)
    if path is None or not getattr(source, "local", True) or not Path(path).is_dir():
        return {}  # TensorBoard's reader needs a local folder
    from reports._inputs import MissingInput, RunInputs

    inputs = RunInputs(path, say=lambda _m: None)
    try:
        histories = inputs.histories
    except MissingInput:
        return {}
    curves = {}
    for tid in trial_ids:
        frame = histories.get(tid)
        if frame is None:
            continue
        epochs = [{k: _clean(v) for k, v in rec.items()} for rec in frame.to_dict(orient="records")]
        curve = _curve(epochs, metrics)
        steps = inputs.lr_steps.get(tid)
        if steps is not None and len(steps) and frame["epoch"].max() > 0:
            per_epoch = len(steps) / float(frame["epoch"].max())
            curve["lr"] = {
                "x": (steps["step"] / per_epoch).tolist(),
                "y": steps["lr"].tolist(),
            }
        curves[tid] = curve
    return curves


def _rung_view(rows: list[dict[str, Any]], rungs: list[float]) -> list[dict[str, Any]]:
    """Per rung: how many trials reached it, went on past it, and were stopped at it."""
    if not rungs:  # an old run: the epochs at which trials were stopped are its rungs
        rungs = sorted({float(r["stopped_at"]) for r in rows if r.get("stopped_at")})
    view = []
    for r in rungs:
        reached = [x for x in rows if x["epochs_run"] >= r]
        view.append(
            {
                "epoch": r,
                "reached": len(reached),
                "went_on": sum(1 for x in reached if x["epochs_run"] > r),
                "stopped": sum(1 for x in rows if x.get("stopped_at") == r),
                "running": sum(1 for x in reached if x["status"] == "RUNNING"),
            }
        )
    return view


def trials_view(source: RunSource, name: str = "run") -> dict[str, Any]:
    """The Trials tab: rows, curves and rungs (see the module doc)."""
    summary = run_summary(source, name)
    metric, mode = summary["metric"], summary["mode"]
    metrics = list(dict.fromkeys([metric, *ROW_METRICS]))
    records = _records(source)
    rows = {tid: _row_from_record(rec, metric, mode) for tid, rec in records.items()}
    results = _csv(source, RUN_LAYOUT.results_csv)
    if results is not None and "trial_id" in results:
        for _, row in results.iterrows():
            final = _row_from_results(row, summary["searched"])
            live = rows.get(final["trial_id"], {})
            # the final table wins; what it lacks (a node, the fold) the live record gives
            rows[final["trial_id"]] = {
                k: final.get(k) if final.get(k) is not None else live.get(k)
                for k in {**live, **final}
            }
    curves = {tid: _curve(rec.get("epochs", []), metrics) for tid, rec in records.items()}
    missing = [tid for tid in rows if tid not in curves]
    if missing:
        curves.update(_tensorboard_curves(source, missing, metrics))
    ordered = [rows[t] for t in sorted(rows)]
    return _clean(
        {
            "summary": summary,
            "rows": ordered,
            "curves": curves,
            "rungs": _rung_view(ordered, summary["rungs"]),
            "metrics": metrics,
        }
    )


def _frame_records(frame: pd.DataFrame | None, keep: Callable[[str], bool]) -> list[dict]:
    if frame is None:
        return []
    return frame[[c for c in frame.columns if keep(c)]].to_dict(orient="records")


def ensemble_view(source: RunSource) -> dict[str, Any] | None:
    """The Ensemble tab, or None before ``wen ensemble`` has run."""
    comparison = _csv(source, RUN_LAYOUT.comparison)
    if comparison is None:
        return None
    tests = _csv(source, RUN_LAYOUT.comparisons)
    weights = _json(source, RUN_LAYOUT.ensemble_weights) or {}
    methods = weights.get("methods", {}) if isinstance(weights, dict) else {}
    diversity = _csv(source, RUN_LAYOUT.diversity)
    manifest = _json(source, posixpath.join(RUN_LAYOUT.export, MANIFEST_FILE))
    metric_cols = ("wfs", "auc", "acc", "kappa", "ba", "logloss")
    table = _frame_records(
        comparison,
        lambda c: (
            c in ("method", "split", "chosen", "how")
            or c.removesuffix("_low").removesuffix("_high") in metric_cols
        ),
    )
    headline = []
    if tests is not None:
        headline = _frame_records(
            tests[tests["metric"].isin(["wfs", "auc"])] if "metric" in tests else tests,
            lambda c: (
                c in ("split", "method", "baseline", "metric", "diff", "diff_low", "diff_high")
                or c in ("p_value", "p_adjusted", "test")
            ),
        )
    return _clean(
        {
            "comparison": table,
            "tests": headline,
            "weights": {m: spec.get("weights", {}) for m, spec in methods.items()},
            "weights_meaning": {m: spec.get("weights_meaning", "") for m, spec in methods.items()},
            "diversity": _frame_records(diversity, lambda c: True),
            "chosen": _json(source, RUN_LAYOUT.chosen) or {},
            "manifest": _manifest_summary(manifest),
        }
    )


def _manifest_summary(manifest: Any) -> dict[str, Any] | None:
    if not isinstance(manifest, dict):
        return None
    keep = ("method", "class_names", "input_size", "members", "combiner", "created")
    out = {k: manifest[k] for k in keep if k in manifest}
    if isinstance(out.get("members"), list):
        out["members"] = [
            m.get("trial_id", m) if isinstance(m, dict) else m for m in out["members"]
        ]
    if isinstance(out.get("combiner"), dict):
        out["combiner"] = out["combiner"].get("kind")
    return out
