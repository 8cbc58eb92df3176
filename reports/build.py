"""``build_report``: a run folder -> ``RUN/report/`` (Markdown, self-contained HTML, figures,
tables as CSV and LaTeX).

Sections: 1. search summary, 2. members and ensembles (the study's Tables 4 and 5, extended),
3. ROC, calibration and per-subject accuracy, 4. Grad-CAM, 5. reproducibility. A section (or a
part of one) whose inputs are missing says so, naming the file and the command that makes it.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from reports import figures as figs
from reports._inputs import STUDY_METRICS, MethodPredictions, MissingInput, RunInputs, load_run
from reports.render import Figure, Heading, Note, Section, Text, render_html, render_markdown
from reports.tables import Table, format_interval, write_table
from trainers.run_layout import RUN_LAYOUT

__all__ = ["build_report"]

log = logging.getLogger("wen.reports")

#: Trials per learning-curve figure (more go into further figures).
CURVES_PER_FIGURE = 16
_HEADERS = {"wp": "WP", "wr": "WR", "wfs": "WFS", "acc": "ACC", "ba": "BA", "auc": "AUC",
            "kappa": "kappa"}


@dataclass
class _Context:
    run: RunInputs
    out: Path
    figures: Path
    tables: Path
    progress: bool
    say: Callable[[str], None]
    gradcam: bool
    gradcam_images: int
    device: str

    def figure(self, fig: Any, name: str, caption: str) -> Figure:
        return Figure(figs.save_figure(fig, self.figures / f"{name}.png"), caption)

    def table(self, frame: pd.DataFrame, name: str, caption: str,
              csv_frame: pd.DataFrame | None = None) -> Table:
        return write_table(_display(frame), name, self.tables, caption, csv_frame)


def _display(frame: pd.DataFrame) -> pd.DataFrame:
    """Floats to 4 significant digits, missing values blank (the CSV keeps raw numbers)."""
    out = frame.copy()
    for col in out.columns:
        if pd.api.types.is_float_dtype(out[col]):
            out[col] = out[col].map(lambda v: "" if pd.isna(v) else f"{v:.4g}")
        else:
            out[col] = out[col].map(lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v))
    return out


def _guard(section: Section, title: str | None, build: Callable[[], list[Any]]) -> None:
    """Add a sub-section; a MissingInput becomes a note in its place instead of a crash."""
    if title:
        section.add(Heading(title))
    try:
        section.add(*build())
    except MissingInput as exc:
        section.add(Note(str(exc)))


# -------------------------------------------------------------------------- 1. search


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


def _search_section(ctx: _Context) -> Section:
    run = ctx.run
    section = Section("Search summary", "search")
    keys = [k for k in _space(run)]

    def trials_table() -> list[Any]:
        trials = _trials(run)
        shown = [k for k in keys if k in trials and k != "model.backbone"]
        metrics = [c for c in ("val_wfs", "val_auc", "val_ba", "val_kappa", "val_loss") if c in trials]
        cols = [c for c in ("trial_id", "backbone", "status", "stopped_early", "epochs_run",
                            "best_epoch") if c in trials] + shown + metrics
        cols += [c for c in ("time_total_s",) if c in trials]
        order = trials.sort_values("val_wfs", ascending=False) if "val_wfs" in trials else trials
        errored = int((trials.get("status") == "ERROR").sum()) if "status" in trials else 0
        text = (f"{len(trials)} trial(s), {errored} errored. Metrics are each trial's best epoch "
                "on validation (sorted by validation WFS).")
        return [Text(text), ctx.table(order[cols], "trials", "All trials of the search", order)]

    def best_per_backbone() -> list[Any]:
        trials = _trials(run)
        if "val_wfs" not in trials:
            raise MissingInput("results table has no val_wfs column")
        ok = trials.dropna(subset=["val_wfs"])
        best = ok.loc[ok.groupby("backbone")["val_wfs"].idxmax()].sort_values("val_wfs", ascending=False)
        cols = [c for c in ("backbone", "trial_id", "val_wfs", "val_auc", "val_ba", "val_kappa",
                            "best_epoch", "epochs_run") if c in best]
        return [ctx.table(best[cols], "best_per_backbone",
                          "Best trial per backbone (by validation WFS)")]

    def hyperparameters() -> list[Any]:
        trials = _trials(run)
        present = [k for k in keys if k in trials]
        if not present:
            raise MissingInput("the config searched no hyperparameter (search.space is empty)")
        if "val_wfs" not in trials:
            raise MissingInput("results table has no val_wfs column")
        logs = [k for k, v in _space(run).items() if v.get("type") == "loguniform"]
        fig = figs.hyperparameter_figure(trials, present, "val_wfs", logs)
        return [ctx.figure(fig, "hyperparameters",
                           "Each searched hyperparameter against the trial's best validation WFS")]

    def learning_curves() -> list[Any]:
        histories = run.histories
        steps = run.lr_steps
        labels = {t: f"{t} ({run.backbone_of(t)})" for t in histories}
        try:
            max_epochs = int(run.config_or_empty()["train"]["epochs"])
        except (KeyError, TypeError, ValueError):
            max_epochs = None
        blocks: list[Any] = []
        if steps:
            blocks.append(Text(
                "Bottom panels: the learning rate at every optimizer step (TensorBoard `lr/step`), "
                "so a cyclic schedule's saw-tooth is visible (triangular2: the peak halves every "
                "cycle); the dotted line marks the maximum epochs."))
        else:
            blocks.append(Note(
                "the trials logged no per-step learning rate (TensorBoard `lr/step`); the bottom "
                "panels show the per-epoch value, too coarse to show a cyclic schedule's "
                "saw-tooth. Enable `search.tensorboard` and report `lr_trace` from the trainer."))
        names = list(histories)
        for i in range(0, len(names), CURVES_PER_FIGURE):
            chunk = names[i:i + CURVES_PER_FIGURE]
            fig = figs.learning_curves_figure({t: histories[t] for t in chunk}, steps, max_epochs,
                                              labels)
            n = i // CURVES_PER_FIGURE + 1
            blocks.append(ctx.figure(fig, f"learning_curves_{n}",
                                     f"Learning curves, trials {i + 1}-{i + len(chunk)}"))
        return blocks

    def early_stopping() -> list[Any]:
        trials = _trials(run)
        if "epochs_run" not in trials:
            raise MissingInput("results table has no epochs_run column")
        maxima = _max_epochs(run, trials)
        runs = pd.to_numeric(trials["epochs_run"], errors="coerce").fillna(0)
        stopped = trials["stopped_early"].astype(bool) if "stopped_early" in trials else runs < maxima
        best = pd.to_numeric(trials.get("best_epoch", pd.Series(np.nan, index=trials.index)),
                             errors="coerce")
        scheduler = run.config_or_empty().get("search", {}).get("scheduler", {}).get("name", "?")
        max_e = int(maxima.max()) if maxima.notna().any() else None
        share = (runs[stopped] / maxima[stopped]).mean() if stopped.any() else float("nan")
        text = (f"Scheduler: `{scheduler}`. {int(stopped.sum())} of {len(trials)} trial(s) were "
                f"stopped before their last epoch")
        text += f"; they ran {100 * share:.0f}% of their epochs on average." if stopped.any() else "."
        fig = figs.early_stopping_figure(list(trials["trial_id"]), list(runs), list(best),
                                         list(stopped), max_e)
        return [Text(text), ctx.figure(fig, "early_stopping",
                                       "Epochs run per trial against the maximum; star: best epoch")]

    _guard(section, "Trials", trials_table)
    _guard(section, "Best trial per backbone", best_per_backbone)
    _guard(section, "Hyperparameters against validation WFS", hyperparameters)
    _guard(section, "Learning curves and learning rate", learning_curves)
    _guard(section, "Early stopping", early_stopping)
    return section


# ------------------------------------------------------------------------ 2. ensembles


def _member_rows(run: RunInputs, preds: MethodPredictions) -> list[dict[str, Any]]:
    """Members' metrics with subject-bootstrap intervals (ensemble.stats, the same resampling
    the ensemble stage uses for the methods)."""
    from ensemble.stats import bootstrap_metrics

    settings = run.ensemble_settings
    rows = []
    for name, probs in preds.members.items():
        boot = bootstrap_metrics(preds.y, probs, preds.subject_ids, run.class_names,
                                 n_boot=settings.bootstrap, seed=settings.seed)
        ci = boot.interval()
        row: dict[str, Any] = {"model": name, "kind": "member", "chosen": False}
        for key in STUDY_METRICS:
            row[key] = boot.point[key]
            row[f"{key}_low"], row[f"{key}_high"] = ci[key]
        rows.append(row)
    return rows


def _method_rows(run: RunInputs, split: str) -> list[dict[str, Any]]:
    comparison = run.comparison
    part = comparison[comparison["split"] == split]
    rows = []
    for _, r in part.iterrows():
        row: dict[str, Any] = {"model": str(r["method"]), "kind": "ensemble",
                               "chosen": bool(r.get("chosen", False))}
        for key in STUDY_METRICS:
            row[key] = r.get(key)
            row[f"{key}_low"], row[f"{key}_high"] = r.get(f"{key}_low"), r.get(f"{key}_high")
        rows.append(row)
    return rows


def _metric_table(ctx: _Context, rows: list[dict[str, Any]], name: str, caption: str) -> Table:
    raw = pd.DataFrame(rows)
    shown = pd.DataFrame({
        "model": [r["model"] + (" *" if r["chosen"] else "") for r in rows],
        "kind": [r["kind"] for r in rows],
        **{_HEADERS[k]: [format_interval(r[k], r[f"{k}_low"], r[f"{k}_high"]) for r in rows]
           for k in STUDY_METRICS},
    })
    return write_table(shown, name, ctx.tables, caption, raw)


def _confusion_matrix(y: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    keep = y >= 0
    return np.bincount(y[keep] * k + pred[keep], minlength=k * k).reshape(k, k)


def _labels(probs: np.ndarray, threshold: float | None, pos: int) -> np.ndarray:
    # the ensemble stage's rule (ensemble._metrics.labels_from_probs): pos where p_pos >= t
    if threshold is None or (isinstance(threshold, float) and np.isnan(threshold)):
        return probs.argmax(axis=1)
    return np.where(probs[:, pos] >= threshold, pos, 1 - pos)


def _pos(run: RunInputs) -> int:
    from trainers.metrics import positive_index

    return positive_index(run.class_names, len(run.class_names))


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


def _ensemble_section(ctx: _Context) -> Section:
    run = ctx.run
    section = Section("Members and ensembles (the study's Tables 4 and 5, extended)", "ensembles")
    n_boot = run.ensemble_settings.bootstrap

    def intro() -> list[Any]:
        blocks: list[Any] = []
        try:
            chosen = run.chosen
            blocks.append(Text(
                f"Chosen method: **{chosen.get('method')}** ({chosen.get('why', '')}). Members "
                "are the configurations the ensemble stage combined; intervals are 95% "
                f"subject-bootstrap percentiles ({n_boot} resamples, stratified by class), "
                "`*` marks the chosen method."))
        except MissingInput as exc:
            blocks.append(Note(f"ensemble methods are not shown: {exc}"))
        blocks.append(Text(
            f"The study's Table 4 reports centre-cropped 300x300 inputs and its Table 5 the "
            f"original 450x450; this run used {_crop_text(run)} -- compare runs with both crops "
            "(`data.crop`) to reproduce that contrast. Here Table 4 is the test split and "
            "Table 5 the validation split."))
        return blocks

    def table4() -> list[Any]:
        test = run.predictions("test")
        rows = _member_rows(run, test)
        blocks: list[Any] = [Note(n) for n in test.notes]
        try:
            rows += _method_rows(run, "test")
        except MissingInput as exc:
            blocks.append(Note(f"ensemble rows are missing: {exc}"))
        blocks.append(_metric_table(ctx, rows, "table4_test",
                                    f"Table 4 (extended): members and ensembles on test "
                                    f"({len(test.y)} cells, {len(set(test.subject_ids))} subjects)"))
        return blocks

    def table5() -> list[Any]:
        val = run.predictions("val")
        rows = _member_rows(run, val)
        blocks: list[Any] = []
        try:
            rows += _method_rows(run, "val_crossfit")
            blocks.append(Text(
                "Ensemble rows are cross-fitted: each validation fold is predicted by the "
                "method fitted on the other folds (held out), so they are comparable with the "
                "members' out-of-fold validation predictions."))
        except MissingInput as exc:
            blocks.append(Note(f"ensemble rows are missing: {exc}"))
        blocks.append(_metric_table(ctx, rows, "table5_validation",
                                    f"Table 5 (extended): members and ensembles on validation "
                                    f"({len(val.y)} cells)"))
        return blocks

    def confusion() -> list[Any]:
        test = run.predictions("test")
        names = run.class_names
        k = len(names)
        pos = _pos(run)
        matrices: dict[str, np.ndarray] = {}
        kinds: dict[str, str] = {}
        for name, probs in test.members.items():
            matrices[name], kinds[name] = _confusion_matrix(test.y, probs.argmax(axis=1), k), "member"
        notes = []
        try:
            long = run.confusion
            for method, part in long.groupby("method", sort=False):
                cm = np.zeros((k, k), dtype=np.int64)
                for _, r in part.iterrows():
                    cm[names.index(str(r["true"])), names.index(str(r["predicted"]))] = int(r["count"])
                matrices[str(method)], kinds[str(method)] = cm, "ensemble"
        except MissingInput as exc:
            notes.append(Note(f"ensemble confusion matrices are missing: {exc}"))
        rows, display = [], []
        for model, cm in matrices.items():
            shares = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
            cells = {"model": model, "kind": kinds[model]}
            for i in range(k):
                for j in range(k):
                    rows.append({"model": model, "kind": kinds[model], "true": names[i],
                                 "predicted": names[j], "count": int(cm[i, j]),
                                 "percent_of_true": 100 * shares[i, j]})
                    cells[f"{names[i]} -> {names[j]}"] = f"{int(cm[i, j])} ({100 * shares[i, j]:.1f}%)"
            display.append(cells)
        fig = figs.confusion_figure(matrices, names)
        table = write_table(pd.DataFrame(display), "confusion", ctx.tables,
                            "Confusion on test: count (share of the true class)", pd.DataFrame(rows))
        return notes + [table, ctx.figure(fig, "confusion", "Confusion matrices on test "
                                          f"(positive class: {names[pos]})")]

    def paired() -> list[Any]:
        comp = run.comparisons
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
                p = r.get("p_value", r.get("p_bootstrap"))
                cells[f"d{_HEADERS[m]}"] = (f"{r['diff']:+.3f} [{r['diff_low']:+.3f}, "
                                            f"{r['diff_high']:+.3f}] p={p:.3g}")
            display.append(cells)
        text = ("Differences method - baseline on test with 95% paired subject-bootstrap "
                "intervals. p-values: AUC by DeLong's test, ACC by McNemar's exact test, the "
                "others by the paired bootstrap (the full table, with every test, is the CSV).")
        return [Text(text), write_table(pd.DataFrame(display), "paired_comparisons", ctx.tables,
                                        "Paired comparisons against the baselines", comp)]

    _guard(section, None, intro)
    _guard(section, "Table 4 (extended): test", table4)
    _guard(section, "Table 5 (extended): validation", table5)
    _guard(section, "Confusion matrices", confusion)
    _guard(section, "Paired comparisons", paired)
    return section


# --------------------------------------------------------------------- 3. curves


def _all_models(test: MethodPredictions) -> list[tuple[str, str, np.ndarray]]:
    return ([(n, "member", p) for n, p in test.members.items()]
            + [(n, "ensemble", p) for n, p in test.methods.items()])


def _curves_section(ctx: _Context) -> Section:
    run = ctx.run
    section = Section("ROC, calibration and per-subject accuracy", "curves")

    def roc() -> list[Any]:
        from sklearn.metrics import roc_curve
        from sklearn.preprocessing import label_binarize

        from trainers.metrics import score

        test = run.predictions("test")
        names = run.class_names
        pos = _pos(run)
        keep = test.y >= 0
        y = test.y[keep]
        curves = []
        for name, kind, probs in _all_models(test):
            p = probs[keep]
            auc = score(y, p, names)["auc"]
            if len(names) == 2:
                fpr, tpr, _ = roc_curve(y == pos, p[:, pos])
            else:
                onehot = label_binarize(y, classes=list(range(len(names))))
                fpr, tpr, _ = roc_curve(onehot.ravel(), p.ravel())
            curves.append((name, kind, fpr, tpr, auc))
        title = (f"ROC on test (positive class: {names[pos]})" if len(names) == 2
                 else "ROC on test (micro-average over classes; AUC: macro one-vs-rest)")
        return [Note(n) for n in test.notes] + [
            ctx.figure(figs.roc_figure(curves, title), "roc",
                       "ROC curves of members (dashed) and ensembles (solid), AUC in the legend")]

    def calibration() -> list[Any]:
        from reports.calibration import brier_score, expected_calibration_error, reliability_curve

        test = run.predictions("test")
        pos = _pos(run)
        curves, rows = [], []
        for name, kind, probs in _all_models(test):
            brier = brier_score(test.y, probs, pos)
            ece = expected_calibration_error(test.y, probs, n_bins=10)
            mean_pred, observed = reliability_curve(test.y, probs, pos, n_bins=10)
            curves.append((name, kind, mean_pred, observed, brier, ece))
            rows.append({"model": name, "kind": kind, "brier": brier, "ece": ece})
        binary = len(run.class_names) == 2
        xlabel = (f"mean predicted P({run.class_names[pos]})" if binary
                  else "mean top-class confidence")
        text = ("Brier score: scikit-learn's `brier_score_loss` "
                + ("on the positive class. " if binary else "summed over classes. ")
                + "ECE (expected calibration error, written here): the highest class "
                "probability of each cell is its confidence; cells go into 10 equal-width "
                "confidence bins and ECE = sum over bins of (share of cells) x |accuracy - mean "
                "confidence|. Lower is better for both. Ensemble methods tuned with a decision "
                "threshold are still judged on their probabilities here.")
        return [Text(text),
                ctx.figure(figs.calibration_figure(curves, xlabel), "calibration",
                           "Reliability diagram on test (points: non-empty bins)"),
                ctx.table(pd.DataFrame(rows), "calibration", "Brier score and ECE on test")]

    def subjects() -> list[Any]:
        test = run.predictions("test")
        ids = pd.Series(test.subject_ids, dtype=object)
        if ids.isna().all():
            raise MissingInput("the test predictions carry no subject ids (the dataset layout "
                               "has none), so there is no per-subject accuracy")
        pos = _pos(run)
        names = run.class_names
        frame = pd.DataFrame({"subject": ids.fillna("(none)").astype(str), "label": test.y})
        frame = frame[frame["label"] >= 0]
        table = frame.groupby("subject").agg(
            true_class=("label", lambda s: names[int(s.mode().iloc[0])]), cells=("label", "size"))
        for name, kind, probs in _all_models(test):
            threshold = test.thresholds.get(name) if kind == "ensemble" else None
            right = _labels(probs, threshold, pos) == test.y
            table[name] = pd.Series(right[test.y >= 0], index=frame.index).groupby(
                frame["subject"]).mean()
        table = table.reset_index().sort_values(["true_class", "subject"])
        text = ("Share of each test subject's cells classified correctly (the challenge asked "
                "for per-subject accuracy); one column per member and ensemble method.")
        return [Text(text), ctx.table(table, "per_subject_accuracy",
                                      "Per-subject accuracy on test", table)]

    _guard(section, "ROC curves", roc)
    _guard(section, "Calibration", calibration)
    _guard(section, "Per-subject accuracy", subjects)
    return section


# ---------------------------------------------------------------------------- 4. Grad-CAM


def _select_cases(
    y: np.ndarray, member_pred: np.ndarray, ens_pred: np.ndarray, ens_conf: np.ndarray, n: int
) -> list[int]:
    """Cells the chosen ensemble gets right and at least one member wrong: the most members
    wrong first, then the ensemble's confidence; classes taken in turn."""
    wrong = (member_pred != y[None, :]).sum(axis=0)
    ok = np.flatnonzero((y >= 0) & (ens_pred == y) & (wrong > 0))
    ranked = sorted(ok, key=lambda i: (-wrong[i], -ens_conf[i], i))
    by_class: dict[int, list[int]] = {}
    for i in ranked:
        by_class.setdefault(int(y[i]), []).append(int(i))
    picked: list[int] = []
    while len(picked) < n and any(by_class.values()):
        for c in sorted(by_class):
            if by_class[c] and len(picked) < n:
                picked.append(by_class[c].pop(0))
    return picked


