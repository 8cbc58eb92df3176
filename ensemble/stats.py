"""Uncertainty of ensemble results: subject bootstrap, paired differences, DeLong, McNemar.

Cells (images) of one subject are correlated, so intervals resample *subjects* with
replacement and take all their cells (the unit the study splits by). DeLong's and McNemar's
tests treat cells as independent; they are reported as the conventional tests beside the
subject-bootstrap interval of the same difference, which is the more honest of the two.
Their clustered counterparts take the subject as the unit: ``clustered_auc_test``
(Obuchowski 1997), ``clustered_mcnemar_test`` (Durkalski et al. 2003) and
``subject_permutation_test`` (any metric); ``holm_adjust`` adjusts a family of p-values.

>>> import numpy as np
>>> auc, var = delong_auc_variance(np.array([1, 1, 1, 0, 0]), np.array([.9, .8, .4, .7, .3]))
>>> round(auc, 4), round(var, 4)
(0.8333, 0.0556)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from ensemble._metrics import GroupedScorer
from trainers.metrics import METRIC_KEYS

__all__ = [
    "BootstrapResult",
    "ClusteredAUCResult",
    "ClusteredMcNemarResult",
    "DeLongResult",
    "McNemarResult",
    "PermutationResult",
    "bootstrap_metrics",
    "clustered_auc_test",
    "clustered_mcnemar_test",
    "delong_auc_variance",
    "delong_test",
    "draw_subject_counts",
    "encode_subjects",
    "holm_adjust",
    "interval",
    "mcnemar_test",
    "paired_bootstrap",
    "subject_permutation_test",
]


# ------------------------------------------------------------------------- subject bootstrap


def encode_subjects(subject_ids: Sequence[object] | np.ndarray) -> tuple[np.ndarray, bool]:
    """Integer code per cell for its subject, and whether real subject ids were present.

    Cells without a subject id (``None``/NaN) each become their own group, so a dataset with
    no subjects falls back to a bootstrap over cells.
    """
    ids = np.asarray(subject_ids, dtype=object)
    missing = np.array([s is None or (isinstance(s, float) and np.isnan(s)) for s in ids], bool)
    keys = np.where(missing, np.array([f"\0cell{i}" for i in range(len(ids))], dtype=object), ids)
    _, codes = np.unique(keys.astype(str), return_inverse=True)
    return codes.astype(np.int64), not missing.all()


def _subject_strata(labels: np.ndarray, codes: np.ndarray, n_groups: int, k: int) -> np.ndarray:
    """Each subject's majority label (its stratum); -1 for subjects with no labelled cell."""
    keep = labels >= 0
    counts = np.zeros((n_groups, k + 1), dtype=np.int64)
    np.add.at(counts, (codes[keep], labels[keep]), 1)
    counts[:, k] = 0
    strata = counts.argmax(axis=1)
    strata[counts.sum(axis=1) == 0] = -1
    return strata


def draw_subject_counts(
    n_groups: int, n_boot: int, rng: np.random.Generator, strata: np.ndarray | None = None
) -> np.ndarray:
    """How often each subject is drawn in each of ``n_boot`` resamples: [n_boot, n_groups] ints.

    Subjects are drawn with replacement, as many as there are, within each stratum when
    ``strata`` is given (every resample then keeps each class's number of subjects, so no
    resample loses a class and AUC stays defined).
    """
    strata = np.zeros(n_groups, dtype=np.int64) if strata is None else np.asarray(strata)
    counts = np.zeros(n_boot * n_groups, dtype=np.int64)
    rows = (np.arange(n_boot, dtype=np.int64) * n_groups)[:, None]
    for value in np.unique(strata):
        members = np.flatnonzero(strata == value)
        picks = members[rng.integers(0, len(members), size=(n_boot, len(members)))]
        counts += np.bincount((rows + picks).ravel(), minlength=n_boot * n_groups)
    return counts.reshape(n_boot, n_groups)


@dataclass
class BootstrapResult:
    """Point estimates and bootstrap samples of every metric for one prediction set."""

    point: dict[str, float]
    samples: dict[str, np.ndarray]
    n_boot: int
    by_subject: bool

    def interval(self, level: float = 0.95) -> dict[str, tuple[float, float]]:
        """Percentile interval of each metric."""
        return {k: interval(v, level) for k, v in self.samples.items()}


