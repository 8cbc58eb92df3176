"""Figures of the report, drawn with matplotlib's Agg canvas (no display, no pyplot state).

Each function returns a :class:`matplotlib.figure.Figure`; :func:`save_figure` writes it as PNG.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

__all__ = [
    "calibration_figure",
    "confusion_figure",
    "diversity_figure",
    "early_stopping_figure",
    "hyperparameter_figure",
    "learning_curves_figure",
    "roc_figure",
    "save_figure",
]

DPI = 110


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)  # the Agg canvas: renders to PNG without any GUI backend
    return fig


def save_figure(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as a PNG file (parent folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI)
    return path


def _grid(n: int, max_cols: int = 4) -> tuple[int, int]:
    cols = min(max_cols, max(1, n))
    return math.ceil(n / cols), cols


def _is_numeric(values: pd.Series) -> bool:
    converted = pd.to_numeric(values.dropna(), errors="coerce")
    return (
        len(converted) > 0
        and converted.notna().all()
        and values.dropna().map(lambda v: not isinstance(v, bool)).all()
    )


# ------------------------------------------------------------------------------- search


def hyperparameter_figure(
    results: pd.DataFrame,
    keys: Sequence[str],
    metric: str = "val_wfs",
    log_keys: Sequence[str] = (),
) -> Figure:
    """Small multiples: each searched hyperparameter against the validation metric.

    Numbers are scattered (log axis for ``log_keys`` or spans over 100x), choices are strips
    with each choice's mean marked.
    """
    rows, cols = _grid(len(keys), 3)
    fig = _figure(4.0 * cols, 3.2 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    y_all = pd.to_numeric(results[metric], errors="coerce")
    rng = np.random.default_rng(0)  # jitter only; fixed so the figure is reproducible
    for ax, key in zip(axes, keys):
        values = results[key]
        ok = y_all.notna() & values.notna()
        x, y = values[ok], y_all[ok]
        if _is_numeric(values):
            xs = pd.to_numeric(x)
            ax.scatter(xs, y, s=28, alpha=0.8, color="tab:blue", edgecolor="k", linewidth=0.4)
            positive = (xs > 0).all() and len(xs)
            if positive and (key in log_keys or xs.max() / max(xs.min(), 1e-300) > 100):
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels collide
        else:
            labels = sorted({str(v) for v in x})
            pos = {v: i for i, v in enumerate(labels)}
            xi = np.array([pos[str(v)] for v in x], dtype=float)
            ax.scatter(
                xi + rng.uniform(-0.15, 0.15, len(xi)),
                y,
                s=28,
                alpha=0.8,
                color="tab:blue",
                edgecolor="k",
                linewidth=0.4,
            )
            for label, i in pos.items():
                mean = y[np.array([str(v) == label for v in x])].mean()
                ax.hlines(mean, i - 0.3, i + 0.3, color="tab:red", linewidth=2)
            ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_title(key, fontsize=10)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    for ax in axes[len(keys) :]:
        ax.set_visible(False)
    fig.suptitle(f"Searched hyperparameters against {metric} (red: mean of a choice)")
    return fig


def learning_curves_figure(
    histories: Mapping[str, pd.DataFrame],
    lr_steps: Mapping[str, pd.DataFrame],
    max_epochs: int | None,
    labels: Mapping[str, str] | None = None,
) -> Figure:
    """Per trial: losses and validation WFS by epoch (top), learning rate (bottom).

    The bottom panel draws the per-optimizer-step learning rate when the trial logged it
    (TensorBoard ``lr/step``: the triangular2 saw-tooth), else the per-epoch value.
    """
    trials = list(histories)
    n = len(trials)
    rows, cols = _grid(n, 4)
    fig = _figure(4.2 * cols, 5.0 * rows)
    grid = fig.add_gridspec(rows * 2, cols, height_ratios=[1.6, 1.0] * rows)
    for i, trial in enumerate(trials):
        r, c = divmod(i, cols)
        top = fig.add_subplot(grid[2 * r, c])
        bottom = fig.add_subplot(grid[2 * r + 1, c], sharex=top)
        h = histories[trial]
        epochs = pd.to_numeric(h["epoch"], errors="coerce")
        for col, style in (("train_loss", "tab:blue"), ("val_loss", "tab:orange")):
            if col in h:
                top.plot(epochs, h[col], marker="o", ms=3, color=style, label=col)
        top.set_ylabel("loss")
        if "val_wfs" in h:
            twin = top.twinx()
            twin.plot(epochs, h["val_wfs"], marker="s", ms=3, color="tab:green", label="val_wfs")
            twin.set_ylabel("val WFS", color="tab:green")
            twin.set_ylim(-0.02, 1.02)
            lines = top.get_legend_handles_labels()
            more = twin.get_legend_handles_labels()
            top.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="lower left")
        elif top.lines:
            top.legend(fontsize=7)
        title = labels.get(trial, trial) if labels else trial
        top.set_title(title, fontsize=9)
        if max_epochs:
            top.axvline(max_epochs, color="grey", linestyle=":", linewidth=1)
        steps = lr_steps.get(trial)
        if steps is not None and len(steps):
            last_epoch = int(epochs.max()) if epochs.notna().any() else 1
            per_epoch = max(1, round(len(steps) / max(last_epoch, 1)))
            bottom.plot(steps["step"] / per_epoch, steps["lr"], color="tab:purple", linewidth=1)
            bottom.set_ylabel("lr (per step)")
        elif "lr" in h:
            bottom.step(epochs, h["lr"], where="post", color="tab:purple", marker=".")
            bottom.set_ylabel("lr (per epoch)")
        # linear, not log: the cyclic ramps are straight lines, so the saw-tooth reads as one
        bottom.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
        bottom.set_xlabel("epoch")
        bottom.grid(alpha=0.3)
        top.grid(alpha=0.3)
    fig.suptitle("Learning curves and learning-rate schedule per trial")
    return fig


def early_stopping_figure(
    trials: Sequence[str],
    epochs_run: Sequence[float],
    best_epochs: Sequence[float],
    stopped: Sequence[bool],
    max_epochs: int | None,
) -> Figure:
    """Epochs each trial ran (bars; orange = stopped early) against the maximum (dotted)."""
    n = len(trials)
    fig = _figure(7.5, max(2.0, 0.32 * n + 1.2))
    ax = fig.add_subplot()
    y = np.arange(n)
    colors = ["tab:orange" if s else "tab:blue" for s in stopped]
    ax.barh(y, epochs_run, color=colors, edgecolor="k", linewidth=0.4)
    ax.scatter(
        best_epochs, y, marker="*", s=70, color="gold", edgecolor="k", zorder=3, label="best epoch"
    )
    if max_epochs:
        ax.axvline(max_epochs, color="grey", linestyle=":", label=f"max epochs ({max_epochs})")
    ax.set_yticks(y, list(trials), fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("epochs run")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("How early stopping cut trials (orange: stopped by the scheduler)")
    return fig


# ------------------------------------------------------------------------------ ensemble


def confusion_figure(matrices: Mapping[str, np.ndarray], class_names: Sequence[str]) -> Figure:
    """One heat map per model: counts and row (true-class) percentages."""
    names = list(matrices)
    rows, cols = _grid(len(names), 4)
    k = len(class_names)
    size = 1.0 + 0.9 * k
    fig = _figure(size * cols + 0.5, size * rows + 0.6)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, name in zip(axes, names):
        cm = np.asarray(matrices[name], dtype=float)
        share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for i in range(k):
            for j in range(k):
                ax.text(
                    j,
                    i,
                    f"{int(cm[i, j])}\n{100 * share[i, j]:.1f}%",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if share[i, j] > 0.6 else "black",
                )
        ax.set_xticks(range(k), list(class_names), fontsize=8)
        ax.set_yticks(range(k), list(class_names), fontsize=8)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
        ax.set_title(name, fontsize=8)
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    fig.suptitle("Confusion matrices on test (count, share of the true class)")
    return fig


def _style(kind: str, i: int) -> dict[str, Any]:
    cmap = "tab10" if kind == "member" else "tab20"
    from matplotlib import colormaps

    color = colormaps[cmap](i % colormaps[cmap].N)
    return {
        "color": color,
        "linestyle": "--" if kind == "member" else "-",
        "linewidth": 1.2 if kind == "member" else 1.6,
    }


def roc_figure(
    curves: Sequence[tuple[str, str, np.ndarray, np.ndarray, float]], title: str
) -> Figure:
    """ROC curves: ``(name, kind, fpr, tpr, auc)`` with kind ``member`` (dashed) or ``ensemble``."""
    fig = _figure(7.0, 6.0)
    ax = fig.add_subplot()
    counters = {"member": 0, "ensemble": 0}
    for name, kind, fpr, tpr, auc in curves:
        ax.plot(fpr, tpr, label=f"{name} (AUC {auc:.3f})", **_style(kind, counters[kind]))
        counters[kind] += 1
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("false positive rate (1 - specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    ax.set_aspect("equal")
    return fig


def calibration_figure(
    curves: Sequence[tuple[str, str, np.ndarray, np.ndarray, float, float]], xlabel: str
) -> Figure:
    """Reliability diagram: ``(name, kind, mean_predicted, observed, brier, ece)`` per model."""
    fig = _figure(7.0, 6.0)
    ax = fig.add_subplot()
    counters = {"member": 0, "ensemble": 0}
    for name, kind, mean_pred, observed, brier, ece in curves:
        ax.plot(
            mean_pred,
            observed,
            marker="o",
            ms=3,
            label=f"{name} (Brier {brier:.3f}, ECE {ece:.3f})",
            **_style(kind, counters[kind]),
        )
        counters[kind] += 1
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="perfectly calibrated")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("observed frequency")
    ax.set_title("Calibration on test (10 equal-width bins)")
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    return fig


#: Up to this many candidates the heat maps name them (and print each cell's value up to a tenth).
DIVERSITY_LABELS = 40


def _heat_map(
    fig: Figure,
    ax: Any,
    matrix: np.ndarray,
    labels: Sequence[str],
    title: str,
    style: Mapping[str, Any],
) -> None:
    """One square heat map of a pairwise matrix; NaN cells grey. ``style``: ``cmap`` and
    ``imshow``'s colour limits."""
    from matplotlib import colormaps

    style = dict(style)
    cmap = colormaps[style.pop("cmap")].with_extremes(bad="lightgrey")
    image = ax.imshow(np.ma.masked_invalid(matrix), cmap=cmap, **style)
    fig.colorbar(image, ax=ax, shrink=0.8)
    m = len(labels)
    if m <= DIVERSITY_LABELS:
        ax.set_xticks(range(m), list(labels), rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(m), list(labels), fontsize=7)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    if m <= DIVERSITY_LABELS // 4:
        for i in range(m):
            for j in range(m):
                text = "n/a" if np.isnan(matrix[i, j]) else f"{matrix[i, j]:.2f}"
                ax.text(j, i, text, ha="center", va="center", fontsize=7)
    ax.set_title(title, fontsize=9)


def diversity_figure(
    labels: Sequence[str], disagreement: np.ndarray, correlation: np.ndarray, split: str
) -> Figure:
    """Two heat maps of the candidates' pairs: decision disagreement and error correlation."""
    m = len(labels)
    side = min(7.0, 2.5 + 0.35 * m)
    fig = _figure(2 * side + 1.5, side + 0.8)
    left, right = fig.subplots(1, 2)
    top = np.nanmax(disagreement) if np.isfinite(disagreement).any() else 1.0
    _heat_map(fig, left, disagreement, labels, "disagreement (share of cells)",
              {"cmap": "viridis", "vmin": 0.0, "vmax": max(top, 1e-6)})  # fmt: skip
    _heat_map(fig, right, correlation, labels, "error correlation (Pearson, 0/1 errors)",
              {"cmap": "RdBu_r", "vmin": -1.0, "vmax": 1.0})  # fmt: skip
    named = "" if m <= DIVERSITY_LABELS else f"; {m} candidates, too many to name"
    fig.suptitle(f"Pairwise diversity of the candidates on {split} (grey: undefined){named}")
    return fig