def _gradcam_section(ctx: _Context) -> Section:
    run = ctx.run
    section = Section("Grad-CAM: members and the ensemble", "gradcam")

    def build() -> list[Any]:
        if not ctx.gradcam:
            raise MissingInput("Grad-CAM was switched off (--no-gradcam)")
        chosen = run.chosen
        method = str(chosen.get("method"))
        test = run.predictions("test")
        if method not in test.methods:
            raise MissingInput(f"the chosen method {method!r} has no test probabilities here")
        members = run.ensemble_members
        weights = {m["name"]: float(m.get("weight", 0.0)) for m in chosen.get("members", [])}
        pos = _pos(run)
        names = run.class_names
        ens = test.methods[method]
        ens_pred = _labels(ens, test.thresholds.get(method), pos)
        labels = list(test.members)
        member_pred = np.stack([test.members[n].argmax(axis=1) for n in labels])
        picked = _select_cases(test.y, member_pred, ens_pred, ens.max(axis=1), ctx.gradcam_images)
        if not picked:
            raise MissingInput(
                f"no test cell is classified correctly by {method} and wrongly by a member")
        return _gradcam_blocks(ctx, method, members, labels, weights, test, picked, names)

    _guard(section, None, build)
    return section


def _gradcam_blocks(
    ctx: _Context, method: str, members: Sequence[Any], labels: Sequence[str],
    weights: dict[str, float], test: MethodPredictions, picked: list[int], names: Sequence[str],
) -> list[Any]:
    from reports.gradcam import GradCamError, find_gradcam_target, gradcam_maps, load_trial_model, resize_map

    run = ctx.run
    ids = [str(test.sample_ids[i]) for i in picked]
    classes = [int(test.y[i]) for i in picked]
    member_maps: list[np.ndarray] = []  # per member [n, D, D]
    layers = []
    display: np.ndarray | None = None
    size = 0
    jobs = [(m, t) for m in members for t in m.trial_ids]
    bar = tqdm(total=len(jobs) * len(ids), desc="Grad-CAM", unit="map", disable=not ctx.progress)
    try:
        loaded_maps: dict[str, list[np.ndarray]] = {}
        for member, trial in jobs:
            try:
                loaded = load_trial_model(run.model_meta(trial), run.model_weights(trial), ctx.device)
            except GradCamError as exc:
                raise MissingInput(str(exc)) from None
            try:
                images = np.stack([loaded.image(s) for s in ids])
            except FileNotFoundError as exc:
                raise MissingInput(str(exc)) from None
            if display is None or loaded.input_size > size:
                display, size = images, loaded.input_size
            target = find_gradcam_target(loaded.model, loaded.input_size)
            maps = []
            for j in range(len(ids)):  # one image at a time: bounded memory for big backbones
                maps.append(gradcam_maps(loaded.model, loaded.tensor(images[j:j + 1]),
                                         [classes[j]], target)[0])
                bar.update()
            loaded_maps.setdefault(member.name, []).append(np.stack(maps))
            layers.append({"member": run.member_label(member), "trial_id": trial,
                           "backbone": loaded.backbone, "target_layer": target.name,
                           "feature_map": "x".join(str(s) for s in target.shape[1:]),
                           "input_size": loaded.input_size})
            del loaded
    finally:
        bar.close()
    for member in members:
        # a member trained on several folds: the mean of its fold models' maps
        per_fold = [np.stack([resize_map(m, size) for m in fold]) for fold in loaded_maps[member.name]]
        member_maps.append(np.mean(per_fold, axis=0))
    w = np.array([weights.get(m.name, 0.0) for m in members])
    if w.sum() <= 0:
        w = np.ones(len(members))
    ensemble_map = np.tensordot(w / w.sum(), np.stack(member_maps), axes=1)
    assert display is not None
    flat = [f"{r['member']} ({r['feature_map']})" for r in layers
            if r["feature_map"].endswith("x1x1")]
    blocks: list[Any] = [Note(
        f"{', '.join(flat)}: the feature map is 1x1 at this input size, so the map is flat; "
        "Grad-CAM needs a larger data.input_size to localise") ] if flat else []
    blocks += [
        Text(f"Test cells that the chosen ensemble (**{method}**) classifies correctly and at "
             "least one member gets wrong. Each map is Grad-CAM (pytorch_grad_cam) for the true "
             "class at the layer listed below; the ensemble's map is the members' maps averaged "
             f"with the ensemble's weights ({', '.join(f'{wi:.3f}' for wi in w / w.sum())}). "
             "Panel titles give each model's probability of the true class."),
        write_table(pd.DataFrame(layers), "gradcam_layers", ctx.tables,
                    "Grad-CAM target layer of each member (rule: the last module with a 4-D "
                    "output in the feature pass)"),
    ]
    for j, i in enumerate(picked):
        panels = [(f"{labels[k]}", test.members[labels[k]][i], member_maps[k][j])
                  for k in range(len(members))]
        panels.append((f"ensemble {method}", test.methods[method][i], ensemble_map[j]))
        fig = _gradcam_figure(display[j], panels, classes[j], names, ids[j])
        blocks.append(ctx.figure(fig, f"gradcam_{j + 1:02d}",
                                 f"Grad-CAM, test cell `{ids[j]}` (subject {test.subject_ids[i]}, "
                                 f"true class {names[classes[j]]})"))
    return blocks


