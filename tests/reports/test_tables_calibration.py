"""Table writers (CSV, LaTeX, Markdown) and the calibration measures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _checks import braces_balanced, latex_body_rows, latex_columns, unescaped_ampersands
from sklearn.metrics import brier_score_loss

from reports import brier_score, expected_calibration_error, latex_table, markdown_table
from reports.tables import format_interval, write_table


def test_latex_escapes_and_keeps_one_row_per_frame_row(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {"model": ["wen_kappa", "a&b {x}", "50%"], "WFS [95% CI]": ["0.9", "1", ""]}
    )
    table = write_table(frame, "demo_table", tmp_path, "Caption with _ and & and %")
    text = table.tex.read_text()
    assert braces_balanced(text)
    rows = latex_body_rows(text)
    assert len(rows) == 3
    assert rows[0].startswith(r"wen\_kappa &")
    assert rows[1].startswith(r"a\&b \{x\} &")
    assert all(unescaped_ampersands(r) == latex_columns(text) - 1 for r in rows)
    assert r"\caption{Caption with \_ and \& and \%}" in text
    assert r"\label{tab:demo-table}" in text
    assert pd.read_csv(table.csv).shape == (3, 2)


def test_unbalanced_braces_are_detected() -> None:
    assert not braces_balanced(r"\textbf{a")
    assert braces_balanced(r"\{ a \}")


def test_latex_of_an_empty_frame_is_still_well_formed() -> None:
    text = latex_table(pd.DataFrame({"a": []}), "empty", "tab:e")
    assert braces_balanced(text) and latex_body_rows(text) == []


def test_markdown_table_escapes_pipes() -> None:
    md = markdown_table(pd.DataFrame({"a|b": ["x|y"], "n": [0.123456]}))
    assert md.splitlines() == [r"| a\|b | n |", "|---|---|", r"| x\|y | 0.1235 |"]


def test_format_interval() -> None:
    assert format_interval(0.8841, 0.85, 0.91) == "0.884 [0.850, 0.910]"
    assert format_interval(0.8841, float("nan"), 0.9) == "0.884"
    assert format_interval(None) == "n/a"


def test_ece_of_perfect_and_overconfident_predictions() -> None:
    # confidence 0.8 everywhere, right on exactly 80% of cells: perfectly calibrated
    y = np.array([1] * 8 + [0] * 2)
    P = np.tile([0.2, 0.8], (10, 1))
    assert expected_calibration_error(y, P) == pytest.approx(0.0)
    # confidence 0.9, right on half: ECE = |0.5 - 0.9|
    y = np.array([1, 0] * 5)
    P = np.tile([0.1, 0.9], (10, 1))
    assert expected_calibration_error(y, P) == pytest.approx(0.4)


def test_ece_weights_bins_by_their_share() -> None:
    # bin (0.5, 0.6]: 2 cells, conf 0.6, both right -> |1 - 0.6| = 0.4, weight 2/4
    # bin (0.9, 1.0]: 2 cells, conf 0.95, one right -> |0.5 - 0.95| = 0.45, weight 2/4
    P = np.array([[0.4, 0.6], [0.6, 0.4], [0.05, 0.95], [0.05, 0.95]])
    y = np.array([1, 0, 1, 0])
    assert expected_calibration_error(y, P, n_bins=10) == pytest.approx(0.5 * 0.4 + 0.5 * 0.45)


def test_unknown_labels_are_left_out() -> None:
    P = np.array([[0.1, 0.9], [0.5, 0.5]])
    assert expected_calibration_error(np.array([1, -1]), P) == pytest.approx(0.1)
    assert brier_score(np.array([1, -1]), P) == pytest.approx(0.01)


def test_brier_matches_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(size=50)
    P = np.stack([1 - p, p], axis=1)
    y = rng.integers(0, 2, size=50)
    assert brier_score(y, P, pos=1) == pytest.approx(brier_score_loss(y, p))
    assert brier_score(1 - y, P[:, ::-1], pos=0) == pytest.approx(brier_score_loss(y, p))
    P3 = rng.dirichlet(np.ones(3), size=40)
    y3 = rng.integers(0, 3, size=40)
    onehot = np.eye(3)[y3]
    assert brier_score(y3, P3) == pytest.approx(((P3 - onehot) ** 2).sum(axis=1).mean())
