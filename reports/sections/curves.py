"""Section 3: ROC curves, calibration (reliability, Brier score, ECE) and per-subject accuracy
of every member and ensemble method on test."""

from __future__ import annotations

from typing import Any

import pandas as pd

from reports import figures as figs
from reports._inputs import MissingInput
from ensemble.calibration import (
    apply_temperature,
    brier_score,
    expected_calibration_error,
    reliability_curve,
)
from reports.render import Note, Text
from reports.sections._common import (
    ReportContext,
    SubsectionTable,
    all_models,
    positive_class,
    predicted_labels,
)
from trainers.metrics import score

__all__ = [
    "KEY",
    "LABEL",
    "SUBSECTIONS",
    "TITLE",
    "calibration",
    "per_subject_accuracy",
    "roc_curves",
]

TITLE = "ROC, calibration and per-subject accuracy"
KEY = "curves"
LABEL = "curves"


def roc_curves(ctx: ReportContext) -> list[Any]:
    """One ROC curve per member and method (binary: the positive class; else micro-averaged)."""
    from sklearn.metrics import roc_curve
    from sklearn.preprocessing import label_binarize

    run = ctx.run
    test = run.predictions("test")
    names = run.class_names
    pos = positive_class(run)
    keep = test.y >= 0
    y = test.y[keep]
    curves = []
    for name, kind, probs in all_models(test):
        p = probs[keep]
        auc = score(y, p, names)["auc"]
        if len(names) == 2:
            fpr, tpr, _ = roc_curve(y == pos, p[:, pos])
        else:
            onehot = label_binarize(y, classes=list(range(len(names))))
            fpr, tpr, _ = roc_curve(onehot.ravel(), p.ravel())
        curves.append((name, kind, fpr, tpr, auc))
    title = (
        f"ROC on test (positive class: {names[pos]})"
        if len(names) == 2
        else "ROC on test (micro-average over classes; AUC: macro one-vs-rest)"
    )
    return [Note(n) for n in test.notes] + [
        ctx.figure(
            figs.roc_figure(curves, title),
            "roc",
            "ROC curves of members (dashed) and ensembles (solid), AUC in the legend",
        )
    ]


def calibration(ctx: ReportContext) -> list[Any]:
    """The reliability diagram, Brier score and ECE of every member and method on test."""
    run = ctx.run
    test = run.predictions("test")
    pos = positive_class(run)
    curves, rows = [], []
    for name, kind, probs in [*all_models(test), *_recalibrated(run, test)]:
        brier = brier_score(test.y, probs, pos)
        ece = expected_calibration_error(test.y, probs, n_bins=10, pos=pos)
        mean_pred, observed = reliability_curve(test.y, probs, pos, n_bins=10)
        curves.append((name, "ensemble" if kind == "recalibrated" else kind, mean_pred,
                       observed, brier, ece))  # fmt: skip
        if kind != "recalibrated":  # the recalibration table below holds its numbers
            rows.append({"model": name, "kind": kind, "brier": brier, "ece": ece})
    binary = len(run.class_names) == 2
    xlabel = f"mean predicted P({run.class_names[pos]})" if binary else "mean top-class confidence"
    text = (
        "Brier score: scikit-learn's `brier_score_loss` "
        + ("on the positive class. " if binary else "summed over classes. ")
        + "ECE (expected calibration error, written here): cells go into 10 equal-width "
        + (
            "bins of the positive class's probability (the diagram's quantity) and ECE = sum "
            "over bins of (share of cells) x |observed frequency - mean probability|. "
            if binary
            else "bins of their top-class confidence and ECE = sum over bins of (share of "
            "cells) x |accuracy - mean confidence|. "
        )
        + "Lower is better for both. Ensemble methods tuned with a decision threshold are "
        "still judged on their probabilities here."
    )
    return [
        Text(text),
        ctx.figure(
            figs.calibration_figure(curves, xlabel),
            "calibration",
            "Reliability diagram on test (points: non-empty bins)",
        ),
        ctx.table(pd.DataFrame(rows), "calibration", "Brier score and ECE on test"),
        *_recalibration(ctx),
    ]


def _recalibrated(run: Any, test: Any) -> list[tuple[str, str, Any]]:
    """The chosen method after its temperature scaling, when one was fitted."""
    try:
        chosen = run.chosen
    except MissingInput:
        return []
    t, name = chosen.get("temperature"), chosen.get("method")
    if t is None or name not in test.methods:
        return []
    return [(f"{name} after T = {t:.2f}", "recalibrated", apply_temperature(test.methods[name], t))]


def _recalibration(ctx: ReportContext) -> list[Any]:
    """The chosen method's test ECE and Brier before and after its temperature scaling."""
    try:
        table = ctx.run.recalibration
    except MissingInput as exc:
        return [Note(f"no temperature scaling to show: {exc}")]
    shown = pd.DataFrame(
        {
            "stage": table["stage"],
            "temperature": table["temperature"].map("{:.3f}".format),
            "ECE": [f"{v:.3f} [{lo:.3f}, {hi:.3f}]"
                    for v, lo, hi in zip(table["ece"], table["ece_low"], table["ece_high"])],
            "Brier": [f"{v:.3f} [{lo:.3f}, {hi:.3f}]"
                      for v, lo, hi in zip(table["brier"], table["brier_low"], table["brier_high"])],
        }
    )  # fmt: skip
    return [
        Text(f"Temperature scaling of the chosen method, {table['how'].iloc[0]}."),
        ctx.table(
            shown, "recalibration", "The chosen method before and after temperature scaling (test)"
        ),
    ]


def per_subject_accuracy(ctx: ReportContext) -> list[Any]:
    """Each test subject's share of cells classified correctly, per member and method."""
    run = ctx.run
    test = run.predictions("test")
    ids = pd.Series(test.subject_ids, dtype=object)
    if ids.isna().all():
        raise MissingInput(
            "the test predictions carry no subject ids (the dataset layout "
            "has none), so there is no per-subject accuracy"
        )
    pos = positive_class(run)
    names = run.class_names
    frame = pd.DataFrame({"subject": ids.fillna("(none)").astype(str), "label": test.y})
    frame = frame[frame["label"] >= 0]
    table = frame.groupby("subject").agg(
        true_class=("label", lambda s: names[int(s.mode().iloc[0])]), cells=("label", "size")
    )
    for name, kind, probs in all_models(test):
        threshold = test.thresholds.get(name) if kind == "ensemble" else None
        right = predicted_labels(probs, threshold, pos) == test.y
        table[name] = (
            pd.Series(right[test.y >= 0], index=frame.index).groupby(frame["subject"]).mean()
        )
    table = table.reset_index().sort_values(["true_class", "subject"])
    text = (
        "Share of each test subject's cells classified correctly (the challenge asked "
        "for per-subject accuracy); one column per member and ensemble method."
    )
    return [
        Text(text),
        ctx.table(table, "per_subject_accuracy", "Per-subject accuracy on test", table),
    ]


SUBSECTIONS: SubsectionTable = (
    ("ROC curves", roc_curves),
    ("Calibration", calibration),
    ("Per-subject accuracy", per_subject_accuracy),
)
