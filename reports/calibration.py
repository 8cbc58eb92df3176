"""Calibration of predicted probabilities: Brier score, expected calibration error, reliability.

>>> import numpy as np
>>> P = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
>>> y = np.array([0, 1, 1, 1])
>>> round(expected_calibration_error(y, P, n_bins=10), 3)
0.3
"""

from __future__ import annotations

import numpy as np

from trainers.metrics import labelled_rows

__all__ = ["brier_score", "expected_calibration_error", "reliability_curve"]


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, n_bins: int = 10) -> float:
    """Top-label expected calibration error (Guo et al., ICML 2017), with equal-width bins.

    Each prediction's confidence is its highest class probability; the confidences are put in
    ``n_bins`` equal-width bins over [0, 1] (bin b holds (b/n, (b+1)/n], the first also 0), and
    ECE = sum over bins of (cells in bin / cells) x |accuracy in bin - mean confidence in bin|.
    Written by hand: scikit-learn has the reliability curve but not this summary.
    """
    if n_bins < 1:
        raise ValueError(f"`n_bins >= 1` must hold, got n_bins={n_bins}")
    y, p = labelled_rows(labels, probs, "calibration")
    if len(y) == 0:
        return float("nan")
    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.searchsorted(edges[1:-1], confidence, side="left")
    total = 0.0
    for b in np.unique(bins):
        inside = bins == b
        total += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(total)


def brier_score(labels: np.ndarray, probs: np.ndarray, pos: int = 1) -> float:
    """Brier score (scikit-learn): binary on the positive class ``pos``; multi-class summed over
    classes (``brier_score_loss`` with ``labels``)."""
    from sklearn.metrics import brier_score_loss

    y, p = labelled_rows(labels, probs, "calibration")
    if len(y) == 0:
        return float("nan")
    if p.shape[1] == 2:
        return float(brier_score_loss((y == pos).astype(int), p[:, pos]))
    return float(brier_score_loss(y, p, labels=list(range(p.shape[1]))))


def reliability_curve(
    labels: np.ndarray, probs: np.ndarray, pos: int = 1, n_bins: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """(mean predicted probability, observed frequency) per non-empty bin (scikit-learn's
    ``calibration_curve``): of the positive class when binary, else top-label confidence
    against correctness."""
    from sklearn.calibration import calibration_curve

    y, p = labelled_rows(labels, probs, "calibration")
    if p.shape[1] == 2:
        target, score = (y == pos).astype(int), p[:, pos]
    else:
        target, score = (p.argmax(axis=1) == y).astype(int), p.max(axis=1)
    if len(np.unique(target)) < 2:
        # calibration_curve needs both outcomes; a constant target has a trivial curve
        return np.array([score.mean()]), np.array([target.mean()])
    frac, mean_pred = calibration_curve(target, score, n_bins=n_bins, strategy="uniform")
    return mean_pred, frac