def interval(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap ``samples`` (NaN resamples left out)."""
    finite = np.asarray(samples, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(finite, [tail, 100.0 - tail])
    return float(low), float(high)


def _setup(
    labels: np.ndarray,
    subject_ids: Sequence[object] | np.ndarray,
    k: int,
    n_boot: int,
    seed: int,
    stratify: bool,
) -> tuple[np.ndarray, np.ndarray, bool]:
    codes, by_subject = encode_subjects(subject_ids)
    n_groups = int(codes.max()) + 1 if len(codes) else 0
    strata = _subject_strata(np.asarray(labels), codes, n_groups, k) if stratify else None
    counts = draw_subject_counts(n_groups, n_boot, np.random.default_rng(seed), strata)
    return codes, counts, by_subject


def bootstrap_metrics(
    labels: np.ndarray,
    probs: np.ndarray,
    subject_ids: Sequence[object] | np.ndarray,
    class_names: Sequence[str] | None = None,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    pred: np.ndarray | None = None,
    stratify: bool = True,
) -> BootstrapResult:
    """Every study metric on ``n_boot`` subject resamples (stratified by subject class).

    ``pred`` overrides argmax (a tuned decision threshold). Vectorised: the whole bootstrap is
    a few matrix products over per-subject aggregates (``ensemble._metrics``).
    """
    probs = np.asarray(probs)
    codes, counts, by_subject = _setup(labels, subject_ids, probs.shape[1], n_boot, seed, stratify)
    scorer = GroupedScorer(labels, probs, codes, class_names, pred)
    point = {k: float(v[0]) for k, v in scorer.scores(np.ones((1, scorer.n_groups))).items()}
    return BootstrapResult(point, scorer.scores(counts), n_boot, by_subject)


def paired_bootstrap(
    labels: np.ndarray,
    probs_a: np.ndarray,
    probs_b: np.ndarray,
    subject_ids: Sequence[object] | np.ndarray,
    class_names: Sequence[str] | None = None,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    pred_a: np.ndarray | None = None,
    pred_b: np.ndarray | None = None,
    stratify: bool = True,
) -> dict[str, dict[str, float]]:
    """Metric differences a - b with intervals from the *same* subject resamples.

    Returns, per metric: ``a``, ``b``, ``diff``, ``low``, ``high`` (95% percentile interval) and
    ``p`` (two-sided bootstrap p-value: twice the smaller share of resamples on either side
    of 0, capped at 1).
    """
    probs_a, probs_b = np.asarray(probs_a), np.asarray(probs_b)
    if probs_a.shape != probs_b.shape:
        raise ValueError(
            f"paired_bootstrap: both prediction sets must cover the same cells, got shapes "
            f"{probs_a.shape} and {probs_b.shape}"
        )
    codes, counts, _ = _setup(labels, subject_ids, probs_a.shape[1], n_boot, seed, stratify)
    a = GroupedScorer(labels, probs_a, codes, class_names, pred_a)
    b = GroupedScorer(labels, probs_b, codes, class_names, pred_b)
    ones = np.ones((1, a.n_groups))
    pa, pb = a.scores(ones), b.scores(ones)
    sa, sb = a.scores(counts), b.scores(counts)
    out = {}
    for key in sa:
        d = sa[key] - sb[key]
        d = d[np.isfinite(d)]
        low, high = interval(d)
        p = min(1.0, 2.0 * min((d <= 0).mean(), (d >= 0).mean())) if d.size else float("nan")
        out[key] = {
            "a": float(pa[key][0]),
            "b": float(pb[key][0]),
            "diff": float(pa[key][0] - pb[key][0]),
            "low": low,
            "high": high,
            "p": float(p),
        }
    return out


# ------------------------------------------------------------------------------------ DeLong


@dataclass
class DeLongResult:
    """DeLong's test of two correlated AUCs on the same cells."""

    auc_a: float
    auc_b: float
    diff: float
    se: float
    z: float
    p: float


def _structural_components(
    positive_scores: np.ndarray, negative_scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUCs and DeLong's placement values V10 [r, m], V01 [r, n] for r score rows.

    Fast DeLong (Sun & Xu 2014, IEEE SPL 21(11)): midranks of the positives among themselves,
    of the negatives among themselves and of all cells together give every placement value in
    O((m + n) log(m + n)) instead of DeLong's O(m n) pair table. Written by hand because
    neither scipy nor scikit-learn has DeLong's variance; ``scipy.stats.rankdata`` does the
    midranks.
    """
    m, n = positive_scores.shape[1], negative_scores.shape[1]
    tx = sps.rankdata(positive_scores, axis=1)
    ty = sps.rankdata(negative_scores, axis=1)
    tz = sps.rankdata(np.hstack([positive_scores, negative_scores]), axis=1)
    aucs = (tz[:, :m].sum(axis=1) / m - (m + 1) / 2.0) / n
    v10 = (tz[:, :m] - tx) / n  # share of negatives below each positive (ties 1/2)
    v01 = 1.0 - (tz[:, m:] - ty) / m  # share of positives above each negative
    return aucs, v10, v01


def _binary_labels(labels: np.ndarray, caller: str) -> tuple[np.ndarray, np.ndarray]:
    """(known, positive) masks of binary ``labels``: 1 positive, 0 negative, -1 unknown.

    Unknown cells are left out (as ``trainers.metrics.score`` does); any other value is refused
    rather than read as a truth value, which would count -1 as a positive.
    """
    y = np.asarray(labels)
    bad = ~np.isin(y, (-1, 0, 1))
    if bad.any():
        raise ValueError(
            f"{caller}: labels must be 1 (positive), 0 (negative) or -1 (unknown, left out), got "
            f"{np.unique(y[bad])[:5].tolist()}; map the positive class to 1 and the others to 0"
        )
    return y >= 0, y == 1


def _delong_covariance(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    known, positive = _binary_labels(labels, "DeLong")
    y = positive[known]
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))[:, known]
    m, n = int(y.sum()), int((~y).sum())
    if m < 2 or n < 2:
        raise ValueError(
            f"DeLong's variance needs at least 2 positive and 2 negative cells, got {m} and {n}"
        )
    aucs, v10, v01 = _structural_components(s[:, y], s[:, ~y])
    s10 = np.atleast_2d(np.cov(v10))
    s01 = np.atleast_2d(np.cov(v01))
    return aucs, s10 / m + s01 / n


def delong_auc_variance(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """AUC of ``scores`` for binary ``labels`` (1 = positive, -1 = unknown, left out) and DeLong's
    variance of it."""
    aucs, cov = _delong_covariance(labels, scores)
    return float(aucs[0]), float(cov[0, 0])


def delong_test(labels: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray) -> DeLongResult:
    """Two-sided DeLong test of AUC(a) = AUC(b) on the same cells (labels: 1 = positive,
    0 = negative, -1 = unknown: left out)."""
    aucs, cov = _delong_covariance(labels, np.vstack([scores_a, scores_b]))
    diff = float(aucs[0] - aucs[1])
    se, z, p = _normal_test(diff, float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]))
    return DeLongResult(float(aucs[0]), float(aucs[1]), diff, se, z, p)


def _normal_test(diff: float, var: float) -> tuple[float, float, float]:
    """(se, z, two-sided p) of ``diff`` with variance ``var`` under a normal approximation."""
    if var <= 0:
        # identical scores (or a perfect pair): no evidence of a difference
        return 0.0, 0.0, 1.0
    se = float(np.sqrt(var))
    z = diff / se
    return se, float(z), float(2 * sps.norm.sf(abs(z)))


# ------------------------------------------------------------------- clustered AUC (Obuchowski)


@dataclass(frozen=True)
class ClusteredAUCResult:
    """Obuchowski's (1997) test of two correlated AUCs with clusters (subjects) as the unit."""

    auc_a: float
    auc_b: float
    diff: float
    se: float
    z: float
    p: float
    n_clusters: int


def _cluster_codes(clusters: Sequence[object] | np.ndarray, n: int, caller: str) -> np.ndarray:
    """Integer cluster code per cell (``encode_subjects``: a missing id is a cluster of its own)."""
    if len(clusters) != n:
        raise ValueError(
            f"{caller}: clusters must give one cluster (subject) id per cell, got {len(clusters)} "
            f"ids for {n} cells; pass the subject id of every cell"
        )
    return encode_subjects(clusters)[0]


def _cluster_sums(values: np.ndarray, codes: np.ndarray, n_clusters: int) -> np.ndarray:
    """Per-row sums of ``values`` [r, cells] over each cluster: [r, n_clusters]."""
    return np.stack([np.bincount(codes, weights=row, minlength=n_clusters) for row in values])


def _obuchowski_covariance(
    positive: np.ndarray, scores: np.ndarray, codes: np.ndarray
) -> tuple[np.ndarray, np.ndarray, int]:
    """AUCs [r] and their covariance [r, r] by Obuchowski (1997, Biometrics 53:567), eqs. for
    S10, S01, S11 with cluster sums of DeLong's placement values; and the number of clusters.

    Written by hand (no library has it): V10 of a cluster is the sum of its positives' placement
    values, V01 that of its negatives'; with m_i, n_i positives and negatives in cluster i,
    X_i = V10_i - m_i AUC and Y_i = V01_i - n_i AUC, and over I clusters (I10 with a positive,
    I01 with a negative), M positives and N negatives:
    cov = I10/(I10-1) X X'/M^2 + I01/(I01-1) Y Y'/N^2 + I/(I-1) (X Y' + Y X')/(M N).
    """
    _, codes = np.unique(codes, return_inverse=True)
    n_clusters = int(codes.max()) + 1 if len(codes) else 0
    m_i = np.bincount(codes[positive], minlength=n_clusters)
    n_i = np.bincount(codes[~positive], minlength=n_clusters)
    i10, i01 = int((m_i > 0).sum()), int((n_i > 0).sum())
    if i10 < 2 or i01 < 2:
        raise ValueError(
            f"clustered_auc_test: needs at least 2 clusters with a positive cell and 2 with a "
            f"negative one, got {i10} and {i01}; pass the subject id of every cell as clusters"
        )
    aucs, v10, v01 = _structural_components(scores[:, positive], scores[:, ~positive])
    x = _cluster_sums(v10, codes[positive], n_clusters) - m_i * aucs[:, None]
    y = _cluster_sums(v01, codes[~positive], n_clusters) - n_i * aucs[:, None]
    m, n, i = float(m_i.sum()), float(n_i.sum()), n_clusters
    cov = (
        i10 / (i10 - 1) * (x @ x.T) / m**2
        + i01 / (i01 - 1) * (y @ y.T) / n**2
        + i / (i - 1) * (x @ y.T + y @ x.T) / (m * n)
    )
    return aucs, cov, n_clusters


def clustered_auc_test(
    y: np.ndarray,
    score_a: np.ndarray,
    score_b: np.ndarray,
    clusters: Sequence[object] | np.ndarray,
) -> ClusteredAUCResult:
    """Two-sided test of AUC(a) = AUC(b) on the same cells, grouped in clusters (subjects).

    Obuchowski NA (1997). Nonparametric analysis of clustered ROC curve data. Biometrics
    53:567-578. The *cluster* is the independent unit: cells of one subject may be correlated
    in any way, clusters are independent, and a cluster may hold positives, negatives or both.
    The AUC is the usual Mann-Whitney AUC over all cells; only its variance differs from
    DeLong's, to which it reduces when every cluster holds one cell. ``y``: 1 positive,
    0 negative, -1 unknown (left out). z = diff / se, p from ``scipy.stats.norm``.
    """
    known, positive = _binary_labels(y, "clustered_auc_test")
    s = np.vstack([np.asarray(score_a, np.float64), np.asarray(score_b, np.float64)])
    if s.shape[1] != len(known):
        raise ValueError(
            f"clustered_auc_test: score_a and score_b must hold one score per cell of y "
            f"({len(known)}), got shapes {np.shape(score_a)} and {np.shape(score_b)}"
        )
    codes = _cluster_codes(clusters, len(known), "clustered_auc_test")
    aucs, cov, n_clusters = _obuchowski_covariance(positive[known], s[:, known], codes[known])
    diff = float(aucs[0] - aucs[1])
    se, z, p = _normal_test(diff, float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]))
    return ClusteredAUCResult(float(aucs[0]), float(aucs[1]), diff, se, z, p, n_clusters)


