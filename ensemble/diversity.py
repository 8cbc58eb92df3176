"""Diversity of an ensemble's candidates, and the ambiguity decomposition of its Brier score.

Pure numpy. ``P`` is [members, samples, classes] (the shape every ensemble method takes) and
``y`` holds class indices; rows with ``y < 0`` (no label) are left out of every number.

**Pairwise diversity** (:func:`pairwise_diversity`), on the members' argmax decisions:

* *disagreement*: the share of samples on which two members' decisions differ (Skalak 1996;
  Ho 1998; Kuncheva & Whitaker 2003, their "disagreement measure"). For two classes it is
  Kuncheva & Whitaker's measure exactly (one member right, the other wrong); with more classes
  it also counts samples where both are wrong with different classes.
* *error correlation*: the Pearson correlation of the two members' per-sample 0/1 error
  indicators (the phi coefficient of their oracle outputs, Kuncheva & Whitaker's rho). It was
  chosen over the correlation of per-sample Brier losses because it describes the decisions
  the ensemble is scored on (WFS, BA, kappa) and does not mix diversity with calibration:
  the Brier side is what the ambiguity decomposition below measures. It is undefined (NaN,
  with a reason from :meth:`PairwiseDiversity.note`) when a member is wrong on every sample
  or on none, since its error indicator is then constant.

Both come from matrix products of indicator matrices ([members, samples] @ its transpose), so
500 members x 20,000 samples take a few BLAS calls, not 124,750 Python iterations.

**Ambiguity decomposition** (:func:`ambiguity_decomposition`; Krogh & Vedelsby 1995). For a
convex combination ``pbar = sum_i w_i p_i`` (``w_i >= 0``, ``sum_i w_i = 1``) and the squared
loss, per sample and exactly::

    sum_c (pbar_c - y_c)^2 = sum_i w_i sum_c (p_ic - y_c)^2 - sum_i w_i sum_c (p_ic - pbar_c)^2

ensemble Brier = weighted mean member Brier - weighted ambiguity: the ensemble is better than
its members on average by exactly how much they spread around it. ``y_c`` is the one-hot
label and the Brier score is summed over classes (Brier 1950), so for two classes it is twice
the positive-class Brier of ``ensemble.calibration.brier_score``. ``pbar`` is not renormalised
(the identity needs the plain mixture); ``EnsembleMethod.predict_proba`` renormalises rows,
which changes nothing when the members' rows sum to 1.

References:
    Brier, G. W. (1950). Verification of forecasts expressed in terms of probability. Monthly
    Weather Review 78(1), 1-3.
    Ho, T. K. (1998). The random subspace method for constructing decision forests. IEEE TPAMI
    20(8), 832-844.
    Krogh, A. & Vedelsby, J. (1995). Neural network ensembles, cross validation, and active
    learning. Advances in Neural Information Processing Systems 7, 231-238.
    Kuncheva, L. I. & Whitaker, C. J. (2003). Measures of diversity in classifier ensembles and
    their relationship with the ensemble accuracy. Machine Learning 51(2), 181-207.
    Skalak, D. B. (1996). The sources of increased accuracy for two proposed boosting
    algorithms. AAAI-96 Workshop on Integrating Multiple Learned Models.

>>> import numpy as np
>>> P = np.array([[[.9, .1], [.4, .6]], [[.6, .4], [.7, .3]]])
>>> y = np.array([0, 1])
>>> d = pairwise_diversity(P, y)
>>> float(d.disagreement[0, 1]), d.error_rate.tolist()
(0.5, [0.0, 0.5])
>>> a = ambiguity_decomposition(P, y, np.array([0.5, 0.5]))
>>> round(a.ensemble_brier, 4), round(a.member_brier, 4), round(a.ambiguity, 4)
(0.365, 0.41, 0.045)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "AmbiguityDecomposition",
    "PairwiseDiversity",
    "ambiguity_decomposition",
    "labelled",
    "pairwise_diversity",
]

#: float32 sums of 0/1 values are exact integers up to 2**24; more samples use float64.
_EXACT_FLOAT32 = 2**24
#: How far the decomposition's three terms may miss adding up (floating point only).
_ADD_UP_TOL = 1e-9


def labelled(P: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``P`` [members, samples, classes] and ``y`` restricted to the samples with ``y >= 0``."""
    P = np.asarray(P, dtype=np.float64)
    y = np.asarray(y)
    if P.ndim != 3:
        raise ValueError(
            f"P must be [members, samples, classes], got shape {P.shape}; stack the members "
            "with ensemble.members.stack_members"
        )
    if y.ndim != 1 or len(y) != P.shape[1]:
        raise ValueError(f"y must be 1-D with one label per sample ({P.shape[1]}), got {y.shape}")
    if len(y) and y.max() >= P.shape[2]:
        raise ValueError(
            f"y must be class indices below {P.shape[2]} (or -1 for no label), got {y.max()}"
        )
    keep = y >= 0
    if keep.all():  # no copy of a large P when every sample is labelled
        return P, y.astype(np.int64)
    return P[:, keep], y[keep].astype(np.int64)


