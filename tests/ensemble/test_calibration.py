"""Temperature scaling fitted on validation; ECE and Brier before and after on test."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ensemble.calibration import (
    apply_temperature,
    brier_score,
    expected_calibration_error,
    fit_temperature,
    reliability_curve,
)
from ensemble.config import EnsembleSettings
from ensemble.decision import calibration_table


def _overconfident(rng: np.random.Generator, n_subjects: int = 40, cells: int = 25):
    """Probabilities whose logits are three times too large (a network trained too long)."""
    subject = np.repeat(np.arange(n_subjects), cells)
    y = np.repeat(np.arange(n_subjects) % 2, cells)
    z = 1.0 * (2 * y - 1) + rng.normal(0, 0.5, n_subjects)[subject] + rng.normal(0, 1, len(y))
    p1 = 1 / (1 + np.exp(-3.0 * z))
    return y, np.stack([1 - p1, p1], axis=1), np.array([f"s{i}" for i in subject], dtype=object)


def test_temperature_undoes_overconfidence_and_helps_on_new_data() -> None:
    rng = np.random.default_rng(0)
    y_val, p_val, _ = _overconfident(rng)
    y_test, p_test, subjects = _overconfident(rng)
    t = fit_temperature(y_val, p_val)
    assert t > 1.2  # overconfident: the fitted temperature softens
    after = apply_temperature(p_test, t)
    assert (after.argmax(axis=1) == p_test.argmax(axis=1)).all()
    assert expected_calibration_error(y_test, after) < expected_calibration_error(y_test, p_test)
    assert brier_score(y_test, after) < brier_score(y_test, p_test)
    table = calibration_table(y_test, p_test, t, subjects, 1, EnsembleSettings(bootstrap=200))
    assert table["stage"].tolist() == ["before", "after"]
    for metric in ("ece", "brier"):
        assert (table[f"{metric}_low"] <= table[metric] + 1e-12).all()
        assert (table[metric] <= table[f"{metric}_high"] + 1e-12).all()
    assert table.loc[1, "ece"] < table.loc[0, "ece"]


def test_binary_ece_and_the_reliability_curve_describe_one_quantity() -> None:
    """With one bin per distinct probability, the binary ECE is the curve's mean gap."""
    y = np.array([0, 1, 1, 0, 1, 1, 0, 0])
    p1 = np.array([0.05, 0.05, 0.55, 0.55, 0.55, 0.95, 0.95, 0.95])
    probs = np.stack([1 - p1, p1], axis=1)
    mean_pred, observed = reliability_curve(y, probs, pos=1, n_bins=10)
    weights = np.array([2, 3, 3]) / 8
    assert expected_calibration_error(y, probs, 10, pos=1) == pytest.approx(
        (weights * np.abs(observed - mean_pred)).sum()
    )


def test_the_exported_graph_applies_the_same_temperature() -> None:
    from ensemble._graph import TemperatureScaled

    class Fixed(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(x, dim=1)

    x = torch.randn(16, 3, generator=torch.Generator().manual_seed(0))
    graph = TemperatureScaled(Fixed(), 2.5).eval()
    want = apply_temperature(torch.softmax(x, dim=1).numpy(), 2.5)
    np.testing.assert_allclose(graph(x).numpy(), want, atol=1e-6)