# ----------------------------------------------------------------------------------- McNemar


@dataclass
class McNemarResult:
    """McNemar's exact test on the cells where exactly one of two classifiers is right."""

    only_a: int  # a right, b wrong
    only_b: int  # b right, a wrong
    p: float
    method: str = "exact binomial (scipy.stats.binomtest, two-sided)"


def mcnemar_test(labels: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray) -> McNemarResult:
    """McNemar's test of equal accuracy: exact binomial test of the discordant pairs.

    The exact form (no chi-square approximation, no continuity correction) is valid for any
    number of discordant cells; with none the p-value is 1.
    """
    y = np.asarray(labels)
    keep = y >= 0
    right_a = np.asarray(pred_a)[keep] == y[keep]
    right_b = np.asarray(pred_b)[keep] == y[keep]
    only_a = int((right_a & ~right_b).sum())
    only_b = int((right_b & ~right_a).sum())
    if only_a + only_b == 0:
        return McNemarResult(only_a, only_b, 1.0)
    p = sps.binomtest(only_a, only_a + only_b, 0.5, alternative="two-sided").pvalue
    return McNemarResult(only_a, only_b, float(p))


@dataclass(frozen=True)
class ClusteredMcNemarResult:
    """Durkalski et al.'s (2003) clustered McNemar test, clusters (subjects) as the unit."""

    only_a: int  # cells a gets right and b wrong
    only_b: int  # cells b gets right and a wrong
    statistic: float  # chi-square, 1 degree of freedom
    p: float
    n_clusters: int


