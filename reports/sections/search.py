"""Section 1, the search summary: the trials, the best trial per backbone, the searched
hyperparameters, the learning curves with the learning rate, and early stopping."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from reports import figures as figs
from reports._inputs import MissingInput, RunInputs
from reports.render import Note, Text
from reports.sections._common import ReportContext, SubsectionTable
from trainers.run_layout import RUN_LAYOUT

__all__ = [
    "CURVES_PER_FIGURE",
    "KEY",
    "LABEL",
    "SUBSECTIONS",
    "TITLE",
    "best_per_backbone",
    "early_stopping",
    "hyperparameters",
    "learning_curves",
    "trials_table",
]

TITLE = "Search summary"
KEY = "search"
LABEL = "search summary"

#: Trials per learning-curve figure (more go into further figures).
CURVES_PER_FIGURE = 16


def _space(run: RunInputs) -> dict[str, dict[str, Any]]:
    space = run.config_or_empty().get("search", {}).get("space") or {}
    return {k: v for k, v in space.items() if isinstance(v, dict)}


def _trials(run: RunInputs) -> pd.DataFrame:
    frame = run.results.copy()
    if "trial_id" not in frame:
        raise MissingInput(f"{run.run_dir / RUN_LAYOUT.results_csv} has no trial_id column")
    frame["trial_id"] = frame["trial_id"].astype(str)
    frame.insert(1, "backbone", [run.backbone_of(t) for t in frame["trial_id"]])
    return frame


def _max_epochs(run: RunInputs, trials: pd.DataFrame) -> pd.Series:
    base = run.config_or_empty().get("train", {}).get("epochs")
    if "train.epochs" in trials:
        return pd.to_numeric(trials["train.epochs"], errors="coerce").fillna(base or np.nan)
    return pd.Series([base] * len(trials), index=trials.index, dtype=float)


def trials_table(ctx: ReportContext) -> list[Any]:
    """Every trial with its searched values and best-epoch validation metrics."""
    trials = _trials(ctx.run)
    shown = [k for k in _space(ctx.run) if k in trials and k != "model.backbone"]
    metrics = [c for c in ("val_wfs", "val_auc", "val_ba", "val_kappa", "val_loss") if c in trials]
    cols = (
        [
            c
            for c in ("trial_id", "backbone", "status", "stopped_early", "epochs_run", "best_epoch")
            if c in trials
        ]
        + shown
        + metrics
    )
    cols += [c for c in ("time_total_s",) if c in trials]
    order = trials.sort_values("val_wfs", ascending=False) if "val_wfs" in trials else trials
    errored = int((trials.get("status") == "ERROR").sum()) if "status" in trials else 0
    text = (
        f"{len(trials)} trial(s), {errored} errored. Metrics are each trial's best epoch "
        "on validation (sorted by validation WFS)."
    )
    return [Text(text), ctx.table(order[cols], "trials", "All trials of the search", order)]


def best_per_backbone(ctx: ReportContext) -> list[Any]:
    """The trial of each backbone with the highest validation WFS."""
    trials = _trials(ctx.run)
    if "val_wfs" not in trials:
        raise MissingInput("results table has no val_wfs column")
    ok = trials.dropna(subset=["val_wfs"])
    best = ok.loc[ok.groupby("backbone")["val_wfs"].idxmax()].sort_values(
        "val_wfs", ascending=False
    )
    cols = [
        c
        for c in (
            "backbone",
            "trial_id",
            "val_wfs",
            "val_auc",
            "val_ba",
            "val_kappa",
            "best_epoch",
            "epochs_run",
        )
        if c in best
    ]
    return [
        ctx.table(best[cols], "best_per_backbone", "Best trial per backbone (by validation WFS)")
    ]


def hyperparameters(ctx: ReportContext) -> list[Any]:
    """Each searched hyperparameter against the trials' validation WFS."""
    trials = _trials(ctx.run)
    space = _space(ctx.run)
    present = [k for k in space if k in trials]
    if not present:
        raise MissingInput("the config searched no hyperparameter (search.space is empty)")
    if "val_wfs" not in trials:
        raise MissingInput("results table has no val_wfs column")
    logs = [k for k, v in space.items() if v.get("type") == "loguniform"]
    fig = figs.hyperparameter_figure(trials, present, "val_wfs", logs)
    return [
        ctx.figure(
            fig,
            "hyperparameters",
            "Each searched hyperparameter against the trial's best validation WFS",
        )
    ]


