"""The ensembles section's diversity subsection: the candidates' heat maps and the ambiguity
table for a run that has diversity.csv and ambiguity.csv, a note for one that has not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from _checks import assert_valid_png
from reports import load_run
from reports.render import Figure, Note, Text
from reports.sections import ReportContext, ensembles
from reports.tables import Table
from trainers.run_layout import RUN_LAYOUT

HEADING = "Diversity and the ambiguity decomposition"


def _ctx(run: Path, out: Path) -> ReportContext:
    return ReportContext(load_run(run), out, out / "figures", out / "tables")


@pytest.mark.slow
def test_the_subsection_shows_the_heat_maps_and_the_table(smoke_run: Path, tmp_path: Path) -> None:
    ctx = _ctx(smoke_run, tmp_path)
    blocks = ensembles.diversity(ctx)
    assert [type(b) for b in blocks] == [Text, Figure, Text, Table], blocks
    how, figure, how_table, table = blocks
    assert "3 candidates" in how.text and "labelled test cells" in how.text
    assert "which no method was fitted on" in how.text
    assert_valid_png(figure.path)
    assert figure.path == ctx.figures / "diversity.png"
    assert "final weights, fitted on all the validation predictions" in how_table.text
    assert table.name == "ambiguity" and (ctx.tables / "ambiguity.csv").is_file()
    shown = table.frame.set_index("method")
    assert len(shown) == 9  # every method of the smoke run's ensemble stage
    assert shown.loc["stacking", "note"].startswith("not a weighted average")
    assert shown.loc["stacking", "ensemble Brier"] == ""
    raw = pd.read_csv(smoke_run / RUN_LAYOUT.ambiguity).set_index("method")
    sap = raw.loc["sap"]
    assert sap["ensemble_brier"] == pytest.approx(sap["member_brier"] - sap["ambiguity"], abs=1e-12)


@pytest.mark.slow
def test_the_heat_maps_hold_the_pairs_and_short_names(smoke_run: Path) -> None:
    run = load_run(smoke_run)
    pairs = run.diversity
    names, disagreement, correlation = ensembles._pair_matrices(pairs)
    assert names == [m.name for m in run.ensemble_members]
    np.testing.assert_allclose(disagreement, disagreement.T)
    assert (np.diag(disagreement) == 0).all() and (np.diag(correlation) == 1).all()
    first = pairs.iloc[0]
    assert disagreement[0, 1] == first["disagreement"]
    labels = ensembles._short_labels(run, names)
    assert labels == [run.member_label(m) for m in run.ensemble_members]


@pytest.mark.slow
def test_the_report_links_the_figure_and_the_table(smoke_report: Path) -> None:
    md = (smoke_report / "report.md").read_text()
    assert f"### {HEADING}" in md
    assert "figures/diversity.png" in md
    assert (smoke_report / "tables" / "ambiguity.tex").is_file()


def test_an_older_run_without_the_files_says_so(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    blocks = ensembles.diversity(_ctx(run, tmp_path / "out"))
    assert [type(b) for b in blocks] == [Note, Note]
    assert "diversity.csv does not exist" in blocks[0].text
    assert "ambiguity.csv does not exist" in blocks[1].text
    assert "lack it" in blocks[0].text


def test_a_run_without_test_predictions_says_why(tmp_path: Path) -> None:
    from ensemble._diversity_tables import NO_TEST

    run = tmp_path / "run"
    (run / RUN_LAYOUT.ensemble).mkdir(parents=True)
    row = {"a": "", "b": "", "disagreement": np.nan, "error_correlation": np.nan,
           "split": "test", "n": 0, "note": NO_TEST}  # fmt: skip
    pd.DataFrame([row]).to_csv(run / RUN_LAYOUT.diversity, index=False)
    amb = {"method": "sap", "split": "test", "ensemble_brier": np.nan, "member_brier": np.nan,
           "ambiguity": np.nan, "n": 0, "note": NO_TEST}  # fmt: skip
    pd.DataFrame([amb]).to_csv(run / RUN_LAYOUT.ambiguity, index=False)
    blocks = ensembles.diversity(_ctx(run, tmp_path / "out"))
    assert isinstance(blocks[0], Note) and NO_TEST in blocks[0].text
    table = blocks[-1]
    assert isinstance(table, Table) and table.frame["note"].tolist() == [NO_TEST]