def _gradcam_figure(image: np.ndarray, panels: list[tuple[str, np.ndarray, np.ndarray]],
                    true: int, names: Sequence[str], sample_id: str) -> Any:
    n = len(panels) + 1
    fig = figs._figure(2.6 * n, 3.2)
    axes = fig.subplots(1, n, squeeze=False)[0]
    axes[0].imshow(image)
    axes[0].set_title(f"input\ntrue: {names[true]}", fontsize=8)
    for ax, (title, probs, cam) in zip(axes[1:], panels):
        right = int(np.argmax(probs)) == true
        ax.imshow(image)
        ax.imshow(cam, cmap="jet", alpha=0.45, vmin=0.0, vmax=1.0,
                  extent=(-0.5, image.shape[1] - 0.5, image.shape[0] - 0.5, -0.5))
        short = title if len(title) <= 28 else title[:26] + "..."
        ax.set_title(f"{short}\nP({names[true]})={probs[true]:.2f} "
                     f"{'right' if right else 'WRONG'}", fontsize=7,
                     color="black" if right else "tab:red")
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(sample_id, fontsize=8)
    return fig


# ----------------------------------------------------------------------- 5. reproducibility


def _kv(data: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame({"key": list(data), "value": [str(v) for v in data.values()]})


def _repro_section(ctx: _Context) -> Section:
    from reports import repro

    run = ctx.run
    section = Section("Reproducibility", "reproducibility")

    def code() -> list[Any]:
        state = repro.git_state()
        return [Text("The project's code when this report was built (`git rev-parse HEAD`); the "
                     "run folder does not record the commit it was searched with."),
                ctx.table(_kv(state), "git", "Code version")]

    def packages() -> list[Any]:
        return [ctx.table(_kv(repro.package_versions()), "packages", "Package versions")]

    def seeds() -> list[Any]:
        trial_configs = {}
        for t in run.trial_ids:
            try:
                trial_configs[t] = run.model_meta(t)["config"]
            except MissingInput:
                continue
        values = repro.seeds(run.config, trial_configs)
        return [ctx.table(_kv(values), "seeds", "Seeds")]

    def splits() -> list[Any]:
        from trainers.predictions import read_predictions

        frames = {}
        for member in run.all_members:
            for path in member.paths:
                pset = read_predictions(path)
                frames[pset.trial_id] = pset.frame
        table = repro.split_hashes(frames)
        agree = table.groupby("split")["sha256_16"].nunique()
        text = "; ".join(f"{split}: {'one split for all trials' if n == 1 else f'{n} different splits'}"
                         for split, n in agree.items())
        return [Text(f"Hash of each trial's (sample, subject, label) rows per split. {text}."),
                ctx.table(table, "split_hashes", "Split hashes per trial")]

    def hardware() -> list[Any]:
        info = {f"report machine: {k}": v for k, v in repro.hardware().items()}
        try:
            results = run.results
            if "node_ip" in results:
                nodes = sorted(str(n) for n in results["node_ip"].dropna().unique())
                info["search nodes (Ray)"] = ", ".join(nodes) or "unknown"
        except MissingInput:
            pass
        return [ctx.table(_kv(info), "hardware", "Hardware")]

    def commands() -> list[Any]:
        lines = run.commands
        return [Text("The command lines that produced the run (`RUN/command.txt`):")] + [
            Text(f"`{line}`") for line in lines]

    for title, build in (("Code", code), ("Packages", packages), ("Seeds", seeds),
                         ("Splits", splits), ("Hardware", hardware), ("Commands", commands)):
        _guard(section, title, build)
    return section


# ------------------------------------------------------------------------------- build


def _summary(run: RunInputs) -> list[Any]:
    blocks: list[Any] = [Text(
        f"Run folder: `{run.run_dir}`. Built {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by "
        "`wen report`. Tables are also in `tables/` as CSV and LaTeX, figures in `figures/`.")]
    try:
        chosen = run.chosen
        comp = run.comparison
        row = comp[(comp["method"] == chosen.get("method")) & (comp["split"] == "test")]
        if not row.empty:
            r = row.iloc[0]
            parts = ", ".join(f"{_HEADERS[k]} {format_interval(r[k], r[f'{k}_low'], r[f'{k}_high'])}"
                              for k in ("wfs", "ba", "auc"))
            blocks.append(Text(f"Chosen ensemble: **{chosen['method']}**; on test: {parts}."))
    except (MissingInput, KeyError):
        pass
    return blocks


def build_report(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    gradcam: bool = True,
    gradcam_images: int = 6,
    device: str = "cpu",
    progress: bool = True,
    say: Callable[[str], None] = log.info,
) -> Path:
    """Write the report of ``run_dir`` into ``out_dir`` (default ``RUN/report``); return that folder.

    Produces ``report.md``, ``report.html`` (self-contained), ``figures/*.png`` and
    ``tables/*.csv|*.tex``. Missing inputs are reported in their section, not raised.
    ``gradcam_images`` caps the Grad-CAM examples; ``device`` runs Grad-CAM (``cpu``/``cuda``).
    """
    if gradcam_images < 1:
        raise ValueError(f"`gradcam_images >= 1` must hold, got {gradcam_images}")
    run = load_run(run_dir, say)
    out = Path(out_dir) if out_dir is not None else run.run_dir / RUN_LAYOUT.report
    figures_dir, tables_dir = out / "figures", out / "tables"
    for folder in (figures_dir, tables_dir):  # stale files of an earlier build must not linger
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
    ctx = _Context(run, out, figures_dir, tables_dir, progress, say, gradcam, gradcam_images, device)
    steps = [("search summary", _search_section), ("tables", _ensemble_section),
             ("curves", _curves_section), ("Grad-CAM", _gradcam_section),
             ("reproducibility", _repro_section)]
    sections: list[Section] = []
    with tqdm(total=len(steps) + 1, desc="wen report", unit="step", disable=not progress) as bar:
        for label, step in steps:
            bar.set_postfix_str(label)
            sections.append(step(ctx))
            bar.update()
        bar.set_postfix_str("writing")
        title = f"wen-search report: {run.config_or_empty().get('name', run.run_dir.name)}"
        intro = _summary(run)
        (out / "report.md").write_text(render_markdown(title, intro, sections, out))
        (out / "report.html").write_text(render_html(title, intro, sections, out))
        bar.update()
    say(f"report: {out / 'report.html'} and {out / 'report.md'}")
    return out
