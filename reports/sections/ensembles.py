"""Section 2, members and ensembles: the study's Tables 4 (test) and 5 (validation) extended
with every ensemble method, the confusion matrices and the paired comparisons."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ensemble.inference import family_text
from ensemble.stats import bootstrap_metrics
from reports import figures as figs
from reports._inputs import REPORT_METRICS, MethodPredictions, MissingInput, RunInputs
from reports.render import Note, Text
from reports.sections._common import (
    HEADERS,
    ReportContext,
    SubsectionTable,
    metric_table,
    positive_class,
)
from reports.tables import write_table

__all__ = [
    "KEY",
    "LABEL",
    "SUBSECTIONS",
    "TITLE",
    "confusion_matrices",
    "diversity",
    "intro",
    "paired_comparisons",
    "table4_test",
    "table5_validation",
]

TITLE = "Members and ensembles (the study's Tables 4 and 5, extended)"
KEY = "ensembles"
LABEL = "tables"


def _member_rows(run: RunInputs, preds: MethodPredictions) -> list[dict[str, Any]]:
    """Members' metrics with subject-bootstrap intervals (ensemble.stats, the same resampling
    the ensemble stage uses for the methods)."""
    settings = run.ensemble_settings
    rows = []
    for name, probs in preds.members.items():
        boot = bootstrap_metrics(
            preds.y,
            probs,
            preds.subject_ids,
            run.class_names,
            n_boot=settings.bootstrap,
            seed=settings.seed,
        )
        ci = boot.interval()
        row: dict[str, Any] = {"model": name, "kind": "member", "chosen": False}
        for key in REPORT_METRICS:
            row[key] = boot.point[key]
            row[f"{key}_low"], row[f"{key}_high"] = ci[key]
        rows.append(row)
    return rows


def _method_rows(run: RunInputs, split: str) -> list[dict[str, Any]]:
    comparison = run.comparison
    part = comparison[comparison["split"] == split]
    rows = []
    for _, r in part.iterrows():
        row: dict[str, Any] = {
            "model": str(r["method"]),
            "kind": "ensemble",
            "chosen": bool(r.get("chosen", False)),
        }
        for key in REPORT_METRICS:
            row[key] = r.get(key)
            row[f"{key}_low"], row[f"{key}_high"] = r.get(f"{key}_low"), r.get(f"{key}_high")
        rows.append(row)
    return rows


def _crop_text(run: RunInputs) -> str:
    data = run.config_or_empty().get("data", {})
    crop = data.get("crop") or {}
    size = data.get("input_size", "?")
    if crop.get("size"):
        what = f"a centre crop of {crop['size']} px"
    elif crop.get("fraction"):
        what = f"a centre crop of {float(crop['fraction']):.3g} of the shorter side"
    else:
        what = "no crop"
    return f"{what}, resized to {size} px"


def intro(ctx: ReportContext) -> list[Any]:
    """The chosen method, how the intervals are made, and which split is which table."""
    run = ctx.run
    n_boot = run.ensemble_settings.bootstrap
    blocks: list[Any] = []
    try:
        chosen = run.chosen
        blocks.append(
            Text(
                f"Chosen method: **{chosen.get('method')}** ({chosen.get('why', '')}). Members "
                "are the configurations the ensemble stage combined; intervals are 95% "
                f"subject-bootstrap percentiles ({n_boot} resamples, stratified by class), "
                "`*` marks the chosen method."
            )
        )
    except MissingInput as exc:
        blocks.append(Note(f"ensemble methods are not shown: {exc}"))
    blocks.append(
        Text(
            f"The study's Table 4 reports centre-cropped 300x300 inputs and its Table 5 the "
            f"original 450x450; this run used {_crop_text(run)} -- compare runs with both crops "
            "(`data.crop`) to reproduce that contrast. Here Table 4 is the test split and "
            "Table 5 the validation split."
        )
    )
    return blocks


def partition(ctx: ReportContext) -> list[Any]:
    """Subjects and cells per split and class, and how the split was made."""
    run = ctx.run
    rows = []
    for split in ("val", "test"):
        try:
            preds = run.predictions(split)
        except MissingInput:
            continue
        subjects = pd.Series(preds.subject_ids, dtype=object)
        for k, name in enumerate(run.class_names):
            mask = preds.y == k
            rows.append({"split": split, "class": name, "subjects": subjects[mask].nunique(),
                         "cells": int(mask.sum())})  # fmt: skip
    if not rows:
        raise MissingInput("the members have no validation or test predictions")
    split_cfg = (run.config_or_empty().get("data") or {}).get("split") or {}
    folds = (run.config_or_empty().get("search") or {}).get("folds")
    how = f"`data.split.method: {split_cfg.get('method', '?')}`" + (
        f", validation = the out-of-fold union of folds {folds}" if folds else ""
    )
    text = (
        f"The partition the numbers below rest on ({how}): no subject is on both sides of a "
        "split (the data layer refuses such a split). Validation holds the members' "
        "out-of-fold predictions; the training cells are not in the prediction files."
    )
    return [Text(text), ctx.table(pd.DataFrame(rows), "partition", "Subjects and cells per split")]


def selection_flow(ctx: ReportContext) -> list[Any]:
    """What was chosen on which data, and how many configurations validation judged."""
    run = ctx.run
    cfg = run.config_or_empty()
    select = (cfg.get("train") or {}).get("select_metric", "wfs")
    trials = run.results
    epochs = int(pd.to_numeric(trials.get("epochs_run"), errors="coerce").fillna(0).sum()) \
        if "epochs_run" in trials else 0  # fmt: skip
    settings = run.ensemble_settings
    methods = len(run.weights.get("methods", {}))
    steps = [
        f"each trial's best epoch: on its validation fold, by `{select}` ({len(trials)} trials, "
        f"{epochs} epochs considered); not nested (it happened in training)",
        f"which trials ran on: the search's scheduler, on validation "
        f"(`{(cfg.get('search') or {}).get('scheduler', {}).get('name', '?')}`)",
        f"the members combined: `{settings.candidates}` by validation WFS, chosen again inside "
        "every cross-fitting fold",
        "each method's weights, threshold and (for the chosen method) temperature and operating "
        "point: on validation",
        f"the method exported: by held-out (cross-fitted) validation `{settings.select_by}` "
        f"among {methods} methods",
        "every number on test: computed once, after all of the above; test chose nothing",
    ]
    text = "Selection flow, in order: " + "; ".join(f"({i}) {s}" for i, s in enumerate(steps, 1))
    return [Text(text + f". Configurations judged on validation: {len(trials)} x epochs, then "
                 f"{methods} ensemble methods.")]  # fmt: skip


def table4_test(ctx: ReportContext) -> list[Any]:
    """Table 4 (extended): every member and ensemble method on test, with intervals."""
    run = ctx.run
    test = run.predictions("test")
    rows = _member_rows(run, test)
    blocks: list[Any] = [Note(n) for n in test.notes]
    try:
        rows += _method_rows(run, "test")
    except MissingInput as exc:
        blocks.append(Note(f"ensemble rows are missing: {exc}"))
    blocks.append(
        metric_table(
            ctx,
            rows,
            "table4_test",
            f"Table 4 (extended): members and ensembles on test "
            f"({len(test.y)} cells, {len(set(test.subject_ids))} subjects)",
        )
    )
    return blocks


def table5_validation(ctx: ReportContext) -> list[Any]:
    """Table 5 (extended): the members and the cross-fitted ensemble methods on validation."""
    run = ctx.run
    val = run.predictions("val")
    rows = _member_rows(run, val)
    blocks: list[Any] = []
    try:
        rows += _method_rows(run, "val_crossfit")
        blocks.append(
            Text(
                "Ensemble rows are cross-fitted: each validation fold is predicted by the "
                "method fitted on the other folds (held out), so they are comparable with the "
                "members' out-of-fold validation predictions."
            )
        )
    except MissingInput as exc:
        blocks.append(Note(f"ensemble rows are missing: {exc}"))
    blocks.append(
        metric_table(
            ctx,
            rows,
            "table5_validation",
            f"Table 5 (extended): members and ensembles on validation ({len(val.y)} cells)",
        )
    )
    return blocks


def _confusion_matrix(y: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    keep = y >= 0
    return np.bincount(y[keep] * k + pred[keep], minlength=k * k).reshape(k, k)


def _method_matrices(run: RunInputs) -> dict[str, np.ndarray]:
    """The ensemble stage's confusion matrices on test (``confusion.csv``), per method."""
    names = run.class_names
    k = len(names)
    matrices = {}
    for method, part in run.confusion.groupby("method", sort=False):
        cm = np.zeros((k, k), dtype=np.int64)
        for _, r in part.iterrows():
            cm[names.index(str(r["true"])), names.index(str(r["predicted"]))] = int(r["count"])
        matrices[str(method)] = cm
    return matrices


