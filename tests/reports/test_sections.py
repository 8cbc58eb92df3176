"""The report's sections: each subsection is a function of the context that can be called
alone, and the report holds the sections of ``reports.build.SECTIONS`` in that order."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from reports import load_run
from reports.build import SECTIONS, build_section
from reports.render import Note, Text
from reports.sections import ReportContext, ensembles, search
from reports.tables import Table

pytestmark = pytest.mark.slow


@pytest.fixture
def ctx(smoke_run: Path, tmp_path: Path) -> ReportContext:
    """A context on the smoke run that writes into a fresh folder."""
    return ReportContext(load_run(smoke_run), tmp_path, tmp_path / "figures", tmp_path / "tables")


def test_a_search_subsection_alone(ctx: ReportContext) -> None:
    text, table = search.trials_table(ctx)
    assert isinstance(text, Text) and text.text.startswith("4 trial(s), 0 errored.")
    assert isinstance(table, Table) and table.name == "trials"
    assert table.caption == "All trials of the search"
    assert table.csv == ctx.tables / "trials.csv" and table.csv.is_file()
    assert len(table.frame) == 4 and {"trial_id", "backbone", "val_wfs"} <= set(table.frame)


def test_an_ensemble_subsection_alone(ctx: ReportContext) -> None:
    blocks = ensembles.table4_test(ctx)
    assert not any(isinstance(b, Note) for b in blocks), blocks
    table = blocks[-1]
    assert isinstance(table, Table) and table.name == "table4_test"
    assert table.csv == ctx.tables / "table4_test.csv" and table.csv.is_file()
    assert table.caption.startswith("Table 4 (extended): members and ensembles on test")
    assert sum(m.endswith(" *") for m in table.frame["model"]) == 1  # the chosen method
    assert list(table.frame.columns) == [
        "model",
        "kind",
        "WP",
        "WR",
        "WFS",
        "ACC",
        "BA",
        "AUC",
        "kappa",
        "MCC",
    ]


def test_a_missing_input_becomes_a_note_in_its_section(ctx: ReportContext) -> None:
    ctx.gradcam = False
    section = build_section(ctx, SECTIONS[3])
    assert section.title == "Grad-CAM: members and the ensemble" and section.anchor == "gradcam"
    assert section.blocks == [Note("Grad-CAM was switched off (--no-gradcam)")]


def test_every_section_names_its_title_key_and_subsections() -> None:
    for module in SECTIONS:
        assert module.TITLE and module.KEY and module.LABEL, module.__name__
        assert module.SUBSECTIONS and all(callable(f) for _, f in module.SUBSECTIONS)
    assert len({m.KEY for m in SECTIONS}) == len(SECTIONS)


def test_the_report_holds_the_sections_in_order(smoke_report: Path) -> None:
    md = (smoke_report / "report.md").read_text()
    titles = re.findall(r"^## \d+\. (.+)$", md, flags=re.MULTILINE)
    assert titles == [m.TITLE for m in SECTIONS]
    headings = re.findall(r"^### (.+)$", md, flags=re.MULTILINE)
    assert headings == [t for m in SECTIONS for t, _ in m.SUBSECTIONS if t]
