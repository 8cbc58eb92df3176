"""Operating points: thresholds chosen on validation, rates on test with subject intervals."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from ensemble.operating import RULES, operating_point_table, threshold_for


def _clustered(rng: np.random.Generator, n_subjects: int = 30, cells: int = 20):
    subject = np.repeat(np.arange(n_subjects), cells)
    y = np.repeat(np.arange(n_subjects) % 2, cells)
    z = 1.2 * (2 * y - 1) + rng.normal(0, 0.7, n_subjects)[subject] + rng.normal(0, 1, len(y))
    return y, 1 / (1 + np.exp(-z)), np.array([f"s{i}" for i in subject], dtype=object)


def test_youden_threshold_maximises_j_as_roc_curve_does() -> None:
    y, p, _ = _clustered(np.random.default_rng(0))
    t = threshold_for("youden", y, p)
    fpr, tpr, cuts = roc_curve(y, p)
    best = (tpr - fpr).max()
    called = p >= t
    j = called[y == 1].mean() - called[y == 0].mean()
    assert j == pytest.approx(best)


@pytest.mark.parametrize("target", [0.8, 0.95, 1.0])
def test_sensitivity_rule_is_the_highest_threshold_reaching_the_target(target: float) -> None:
    y, p, _ = _clustered(np.random.default_rng(1))
    t = threshold_for("sensitivity", y, p, target)
    assert (p[y == 1] >= t).mean() >= target
    higher = np.unique(p[p > t])
    if higher.size:  # the next score up misses the target
        assert (p[y == 1] >= higher[0]).mean() < target
    assert threshold_for("argmax", y, p) == 0.5
    with pytest.raises(ValueError, match="operating_point must be one of"):
        threshold_for("cost", y, p)


def test_table_has_every_rule_with_intervals_around_the_point() -> None:
    rng = np.random.default_rng(2)
    val, test = _clustered(rng), _clustered(rng)
    table = operating_point_table("sap", val[:2], test, 0.95, "sensitivity", n_boot=200, seed=0)
    assert table["rule"].tolist() == list(RULES)
    assert table.loc[table["chosen"], "rule"].tolist() == ["sensitivity"]
    for rate in ("sensitivity", "specificity", "ppv", "npv"):
        assert (table[f"{rate}_low"] <= table[rate] + 1e-12).all()
        assert (table[rate] <= table[f"{rate}_high"] + 1e-12).all()
    row = table.set_index("rule").loc["youden"]
    y, p, _ = test
    called = p >= row["threshold"]
    assert row["sensitivity"] == pytest.approx(called[y == 1].mean())
    assert row["npv"] == pytest.approx((y[~called] == 0).mean())
    assert table["intervals"].str.contains("subject bootstrap").all()
