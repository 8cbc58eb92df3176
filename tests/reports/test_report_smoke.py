"""End to end: the report of a complete smoke run (search + ensemble outputs).

The run folder is assembled by ``conftest.build_smoke_run`` from the stages' real writers;
building it and the report takes tens of seconds on two CPU cores, hence ``slow``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from _checks import (
    assert_valid_png,
    braces_balanced,
    latex_body_rows,
    latex_columns,
    unescaped_ampersands,
)

pytestmark = pytest.mark.slow

SECTIONS = (
    "1. Search summary",
    "2. Members and ensembles",
    "3. ROC, calibration and per-subject accuracy",
    "4. Grad-CAM",
    "5. Reproducibility",
)
SUBSECTIONS = (
    "Trials",
    "Best trial per backbone",
    "Hyperparameters against validation WFS",
    "Learning curves and learning rate",
    "Early stopping",
    "Partition",
    "Selection flow",
    "Table 4 (extended): test",
    "Table 5 (extended): validation",
    "Confusion matrices",
    "Paired comparisons",
    "Diversity and the ambiguity decomposition",
    "Operating points",
    "ROC curves",
    "Calibration",
    "Per-subject accuracy",
    "Code",
    "Packages",
    "Seeds",
    "Splits",
    "Hardware",
    "Commands",
)
FIGURES = (
    "hyperparameters",
    "learning_curves_1",
    "early_stopping",
    "confusion",
    "diversity",
    "roc",
    "calibration",
    "gradcam_01",
    "gradcam_02",
)
#: best per backbone: three members; the ensemble stage's nine methods.
MEMBERS = 3
METHODS = (
    "best_single",
    "sap",
    "wen_acc",
    "wen_auc",
    "wen_f1",
    "wen_kappa",
    "greedy",
    "optuna",
    "stacking",
)


def test_every_section_and_subsection_is_present(smoke_report: Path) -> None:
    md = (smoke_report / "report.md").read_text()
    html = (smoke_report / "report.html").read_text()
    for title in SECTIONS:
        assert f"## {title}" in md, title
        assert title.split(". ", 1)[1].split(" (")[0] in html, title
    for title in SUBSECTIONS:
        assert f"### {title}" in md, title
    # a complete run: no section may fall back to a missing-input note
    assert "does not exist" not in md
    assert "are missing" not in md
    assert "Chosen ensemble: **" in md


def test_every_figure_is_a_valid_png(smoke_report: Path) -> None:
    figures = smoke_report / "figures"
    for name in FIGURES:
        assert_valid_png(figures / f"{name}.png")
    md = (smoke_report / "report.md").read_text()
    linked = re.findall(r"!\[[^\]]*\]\((figures/[^)]+\.png)\)", md)
    assert sorted(linked) == sorted(f"figures/{p.name}" for p in figures.glob("*.png"))
    for rel in linked:
        assert_valid_png(smoke_report / rel)


def test_html_is_self_contained(smoke_report: Path) -> None:
    html = (smoke_report / "report.html").read_text()
    sources = re.findall(r'<img[^>]*\bsrc="([^"]*)"', html)
    assert len(sources) == len(list((smoke_report / "figures").glob("*.png")))
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert "<link" not in html and "http://" not in html and "https://" not in html


def test_html_renders_in_headless_chromium(smoke_report: Path, tmp_path: Path) -> None:
    from PIL import Image

    from reports import inspect_html, screenshot_html

    check = inspect_html(smoke_report / "report.html")
    assert check.checked, "the page's load handler did not run"
    assert check.images == len(FIGURES)
    assert check.broken_images == 0
    assert check.console_errors == 0 and check.console_messages == []
    shot = screenshot_html(smoke_report / "report.html", tmp_path / "shot.png", 1200, 1400)
    assert assert_valid_png(shot) == (1200, 1400)
    with Image.open(shot) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is None or len(colours) > 50, "the screenshot is (nearly) blank"


def test_latex_tables_are_well_formed(smoke_report: Path) -> None:
    tables = smoke_report / "tables"
    tex_files = sorted(tables.glob("*.tex"))
    assert {p.stem for p in tex_files} >= {
        "trials",
        "best_per_backbone",
        "table4_test",
        "table5_validation",
        "confusion",
        "paired_comparisons",
        "ambiguity",
        "calibration",
        "per_subject_accuracy",
        "gradcam_layers",
        "packages",
        "split_hashes",
    }
    for path in tex_files:
        text = path.read_text()
        assert braces_balanced(text), path.name
        for env in ("table", "tabular"):
            assert text.count(f"\\begin{{{env}}}") == text.count(f"\\end{{{env}}}") == 1, path.name
        columns = latex_columns(text)
        rows = latex_body_rows(text)
        for row in rows:
            assert row.endswith("\\\\"), (path.name, row)
            assert unescaped_ampersands(row) == columns - 1, (path.name, row)
        csv = pd.read_csv(path.with_suffix(".csv"))
        if path.stem == "paired_comparisons":  # long CSV: one .tex row per (baseline, method)
            assert len(rows) == len(csv.groupby(["baseline", "method"])), path.name
        elif path.stem != "confusion":  # confusion.csv is long, its .tex one row per model
            assert len(rows) == len(csv), path.name
    for name in ("table4_test", "table5_validation", "calibration", "confusion"):
        rows = latex_body_rows((tables / f"{name}.tex").read_text())
        assert len(rows) == MEMBERS + len(METHODS), name  # one row per member and method
        for method in METHODS:
            assert sum(r.startswith(method.replace("_", "\\_") + " ") for r in rows) == 1, (
                name,
                method,
            )


def test_table4_has_every_metric_with_an_interval(smoke_report: Path) -> None:
    table = pd.read_csv(smoke_report / "tables" / "table4_test.csv")
    assert list(table["kind"]).count("member") == MEMBERS
    assert set(table.loc[table["kind"] == "ensemble", "model"]) == set(METHODS)
    assert table["chosen"].sum() == 1
    for key in ("wp", "wr", "wfs", "acc", "ba", "auc", "kappa"):
        values = table[[key, f"{key}_low", f"{key}_high"]].to_numpy(float)
        assert np.isfinite(values).all(), key
        assert (values[:, 1] <= values[:, 0] + 1e-9).all() and (
            values[:, 0] <= values[:, 2] + 1e-9
        ).all(), key


def test_calibration_and_subject_tables(smoke_report: Path) -> None:
    calib = pd.read_csv(smoke_report / "tables" / "calibration.csv")
    assert ((calib["brier"] >= 0) & (calib["brier"] <= 1)).all()
    assert ((calib["ece"] >= 0) & (calib["ece"] <= 1)).all()
    subjects = pd.read_csv(smoke_report / "tables" / "per_subject_accuracy.csv")
    assert len(subjects) == 4  # the smoke split's test subjects
    for method in METHODS:
        assert subjects[method].between(0, 1).all()


def test_learning_rate_trace_is_per_step(smoke_run: Path) -> None:
    """The trace the learning-curve figure draws holds the triangular2 peaks, halving."""
    from reports import load_run

    from _smoke_run import ITERS_PER_EPOCH

    steps = load_run(smoke_run).lr_steps["t_res_a"]
    lr = steps["lr"].to_numpy()
    assert len(lr) == 6 * ITERS_PER_EPOCH
    peaks = [lr[i] for i in range(1, len(lr) - 1) if lr[i - 1] < lr[i] > lr[i + 1]]
    assert len(peaks) == 3
    assert peaks[0] == pytest.approx(2e-3, rel=1e-3)
    assert peaks[1] == pytest.approx(peaks[0] / 2, rel=1e-2)
    assert peaks[2] == pytest.approx(peaks[1] / 2, rel=1e-2)


def test_gradcam_cases_are_member_wrong_ensemble_right(smoke_run: Path, smoke_report: Path) -> None:
    import json

    from reports import load_run

    run = load_run(smoke_run)
    chosen = json.loads((smoke_run / "ensemble" / "chosen.json").read_text())["method"]
    test = run.predictions("test")
    md = (smoke_report / "report.md").read_text()
    # each figure's caption appears twice in the markdown: as the image's alt text and below it
    shown = sorted(set(re.findall(r"Grad-CAM, test cell `([^`]+)`", md)))
    assert len(shown) == 2
    index = {s: i for i, s in enumerate(test.sample_ids)}
    for sample in shown:
        i = index[sample]
        assert test.methods[chosen][i].argmax() == test.y[i]
        assert any(p[i].argmax() != test.y[i] for p in test.members.values())


def test_wen_report_command(smoke_run: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from search.cli import app

    out = tmp_path / "cli-report"
    result = CliRunner().invoke(
        app, ["report", str(smoke_run), "--out", str(out), "--no-gradcam", "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    assert (out / "report.html").is_file() and (out / "report.md").is_file()
    assert "switched off" in (out / "report.md").read_text()
    bad = CliRunner().invoke(app, ["report", str(tmp_path / "nope")])
    assert bad.exit_code == 2 and "does not exist" in bad.output


def test_report_shows_the_stored_probabilities_and_never_refits(
    smoke_run: Path, tmp_path: Path
) -> None:
    """Every method's probabilities in the report are the ones `wen ensemble` stored and
    scored (stacking included); without that file the report says so instead of refitting."""
    import shutil

    from ensemble.probabilities import read_method_probabilities
    from reports import load_run

    stored = read_method_probabilities(smoke_run / "ensemble" / "probabilities.parquet")
    for split in ("val", "test"):
        shown = load_run(smoke_run).predictions(split)
        assert sorted(shown.methods) == sorted(METHODS)
        for name, probs in shown.methods.items():
            np.testing.assert_array_equal(probs, stored.probs(name, split, list(shown.sample_ids)))
    copy = tmp_path / "run"
    shutil.copytree(smoke_run, copy, ignore=shutil.ignore_patterns("report", "tensorboard"))
    (copy / "ensemble" / "probabilities.parquet").unlink()
    test = load_run(copy).predictions("test")
    assert test.methods == {} and len(test.members) == MEMBERS
    assert any("ensemble methods are not shown" in n and "wen ensemble" in n for n in test.notes)


def test_paired_p_values_are_subject_level_and_adjusted(
    smoke_run: Path, smoke_report: Path
) -> None:
    """The report's paired table shows the Holm-adjusted subject-level p-values and names the
    family; the cell-level tests are only in tests.csv."""
    md = (smoke_report / "report.md").read_text()
    section = md.split("### Paired comparisons", 1)[1].split("\n## ", 1)[0]
    assert "Holm-adjusted over the" in section and "subjects are the independent unit" in section
    assert "Obuchowski" in section and "cells treated as independent" in section
    comparisons = pd.read_csv(smoke_run / "ensemble" / "comparisons.csv")
    row = comparisons[(comparisons["metric"] == "wfs")].iloc[0]
    assert f"p={row['p_adjusted']:.3g}" in section


def test_calibration_shows_the_chosen_method_before_and_after_temperature(
    smoke_report: Path,
) -> None:
    md = (smoke_report / "report.md").read_text()
    section = md.split("### Calibration", 1)[1].split("\n### ", 1)[0]
    assert "Temperature scaling of the chosen method, on test" in section
    assert "positive class's probability (the diagram's quantity)" in section
    table = pd.read_csv(smoke_report / "tables" / "recalibration.csv")
    assert table["stage"].tolist() == ["before", "after"]


def test_partition_and_selection_flow(smoke_run: Path, smoke_report: Path) -> None:
    md = (smoke_report / "report.md").read_text()
    part = pd.read_csv(smoke_report / "tables" / "partition.csv")
    assert set(part["split"]) == {"val", "test"} and (part["subjects"] > 0).all()
    flow = md.split("### Selection flow", 1)[1].split("\n### ", 1)[0]
    trials = len(pd.read_csv(smoke_run / "results.csv"))
    assert f"({trials} trials" in flow and "test chose nothing" in flow


def test_the_diagram_draws_the_chosen_method_after_its_temperature(smoke_run: Path) -> None:
    import json

    from ensemble.calibration import apply_temperature
    from reports import load_run
    from reports.sections.curves import _recalibrated

    run = load_run(smoke_run)
    test = run.predictions("test")
    chosen = json.loads((smoke_run / "ensemble" / "chosen.json").read_text())
    ((name, kind, probs),) = _recalibrated(run, test)
    assert kind == "recalibrated" and name.startswith(f"{chosen['method']} after T = ")
    want = apply_temperature(test.methods[chosen["method"]], chosen["temperature"])
    np.testing.assert_allclose(probs, want)