@dataclass(frozen=True)
class PairwiseDiversity:
    """Pairwise disagreement and error correlation of ``m`` members on ``n`` labelled samples.

    ``disagreement`` and ``error_correlation`` are symmetric [m, m] matrices (diagonal: 0 and
    1, or NaN for a member with constant errors); ``error_rate`` is each member's share of
    wrong decisions. With ``n == 0`` every number is NaN.
    """

    disagreement: np.ndarray
    error_correlation: np.ndarray
    error_rate: np.ndarray
    n: int

    def constant(self) -> np.ndarray:
        """Members whose error indicator is constant (wrong on every sample or on none)."""
        return (self.error_rate == 0.0) | (self.error_rate == 1.0)

    def note(self, a: int, b: int, names: Sequence[str] | None = None) -> str:
        """Why the error correlation of members ``a`` and ``b`` is NaN ("" when it is not);
        ``names`` names the members (else their indices)."""
        if self.n == 0:
            return "no labelled samples"
        for i in (a, b):
            if self.constant()[i]:
                who = names[i] if names is not None else f"member {i}"
                how = "never wrong" if self.error_rate[i] == 0.0 else "wrong"
                every = "on these" if self.error_rate[i] == 0.0 else "on all"
                return (
                    f"{who} is {how} {every} {self.n} samples: the correlation of a constant "
                    "error indicator is undefined"
                )
        return ""


def _gram(X: np.ndarray) -> np.ndarray:
    """``X @ X.T`` of a 0/1 matrix as exact counts (float64)."""
    dtype = np.float32 if X.shape[1] < _EXACT_FLOAT32 else np.float64
    Xf = X.astype(dtype)
    return (Xf @ Xf.T).astype(np.float64)


def _disagreement(decisions: np.ndarray, k: int) -> np.ndarray:
    """Share of samples on which each pair's decisions differ: 1 - sum_c D_c D_c^T / n."""
    m, n = decisions.shape
    agree = np.zeros((m, m))
    if k == 2:
        # one product: agree = n - s_a - s_b + 2 D1 D1^T (D0 = 1 - D1)
        D1 = decisions == 1
        s = D1.sum(axis=1).astype(np.float64)
        agree = n - s[:, None] - s[None, :] + 2.0 * _gram(D1)
    else:
        for c in range(k):
            agree += _gram(decisions == c)
    out = 1.0 - agree / n
    np.fill_diagonal(out, 0.0)
    return out


def _error_correlation(errors: np.ndarray) -> np.ndarray:
    """Pearson correlation of 0/1 error rows from integer counts (the phi coefficient):
    (n n11 - e_a e_b) / sqrt(e_a (n - e_a) e_b (n - e_b)); NaN where a row is constant."""
    n = errors.shape[1]
    both = _gram(errors)
    e = errors.sum(axis=1).astype(np.float64)
    spread = e * (n - e)  # n^2 times the variance; 0 for a constant row
    cov = n * both - e[:, None] * e[None, :]
    denom = np.sqrt(spread[:, None] * spread[None, :])
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = np.where(denom > 0, cov / np.where(denom > 0, denom, 1.0), np.nan)
    return np.clip(corr, -1.0, 1.0)


