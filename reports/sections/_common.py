"""What the report's sections share: the context every subsection takes, the guard that turns a
missing input into a note, and the helpers more than one section (or the summary) uses.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reports import figures as figs
from reports._inputs import REPORT_METRICS, MethodPredictions, MissingInput, RunInputs
from reports.render import Figure, Heading, Note, Section
from reports.tables import Table, format_interval, write_table
from trainers.metrics import positive_index

__all__ = [
    "HEADERS",
    "ReportContext",
    "Subsection",
    "SubsectionTable",
    "all_models",
    "display",
    "guard",
    "metric_table",
    "positive_class",
    "predicted_labels",
]

log = logging.getLogger("wen.reports")

#: The column headers of ``REPORT_METRICS``.
HEADERS = {
    "wp": "WP",
    "wr": "WR",
    "wfs": "WFS",
    "acc": "ACC",
    "ba": "BA",
    "auc": "AUC",
    "kappa": "kappa",
    "mcc": "MCC",
}


@dataclass
class ReportContext:
    """What every subsection reads (the run's inputs, the report's options) and where it writes
    (``figures/`` and ``tables/`` of the report folder)."""

    run: RunInputs
    out: Path
    figures: Path
    tables: Path
    progress: bool = False
    say: Callable[[str], None] = log.info
    gradcam: bool = True
    gradcam_images: int = 6
    device: str = "cpu"

    def figure(self, fig: Any, name: str, caption: str) -> Figure:
        """Save ``fig`` as ``figures/NAME.png``; return its report block."""
        return Figure(figs.save_figure(fig, self.figures / f"{name}.png"), caption)

    def table(
        self, frame: pd.DataFrame, name: str, caption: str, csv_frame: pd.DataFrame | None = None
    ) -> Table:
        """Write ``frame`` (shown with :func:`display`) as ``tables/NAME.csv|.tex``; return its
        report block. ``csv_frame`` replaces the CSV's content (raw numbers, more columns)."""
        return write_table(display(frame), name, self.tables, caption, csv_frame)


#: A subsection: the context -> its blocks; raises MissingInput when an input is absent.
Subsection = Callable[[ReportContext], list[Any]]
#: A section's subsections in order: (heading, or None for none; the subsection).
SubsectionTable = tuple[tuple[str | None, Subsection], ...]


def display(frame: pd.DataFrame) -> pd.DataFrame:
    """Floats to 4 significant digits, missing values blank (the CSV keeps raw numbers)."""
    out = frame.copy()
    for col in out.columns:
        if pd.api.types.is_float_dtype(out[col]):
            out[col] = out[col].map(lambda v: "" if pd.isna(v) else f"{v:.4g}")
        else:
            out[col] = out[col].map(
                lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
            )
    return out


def guard(section: Section, title: str | None, build: Callable[[], list[Any]]) -> None:
    """Add a sub-section; a MissingInput becomes a note in its place instead of a crash."""
    if title:
        section.add(Heading(title))
    try:
        section.add(*build())
    except MissingInput as exc:
        section.add(Note(str(exc)))


def positive_class(run: RunInputs) -> int:
    """The index of the run's positive class (``trainers.metrics.positive_index``)."""
    return positive_index(run.class_names, len(run.class_names))


def predicted_labels(probs: np.ndarray, threshold: float | None, pos: int) -> np.ndarray:
    """Each row's predicted class: the argmax, or ``pos`` where ``p_pos >= threshold``."""
    # the ensemble stage's rule (ensemble._metrics.labels_from_probs): pos where p_pos >= t
    if threshold is None or (isinstance(threshold, float) and np.isnan(threshold)):
        return probs.argmax(axis=1)
    return np.where(probs[:, pos] >= threshold, pos, 1 - pos)


def all_models(test: MethodPredictions) -> list[tuple[str, str, np.ndarray]]:
    """(name, ``member`` or ``ensemble``, probabilities) of every member, then every method."""
    return [(n, "member", p) for n, p in test.members.items()] + [
        (n, "ensemble", p) for n, p in test.methods.items()
    ]


def metric_table(ctx: ReportContext, rows: list[dict[str, Any]], name: str, caption: str) -> Table:
    """The study's metrics of ``rows`` as "point [low, high]"; the CSV keeps the raw rows."""
    raw = pd.DataFrame(rows)
    shown = pd.DataFrame(
        {
            "model": [r["model"] + (" *" if r["chosen"] else "") for r in rows],
            "kind": [r["kind"] for r in rows],
            **{
                HEADERS[k]: [format_interval(r[k], r[f"{k}_low"], r[f"{k}_high"]) for r in rows]
                for k in REPORT_METRICS
            },
        }
    )
    return write_table(shown, name, ctx.tables, caption, raw)