def _confusion_frames(
    matrices: dict[str, np.ndarray], kinds: dict[str, str], names: list[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one shown row per model, one long CSV row per model and cell) of the matrices."""
    k = len(names)
    rows, display = [], []
    for model, cm in matrices.items():
        shares = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        cells = {"model": model, "kind": kinds[model]}
        for i in range(k):
            for j in range(k):
                rows.append(
                    {
                        "model": model,
                        "kind": kinds[model],
                        "true": names[i],
                        "predicted": names[j],
                        "count": int(cm[i, j]),
                        "percent_of_true": 100 * shares[i, j],
                    }
                )
                cells[f"{names[i]} -> {names[j]}"] = f"{int(cm[i, j])} ({100 * shares[i, j]:.1f}%)"
        display.append(cells)
    return pd.DataFrame(display), pd.DataFrame(rows)


def confusion_matrices(ctx: ReportContext) -> list[Any]:
    """Every member's and method's confusion matrix on test, as a table and a figure."""
    run = ctx.run
    test = run.predictions("test")
    names = run.class_names
    pos = positive_class(run)
    matrices: dict[str, np.ndarray] = {}
    kinds: dict[str, str] = {}
    for name, probs in test.members.items():
        matrices[name] = _confusion_matrix(test.y, probs.argmax(axis=1), len(names))
        kinds[name] = "member"
    notes = []
    try:
        for method, cm in _method_matrices(run).items():
            matrices[method], kinds[method] = cm, "ensemble"
    except MissingInput as exc:
        notes.append(Note(f"ensemble confusion matrices are missing: {exc}"))
    shown, long = _confusion_frames(matrices, kinds, names)
    fig = figs.confusion_figure(matrices, names)
    table = write_table(
        shown, "confusion", ctx.tables, "Confusion on test: count (share of the true class)", long
    )
    return notes + [
        table,
        ctx.figure(fig, "confusion", f"Confusion matrices on test (positive class: {names[pos]})"),
    ]


def paired_comparisons(ctx: ReportContext) -> list[Any]:
    """Each method against each baseline on test: differences, intervals and p-values."""
    comp = ctx.run.comparisons
    if comp.empty:
        raise MissingInput("comparisons.csv is empty (no test predictions)")
    metrics = [m for m in ("wfs", "ba", "auc", "acc", "kappa") if m in set(comp["metric"])]
    display = []
    for (base, method), part in comp.groupby(["baseline", "method"], sort=False):
        cells: dict[str, Any] = {"baseline": base, "method": method}
        for m in metrics:
            r = part[part["metric"] == m]
            if r.empty:
                continue
            r = r.iloc[0]
            p = r.get("p_adjusted", r.get("p_value", r.get("p_bootstrap")))
            cells[f"d{HEADERS[m]}"] = (
                f"{r['diff']:+.3f} [{r['diff_low']:+.3f}, {r['diff_high']:+.3f}] p={p:.3g}"
            )
        display.append(cells)
    family = family_text(comp) if "family" in comp else "not adjusted (comparisons.csv predates it)"
    text = (
        "Differences method - baseline on test with 95% paired subject-bootstrap intervals. "
        "p-values treat the subject as the unit: AUC by Obuchowski's clustered comparison, "
        "ACC by Durkalski's clustered McNemar test, WFS, BA and kappa by a paired permutation "
        f"over subjects; {family}. The cell-level DeLong and "
        "McNemar tests (cells treated as independent, too small p-values on clustered cells) "
        "are in RUN/ensemble/tests.csv with every other test."
    )
    return [
        Text(text),
        write_table(
            pd.DataFrame(display),
            "paired_comparisons",
            ctx.tables,
            "Paired comparisons against the baselines",
            comp,
        ),
    ]


def operating_points(ctx: ReportContext) -> list[Any]:
    """The chosen method's decision thresholds (chosen on validation) and their test rates."""
    table = ctx.run.operating_points
    display = pd.DataFrame(
        {
            "rule": table["rule"] + np.where(table["chosen"], " *", ""),
            "threshold": table["threshold"].map("{:.3f}".format),
            **{
                rate.upper() if len(rate) == 3 else rate: [
                    f"{v:.3f} [{lo:.3f}, {hi:.3f}]"
                    for v, lo, hi in zip(table[rate], table[f"{rate}_low"], table[f"{rate}_high"])
                ]
                for rate in ("sensitivity", "specificity", "ppv", "npv")
            },
        }
    )
    method = table["method"].iloc[0]
    text = (
        f"Decision thresholds of the chosen method ({method}), each chosen on its held-out "
        "(cross-fitted) validation probabilities, and their rates on test with "
        f"{table['intervals'].iloc[0]}. * marks the rule the export and `wen predict` apply. "
        + "; ".join(f"{r}: {h}" for r, h in zip(table["rule"], table["how"]))
        + "."
    )
    return [
        Text(text),
        write_table(display, "operating_points", ctx.tables, "Operating points on test", table),
    ]


def _pair_matrices(pairs: pd.DataFrame) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The candidates (first-seen order: diversity.csv's) and the symmetric disagreement and
    error-correlation matrices of ``diversity.csv``'s pair rows."""
    names = list(dict.fromkeys([*pairs["a"].astype(str), *pairs["b"].astype(str)]))
    index = {n: i for i, n in enumerate(names)}
    ia = pairs["a"].astype(str).map(index).to_numpy()
    ib = pairs["b"].astype(str).map(index).to_numpy()
    out = []
    for column in ("disagreement", "error_correlation"):
        matrix = np.full((len(names), len(names)), np.nan)
        values = pd.to_numeric(pairs[column], errors="coerce").to_numpy()
        matrix[ia, ib] = matrix[ib, ia] = values
        out.append(matrix)
    np.fill_diagonal(out[0], 0.0)
    # a candidate whose every correlation is undefined has constant errors: its own too
    defined = np.isfinite(out[1]).any(axis=1)
    out[1][np.diag_indices(len(names))] = np.where(defined, 1.0, np.nan)
    return names, out[0], out[1]


def _short_labels(run: RunInputs, names: list[str]) -> list[str]:
    """The members' short display names (``RunInputs.member_label``), else their names."""
    try:
        by_name = {m.name: run.member_label(m) for m in run.ensemble_members}
    except MissingInput:
        by_name = {}
    return [by_name.get(n, n) for n in names]


def _diversity_blocks(ctx: ReportContext) -> list[Any]:
    table = ctx.run.diversity
    pairs = table[table["a"].notna() & (table["a"].astype(str) != "")]
    if pairs.empty:
        note = table["note"].dropna().astype(str)
        why = note.iloc[0] if len(note) else "no rows"
        raise MissingInput(f"the candidates' diversity is not shown: diversity.csv: {why}")
    names, disagreement, correlation = _pair_matrices(pairs)
    split, n = str(pairs["split"].iloc[0]), int(pairs["n"].iloc[0])
    text = (
        f"Pairwise diversity of the {len(names)} candidates the ensemble methods combined, on "
        f"the {n} labelled {split} cells, which no method was fitted on (RUN/ensemble/"
        "diversity.csv): disagreement is the share of cells on which two candidates' argmax "
        "decisions differ, error correlation the Pearson correlation of their 0/1 error "
        "indicators (Kuncheva & Whitaker's rho; grey where undefined: a candidate wrong on "
        "every cell or on none). Cells of one subject are not independent: these are "
        "cell-level descriptions, without intervals."
    )
    fig = figs.diversity_figure(_short_labels(ctx.run, names), disagreement, correlation, split)
    return [Text(text), ctx.figure(fig, "diversity", f"Candidates' pairwise diversity on {split}")]


def _ambiguity_blocks(ctx: ReportContext) -> list[Any]:
    table = ctx.run.ambiguity
    shown = pd.DataFrame(
        {
            "method": table["method"].astype(str),
            "ensemble Brier": table["ensemble_brier"],
            "member Brier (weighted mean)": table["member_brier"],
            "ambiguity": table["ambiguity"],
            "cells": table["n"],
            "note": table["note"].fillna(""),
        }
    )
    split = str(table["split"].iloc[0]) if len(table) else "test"
    text = (
        f"Krogh & Vedelsby's ambiguity decomposition on {split} (RUN/ensemble/ambiguity.csv): "
        "each weighted-average method's final weights, fitted on all the validation "
        f"predictions, applied to the candidates' {split} probabilities, so that ensemble "
        "Brier = weighted mean member Brier - ambiguity (the members' weighted spread around "
        "the ensemble) holds exactly. The Brier score is summed over classes (for two classes "
        "twice the positive-class Brier of the calibration table); a method that is not a "
        "weighted average (the stacker) has no decomposition."
    )
    caption = f"Ambiguity decomposition of the Brier score on {split}"
    return [Text(text), ctx.table(shown, "ambiguity", caption, table)]


def diversity(ctx: ReportContext) -> list[Any]:
    """The candidates' pairwise diversity (heat maps) and each method's ambiguity
    decomposition (table), both on test; a missing file becomes a note in its place."""
    blocks: list[Any] = []
    for part in (_diversity_blocks, _ambiguity_blocks):
        try:
            blocks += part(ctx)
        except MissingInput as exc:
            blocks.append(Note(str(exc)))
    return blocks


SUBSECTIONS: SubsectionTable = (
    (None, intro),
    ("Partition", partition),
    ("Selection flow", selection_flow),
    ("Table 4 (extended): test", table4_test),
    ("Table 5 (extended): validation", table5_validation),
    ("Confusion matrices", confusion_matrices),
    ("Paired comparisons", paired_comparisons),
    ("Diversity and the ambiguity decomposition", diversity),
    ("Operating points", operating_points),
)