def learning_curves(ctx: ReportContext) -> list[Any]:
    """Loss and metric curves per trial with the learning rate, ``CURVES_PER_FIGURE`` a figure."""
    run = ctx.run
    histories = run.histories
    steps = run.lr_steps
    labels = {t: f"{t} ({run.backbone_of(t)})" for t in histories}
    try:
        max_epochs = int(run.config_or_empty()["train"]["epochs"])
    except (KeyError, TypeError, ValueError):
        max_epochs = None
    blocks: list[Any] = [_learning_rate_text(bool(steps))]
    names = list(histories)
    for i in range(0, len(names), CURVES_PER_FIGURE):
        chunk = names[i : i + CURVES_PER_FIGURE]
        fig = figs.learning_curves_figure(
            {t: histories[t] for t in chunk}, steps, max_epochs, labels
        )
        n = i // CURVES_PER_FIGURE + 1
        blocks.append(
            ctx.figure(
                fig, f"learning_curves_{n}", f"Learning curves, trials {i + 1}-{i + len(chunk)}"
            )
        )
    return blocks


def _learning_rate_text(per_step: bool) -> Text | Note:
    if per_step:
        return Text(
            "Bottom panels: the learning rate at every optimizer step (TensorBoard `lr/step`), "
            "so a cyclic schedule's saw-tooth is visible (triangular2: the peak halves every "
            "cycle); the dotted line marks the maximum epochs."
        )
    return Note(
        "the trials logged no per-step learning rate (TensorBoard `lr/step`); the bottom "
        "panels show the per-epoch value, too coarse to show a cyclic schedule's "
        "saw-tooth. Enable `search.tensorboard` and report `lr_trace` from the trainer."
    )


def early_stopping(ctx: ReportContext) -> list[Any]:
    """How many trials the scheduler stopped early, and the epochs each trial ran."""
    run = ctx.run
    trials = _trials(run)
    if "epochs_run" not in trials:
        raise MissingInput("results table has no epochs_run column")
    maxima = _max_epochs(run, trials)
    runs = pd.to_numeric(trials["epochs_run"], errors="coerce").fillna(0)
    stopped = trials["stopped_early"].astype(bool) if "stopped_early" in trials else runs < maxima
    best = pd.to_numeric(
        trials.get("best_epoch", pd.Series(np.nan, index=trials.index)), errors="coerce"
    )
    scheduler = run.config_or_empty().get("search", {}).get("scheduler", {}).get("name", "?")
    max_e = int(maxima.max()) if maxima.notna().any() else None
    share = (runs[stopped] / maxima[stopped]).mean() if stopped.any() else float("nan")
    text = (
        f"Scheduler: `{scheduler}`. {int(stopped.sum())} of {len(trials)} trial(s) were "
        f"stopped before their last epoch"
    )
    text += f"; they ran {100 * share:.0f}% of their epochs on average." if stopped.any() else "."
    fig = figs.early_stopping_figure(
        list(trials["trial_id"]), list(runs), list(best), list(stopped), max_e
    )
    return [
        Text(text),
        ctx.figure(
            fig, "early_stopping", "Epochs run per trial against the maximum; star: best epoch"
        ),
    ]


SUBSECTIONS: SubsectionTable = (
    ("Trials", trials_table),
    ("Best trial per backbone", best_per_backbone),
    ("Hyperparameters against validation WFS", hyperparameters),
    ("Learning curves and learning rate", learning_curves),
    ("Early stopping", early_stopping),
)
