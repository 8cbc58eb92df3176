"""``build_report``: a run folder -> ``RUN/report/`` (Markdown, self-contained HTML, figures,
tables as CSV and LaTeX).

Sections: 1. search summary, 2. members and ensembles (the study's Tables 4 and 5, extended),
3. ROC, calibration and per-subject accuracy, 4. Grad-CAM, 5. reproducibility. A section (or a
part of one) whose inputs are missing says so, naming the file and the command that makes it.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

from tqdm.auto import tqdm

from reports._inputs import MissingInput, RunInputs, load_run
from reports.render import Section, Text, render_html, render_markdown
from reports.sections import curves, ensembles, explain, reproducibility, search
from reports.sections._common import HEADERS, ReportContext, guard
from reports.tables import format_interval
from trainers.run_layout import RUN_LAYOUT

__all__ = ["SECTIONS", "build_report", "build_section"]

log = logging.getLogger("wen.reports")

#: The report's sections, in order: each module names its TITLE, KEY (the anchor), LABEL (the
#: progress bar's) and SUBSECTIONS, (heading, subsection) pairs.
SECTIONS: tuple[ModuleType, ...] = (search, ensembles, curves, explain, reproducibility)


def build_section(ctx: ReportContext, module: ModuleType) -> Section:
    """The section of one of ``SECTIONS``: each subsection under its heading, a missing input
    a note in its place."""
    section = Section(module.TITLE, module.KEY)
    for title, subsection in module.SUBSECTIONS:
        guard(section, title, partial(subsection, ctx))
    return section


# ------------------------------------------------------------------------------- build


def _summary(run: RunInputs) -> list[Any]:
    blocks: list[Any] = [
        Text(
            f"Run folder: `{run.run_dir}`. Built {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by "
            "`wen report`. Tables are also in `tables/` as CSV and LaTeX, figures in `figures/`."
        )
    ]
    try:
        chosen = run.chosen
        comp = run.comparison
        row = comp[(comp["method"] == chosen.get("method")) & (comp["split"] == "test")]
        if not row.empty:
            r = row.iloc[0]
            parts = ", ".join(
                f"{HEADERS[k]} {format_interval(r[k], r[f'{k}_low'], r[f'{k}_high'])}"
                for k in ("wfs", "ba", "auc")
            )
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
    ctx = ReportContext(
        run, out, figures_dir, tables_dir, progress, say, gradcam, gradcam_images, device
    )
    sections: list[Section] = []
    with tqdm(total=len(SECTIONS) + 1, desc="wen report", unit="step", disable=not progress) as bar:
        for module in SECTIONS:
            bar.set_postfix_str(module.LABEL)
            sections.append(build_section(ctx, module))
            bar.update()
        bar.set_postfix_str("writing")
        title = f"wen-search report: {run.config_or_empty().get('name', run.run_dir.name)}"
        intro = _summary(run)
        (out / "report.md").write_text(render_markdown(title, intro, sections, out))
        (out / "report.html").write_text(render_html(title, intro, sections, out))
        bar.update()
    say(f"report: {out / 'report.html'} and {out / 'report.md'}")
    return out