def _correct_flags(values: np.ndarray, name: str) -> np.ndarray:
    v = np.asarray(values)
    if v.ndim != 1 or not np.isin(v, (0, 1)).all():
        raise ValueError(
            f"clustered_mcnemar_test: {name} must be one flag per cell, True (right) or False "
            f"(wrong); compute it as pred == labels on the labelled cells (labels >= 0)"
        )
    return v.astype(bool)


def clustered_mcnemar_test(
    correct_a: np.ndarray, correct_b: np.ndarray, clusters: Sequence[object] | np.ndarray
) -> ClusteredMcNemarResult:
    """McNemar's test of equal accuracy for cells grouped in clusters (subjects).

    Durkalski VL, Palesch YY, Lipsitz SR, Rust PF (2003). Analysis of clustered matched-pair
    data. Statistics in Medicine 22:2417-2428. The *cluster* is the independent unit; within a
    cluster the cells (pairs of a's and b's verdicts) may be correlated. With b_k cells that
    only a gets right, c_k that only b gets right and n_k cells in cluster k, the statistic
    [sum_k (b_k - c_k) / n_k]^2 / sum_k [(b_k - c_k) / n_k]^2 is chi-square(1) under equal
    accuracy; with one cell per cluster it is McNemar's (b - c)^2 / (b + c) without
    continuity correction. p from ``scipy.stats.chi2``; 1 when no cluster has b_k != c_k.
    """
    a = _correct_flags(correct_a, "correct_a")
    b = _correct_flags(correct_b, "correct_b")
    if len(a) != len(b):
        raise ValueError(
            f"clustered_mcnemar_test: correct_a and correct_b must cover the same cells, got "
            f"{len(a)} and {len(b)} flags"
        )
    codes = _cluster_codes(clusters, len(a), "clustered_mcnemar_test")  # 0 .. n_clusters - 1
    n_k = np.bincount(codes).astype(np.float64)
    only_a, only_b = a & ~b, b & ~a
    # the statistic by hand (Durkalski et al. 2003, eq. for X^2_D): no library has it
    d_k = (np.bincount(codes, weights=only_a) - np.bincount(codes, weights=only_b)) / n_k
    den = float((d_k**2).sum())
    stat = float(d_k.sum() ** 2 / den) if den > 0 else 0.0
    p = float(sps.chi2.sf(stat, df=1)) if den > 0 else 1.0
    return ClusteredMcNemarResult(int(only_a.sum()), int(only_b.sum()), stat, p, len(n_k))


