"""Tables of the report: written as CSV and LaTeX, shown as Markdown and HTML.

>>> import pandas as pd
>>> print(markdown_table(pd.DataFrame({"model": ["sap"], "WFS": [0.884]})))
| model | WFS |
|---|---|
| sap | 0.884 |
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "Table",
    "format_interval",
    "latex_escape",
    "latex_table",
    "markdown_table",
    "write_table",
]

_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


@dataclass
class Table:
    """A table of the report: the frame shown, its caption and the files it was written to."""

    name: str
    frame: pd.DataFrame
    caption: str
    csv: Path | None = None
    tex: Path | None = None


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters (pandas escapes cells, not captions; by hand)."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def format_interval(value: Any, low: Any = None, high: Any = None, digits: int = 3) -> str:
    """``0.884 [0.850, 0.910]``; ``n/a`` for a missing value; no interval when it is missing."""

    def finite(v: Any) -> bool:
        try:
            return v is not None and math.isfinite(float(v))
        except (TypeError, ValueError):
            return False

    if not finite(value):
        return "n/a"
    text = f"{float(value):.{digits}f}"
    if finite(low) and finite(high):
        text += f" [{float(low):.{digits}f}, {float(high):.{digits}f}]"
    return text


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.4g}"
    return str(value)


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (pandas' ``to_markdown`` needs ``tabulate``; by hand)."""

    def esc(text: str) -> str:
        return text.replace("|", r"\|").replace("\n", " ")

    header = "| " + " | ".join(esc(str(c)) for c in frame.columns) + " |"
    rule = "|" + "---|" * len(frame.columns)
    rows = [
        "| " + " | ".join(esc(_cell(v)) for v in row) + " |"
        for row in frame.itertuples(index=False)
    ]
    return "\n".join([header, rule, *rows])


def latex_table(frame: pd.DataFrame, caption: str, label: str) -> str:
    """A booktabs ``table`` environment (needs ``\\usepackage{booktabs}``), cells escaped."""
    shown = frame.map(_cell) if len(frame) else frame.astype(str)
    body = shown.to_latex(
        index=False,
        escape=True,
        column_format="l" * max(1, len(frame.columns)),
        caption=latex_escape(caption),
        label=label,
    )
    return "% requires \\usepackage{booktabs}\n" + body


def write_table(
    frame: pd.DataFrame,
    name: str,
    tables_dir: Path,
    caption: str,
    csv_frame: pd.DataFrame | None = None,
) -> Table:
    """Write ``tables_dir/name.csv`` (``csv_frame`` when given: raw numbers) and ``name.tex``."""
    tables_dir.mkdir(parents=True, exist_ok=True)
    csv = tables_dir / f"{name}.csv"
    tex = tables_dir / f"{name}.tex"
    (csv_frame if csv_frame is not None else frame).to_csv(csv, index=False)
    tex.write_text(latex_table(frame, caption, f"tab:{name.replace('_', '-')}"))
    return Table(name=name, frame=frame, caption=caption, csv=csv, tex=tex)