def pairwise_diversity(P: np.ndarray, y: np.ndarray) -> PairwiseDiversity:
    """Disagreement and error correlation of every pair of members (module docs).

    >>> P = np.array([[[.9, .1], [.8, .2], [.2, .8]], [[.3, .7], [.6, .4], [.1, .9]]])
    >>> d = pairwise_diversity(P, np.array([0, 1, 1]))
    >>> round(float(d.disagreement[0, 1]), 4), float(d.error_correlation[0, 1])
    (0.3333, 0.5)
    """
    P, y = labelled(P, y)
    m, n, k = P.shape
    if n == 0:
        nan = np.full((m, m), np.nan)
        return PairwiseDiversity(nan, nan.copy(), np.full(m, np.nan), 0)
    decisions = P.argmax(axis=2)
    errors = decisions != y[None, :]
    return PairwiseDiversity(
        disagreement=_disagreement(decisions, k),
        error_correlation=_error_correlation(errors),
        error_rate=errors.mean(axis=1),
        n=n,
    )


@dataclass(frozen=True)
class AmbiguityDecomposition:
    """Krogh & Vedelsby's split of a weighted average's Brier score, averaged over samples:
    ``ensemble_brier == member_brier - ambiguity`` (to floating point; ``residual``)."""

    ensemble_brier: float
    member_brier: float
    ambiguity: float
    n: int

    @property
    def residual(self) -> float:
        """``ensemble_brier - (member_brier - ambiguity)``: 0 up to rounding."""
        return self.ensemble_brier - (self.member_brier - self.ambiguity)


def _convex_weights(weights: np.ndarray, m: int) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (m,):
        raise ValueError(f"weights must have one entry per member ({m}), got shape {w.shape}")
    if not np.isfinite(w).all() or (w < 0).any() or abs(w.sum() - 1.0) > 1e-6:
        raise ValueError(
            f"the decomposition needs convex weights (w >= 0, sum 1), got {np.round(w, 6)} "
            f"with sum {w.sum():.6g}; pass a weighted-average method's weights_"
        )
    return w / w.sum()


def _sum_squares(D: np.ndarray) -> np.ndarray:
    """Each member's sum over samples and classes of ``D**2`` ([members, samples, classes]);
    einsum: one pass, far faster than square-then-sum over a short last axis."""
    return np.einsum("mnk,mnk->m", D, D)


def ambiguity_decomposition(
    P: np.ndarray, y: np.ndarray, weights: np.ndarray
) -> AmbiguityDecomposition:
    """Ensemble Brier, weighted mean member Brier and weighted ambiguity of ``sum_i w_i P_i``
    on the labelled samples (module docs); raises if they fail to add up.

    Members with weight 0 drop out of every term, so only the weighted members are touched.
    """
    P, y = labelled(P, y)
    w = _convex_weights(weights, P.shape[0])
    n = P.shape[1]
    if n == 0:
        return AmbiguityDecomposition(np.nan, np.nan, np.nan, 0)
    used = w > 0
    P, w = P[used], w[used]
    Y = np.eye(P.shape[2])[y]  # [samples, classes], one-hot
    pbar = np.tensordot(w, P, axes=1)
    ensemble = float(_sum_squares(pbar[None] - Y[None])[0]) / n
    member = float(w @ _sum_squares(P - Y[None])) / n
    ambiguity = float(w @ _sum_squares(P - pbar[None])) / n
    out = AmbiguityDecomposition(ensemble, member, ambiguity, n)
    if abs(out.residual) > _ADD_UP_TOL * max(1.0, member):
        raise ArithmeticError(
            f"ensemble Brier {ensemble!r} != member Brier {member!r} - ambiguity {ambiguity!r} "
            f"(off by {out.residual:.3g}); the probabilities are not finite or not a mixture"
        )
    return out
