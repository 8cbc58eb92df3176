"""Calibration of predicted probabilities: Brier score, expected calibration error, the
reliability curve, and temperature scaling fitted on validation.

The binary ECE and the reliability curve describe one quantity: the positive class's predicted
probability against its observed frequency. With more classes both use the top-label
confidence against correctness (Guo et al., ICML 2017).

>>> import numpy as np
>>> P = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
>>> y = np.array([0, 1, 1, 1])
>>> round(expected_calibration_error(y, P, n_bins=10), 3)
0.3
>>> t = fit_temperature(np.array([0, 1] * 50), np.tile([[0.99, 0.01], [0.01, 0.99]], (50, 1)))
>>> t < 1.0  # right and confident: a temperature below 1 sharpens further
True
"""

from __future__ import annotations

import numpy as np

from trainers.metrics import labelled_rows

__all__ = [
    "TEMPERATURE_CLIP",
    "apply_temperature",
    "brier_score",
    "calibration_target",
    "expected_calibration_error",
    "fit_temperature",
    "reliability_curve",
    "weighted_ece",
]

#: ``apply_temperature`` clips probabilities here before the log (the exported graph too).
TEMPERATURE_CLIP = 1e-7


def calibration_target(
    labels: np.ndarray, probs: np.ndarray, pos: int
) -> tuple[np.ndarray, np.ndarray]:
    """(outcome, predicted probability) per labelled cell: the positive class when binary,
    else correctness against the top-label confidence."""
    y, p = labelled_rows(labels, probs, "calibration")
    if p.shape[1] == 2:
        return (y == pos).astype(np.float64), p[:, pos]
    return (p.argmax(axis=1) == y).astype(np.float64), p.max(axis=1)


def _bins(score: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-width bins over [0, 1]: bin b holds (b/n, (b+1)/n], the first also 0."""
    if n_bins < 1:
        raise ValueError(f"`n_bins >= 1` must hold, got n_bins={n_bins}")
    return np.searchsorted(np.linspace(0.0, 1.0, n_bins + 1)[1:-1], score, side="left")


def expected_calibration_error(
    labels: np.ndarray, probs: np.ndarray, n_bins: int = 10, pos: int = 1
) -> float:
    """Expected calibration error with ``n_bins`` equal-width bins: sum over bins of
    (cells in bin / cells) x |observed frequency - mean predicted probability|, on the
    positive class ``pos`` when binary (the reliability curve's quantity), else top-label
    (Guo et al., ICML 2017). Written by hand: scikit-learn has the curve, not this summary.
    """
    target, score = calibration_target(labels, probs, pos)
    if len(target) == 0:
        return float("nan")
    weights = np.ones((1, len(target)))
    return float(weighted_ece(target, score, weights, n_bins)[0])


def weighted_ece(
    target: np.ndarray, score: np.ndarray, weights: np.ndarray, n_bins: int = 10
) -> np.ndarray:
    """The ECE of each row of cell ``weights`` [resamples, cells] (a subject bootstrap's
    draw counts per cell), all at once."""
    bins = _bins(score, n_bins)
    total = weights.sum(axis=1)
    ece = np.zeros(weights.shape[0])
    for b in np.unique(bins):
        w = weights[:, bins == b]
        mass = w.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            gap = np.abs(w @ target[bins == b] - w @ score[bins == b]) / mass
        ece += np.where(mass > 0, mass / total * gap, 0.0)
    return ece


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

    target, score = calibration_target(labels, probs, pos)
    if len(np.unique(target)) < 2:
        # calibration_curve needs both outcomes; a constant target has a trivial curve
        return np.array([score.mean()]), np.array([target.mean()])
    frac, mean_pred = calibration_curve(target, score, n_bins=n_bins, strategy="uniform")
    return mean_pred, frac


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log(probs) / T)`` (probabilities clipped at 1e-7 first): temperature scaling
    of an ensemble's probabilities (Guo et al., ICML 2017). T > 1 softens, T < 1 sharpens; the
    argmax never changes."""
    logp = np.log(np.clip(np.asarray(probs, dtype=np.float64), TEMPERATURE_CLIP, 1.0))
    z = logp / float(temperature)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(labels: np.ndarray, probs: np.ndarray) -> float:
    """The temperature that minimises the log loss of ``apply_temperature(probs, T)`` on the
    labelled cells (a bounded scalar search over log T in [log 0.05, log 20], scipy)."""
    from scipy.optimize import minimize_scalar

    y, p = labelled_rows(labels, probs, "temperature scaling")
    if len(y) == 0:
        raise ValueError("temperature scaling needs labelled validation cells")

    def nll(log_t: float) -> float:
        q = apply_temperature(p, float(np.exp(log_t)))
        return float(-np.log(np.clip(q[np.arange(len(y)), y], 1e-12, None)).mean())

    best = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(best.x))