# ------------------------------------------------------------- subject permutation test


@dataclass(frozen=True)
class PermutationResult:
    """Paired permutation test of metric(a) = metric(b), subjects as the exchangeable unit."""

    metric: str
    a: float
    b: float
    diff: float  # a - b
    p: float  # two-sided: (1 + #|perm diff| >= |diff|) / (1 + n_perm)
    n_perm: int
    n_subjects: int


def _swap_scorer(
    y: np.ndarray,
    probs: tuple[np.ndarray, np.ndarray],
    preds: tuple[np.ndarray, np.ndarray],
    codes: np.ndarray,
    class_names: Sequence[str] | None,
) -> GroupedScorer:
    """One scorer over both methods' cells: group s is subject s under a, group G + s under b,
    so a batch of swaps is a batch of 0/1 group weights (the vectorised ``GroupedScorer``)."""
    n_subjects = int(codes.max()) + 1
    return GroupedScorer(
        np.r_[y, y],
        np.vstack(probs),
        np.r_[codes, codes + n_subjects],
        class_names,
        np.r_[preds[0], preds[1]],
    )


def _permutation_inputs(
    y: np.ndarray,
    probs_a: np.ndarray,
    probs_b: np.ndarray,
    metric: str,
    pred_a: np.ndarray | None,
    pred_b: np.ndarray | None,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    if metric not in METRIC_KEYS:
        raise ValueError(
            f"subject_permutation_test: metric must be one of {METRIC_KEYS}, got {metric!r}"
        )
    pa, pb = np.asarray(probs_a, np.float64), np.asarray(probs_b, np.float64)
    if pa.shape != pb.shape or pa.ndim != 2 or len(pa) != len(y):
        raise ValueError(
            f"subject_permutation_test: probs_a and probs_b must both be [cells, classes] with "
            f"one row per label ({len(y)}), got {pa.shape} and {pb.shape}"
        )
    ya = pa.argmax(axis=1) if pred_a is None else np.asarray(pred_a, np.int64)
    yb = pb.argmax(axis=1) if pred_b is None else np.asarray(pred_b, np.int64)
    return (pa, pb), (ya, yb)


def subject_permutation_test(
    y: np.ndarray,
    probs_a: np.ndarray,
    probs_b: np.ndarray,
    subjects: Sequence[object] | np.ndarray,
    metric: str,
    class_names: Sequence[str] | None = None,
    n_perm: int = 1000,
    seed: int = 0,
    pred_a: np.ndarray | None = None,
    pred_b: np.ndarray | None = None,
) -> PermutationResult:
    """Paired permutation test over subjects of any ``trainers.metrics`` metric.

    Fisher RA (1935), The Design of Experiments, sec. 21 (the paired randomisation test); the
    p-value with the observed arrangement counted, (1 + #extreme) / (1 + n_perm), as Phipson B,
    Smyth GK (2010), Statistical Applications in Genetics and Molecular Biology 9(1):39. The
    *subject* is the exchangeable unit: under the null that a and b are interchangeable per
    subject, each permutation swaps a's and b's predictions on all cells of a subject
    together, with probability 1/2 (``rng.integers(0, 2, (n_perm, n_subjects))`` with
    ``np.random.default_rng(seed)``), and the metric of the whole set is recomputed. Cells
    without a subject id swap alone. ``pred_a``/``pred_b`` override argmax (tuned thresholds);
    labels -1 are left out, as in ``trainers.metrics.score``.
    """
    y = np.asarray(y, np.int64)
    probs, preds = _permutation_inputs(y, probs_a, probs_b, metric, pred_a, pred_b)
    codes = _cluster_codes(subjects, len(y), "subject_permutation_test")
    scorer = _swap_scorer(y, probs, preds, codes, class_names)
    n_subjects = scorer.n_groups // 2
    swaps = np.random.default_rng(seed).integers(0, 2, (n_perm, n_subjects)).astype(bool)
    swaps = np.vstack([np.zeros((1, n_subjects), bool), swaps])  # row 0: as observed
    # statistic by hand: metric(a') - metric(b') for each arrangement, from 0/1 group weights
    w_a = np.hstack([~swaps, swaps]).astype(np.float64)
    a = scorer.scores(w_a, (metric,))[metric]
    b = scorer.scores(1.0 - w_a, (metric,))[metric]
    diffs = a - b
    observed, perm = diffs[0], diffs[1:]
    # an arrangement as extreme up to rounding counts (swapping every subject gives -observed)
    extreme = np.abs(perm) >= np.abs(observed) - 1e-12 * max(1.0, abs(observed))
    p = (1 + int(extreme.sum())) / (1 + n_perm) if np.isfinite(observed) else float("nan")
    return PermutationResult(
        metric, float(a[0]), float(b[0]), float(observed), float(p), n_perm, n_subjects
    )


# ------------------------------------------------------------------------ multiple testing


def holm_adjust(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values of one family of tests, NaN-safe.

    Holm S (1979). A simple sequentially rejective multiple test procedure. Scandinavian
    Journal of Statistics 6:65-70. The *test* is the unit: the adjustment holds whatever the
    dependence between the tests. NaN p-values (a test that could not be run) stay NaN and
    are not counted in the family. The step itself is ``statsmodels.stats.multitest.
    multipletests(method="holm")``.
    """
    p = np.asarray(p_values, dtype=np.float64)
    finite = ~np.isnan(p)
    if ((p[finite] < 0) | (p[finite] > 1)).any():
        raise ValueError(
            f"holm_adjust: p_values must lie in [0, 1] (or be NaN for a test not run), got "
            f"{p[finite][(p[finite] < 0) | (p[finite] > 1)][:5].tolist()}"
        )
    from statsmodels.stats.multitest import multipletests  # lazy: statsmodels is slow to import

    out = np.full(p.shape, np.nan)
    if finite.any():
        out[finite] = multipletests(p[finite], method="holm")[1]
    return out
