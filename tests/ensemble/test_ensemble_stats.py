"""DeLong against worked examples, McNemar, and the subject bootstrap."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from ensemble.stats import (
    bootstrap_metrics,
    clustered_auc_test,
    clustered_mcnemar_test,
    delong_auc_variance,
    delong_test,
    draw_subject_counts,
    encode_subjects,
    holm_adjust,
    mcnemar_test,
    paired_bootstrap,
    subject_permutation_test,
)
from trainers.metrics import score


# ----------------------------------------------------------------------------------- DeLong


def test_delong_variance_hand_computed_example() -> None:
    """Positives X = (0.9, 0.8, 0.4), negatives Y = (0.7, 0.3), worked by hand from DeLong,
    DeLong & Clarke-Pearson (1988, Biometrics 44:837), eqs. for V10, V01, S10, S01:

    psi(X_i, Y_j) = 1 if X_i > Y_j, 1/2 if equal, 0 otherwise.
    V10 = mean_j psi(X_i, .) = (1, 1, 1/2);  V01 = mean_i psi(., Y_j) = (2/3, 1).
    AUC = mean V10 = 5/6.
    S10 = var(V10, ddof 1) = ((1/6)^2 + (1/6)^2 + (1/3)^2) / 2 = 1/12.
    S01 = var(V01, ddof 1) = (1/3)^2 / 2 = 1/18.
    Var(AUC) = S10 / m + S01 / n = (1/12) / 3 + (1/18) / 2 = 1/36 + 1/36 = 1/18.
    """
    labels = np.array([1, 1, 1, 0, 0])
    scores = np.array([0.9, 0.8, 0.4, 0.7, 0.3])
    auc, var = delong_auc_variance(labels, scores)
    assert auc == pytest.approx(5 / 6)
    assert var == pytest.approx(1 / 18)


def test_delong_on_hanley_mcneil_1982_rating_data() -> None:
    """Hanley & McNeil (1982, Radiology 143:29), Table 1: 109 CT images rated 1-5.

    Normal (58): 33, 6, 6, 11, 2 per rating; abnormal (51): 3, 2, 2, 11, 33.
    Published: area 0.893 (the Wilcoxon statistic, ties counted 1/2), SE 0.032 (their
    closed-form approximation). DeLong's empirical SE for the same data is 0.0307, within
    0.002 of the published approximation.
    """
    normal = np.repeat([1, 2, 3, 4, 5], [33, 6, 6, 11, 2])
    abnormal = np.repeat([1, 2, 3, 4, 5], [3, 2, 2, 11, 33])
    labels = np.r_[np.ones(51), np.zeros(58)]
    auc, var = delong_auc_variance(labels, np.r_[abnormal, normal].astype(float))
    assert round(auc, 3) == 0.893
    assert np.sqrt(var) == pytest.approx(0.032, abs=0.002)


def _direct_delong_cov(labels: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """DeLong et al. (1988) by definition: the O(m n) table of psi for each score."""
    comps = []
    for s in (a, b):
        x, y = s[labels == 1], s[labels == 0]
        psi = (x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :])
        comps.append((psi.mean(axis=1), psi.mean(axis=0)))
    v10 = np.stack([c[0] for c in comps])
    v01 = np.stack([c[1] for c in comps])
    return np.cov(v10) / v10.shape[1] + np.cov(v01) / v01.shape[1]


def test_fast_delong_equals_the_definition_for_two_correlated_scores() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 150)
    a = np.round(labels * 0.8 + rng.normal(0, 0.6, 150), 1)  # rounded: ties
    b = 0.5 * a + rng.normal(0, 0.5, 150)
    result = delong_test(labels, a, b)
    cov = _direct_delong_cov(labels, a, b)
    se = np.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    assert result.se == pytest.approx(se)
    assert result.z == pytest.approx(result.diff / se)
    assert result.p == pytest.approx(2 * sps.norm.sf(abs(result.z)))
    assert result.diff > 0  # a carries the signal, b is a noisier copy


def test_delong_identical_scores_show_no_difference() -> None:
    labels = np.array([0, 0, 1, 1, 0, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9])
    r = delong_test(labels, s, s)
    assert (r.diff, r.z, r.p) == (0.0, 0.0, 1.0)


def test_delong_needs_two_of_each_class() -> None:
    with pytest.raises(ValueError, match="at least 2 positive and 2 negative"):
        delong_auc_variance(np.array([1, 0, 0]), np.array([0.9, 0.1, 0.2]))


# ---------------------------------------------------------------------------------- McNemar


def test_mcnemar_exact_binomial_on_discordant_pairs() -> None:
    """8 cells only a gets right, 2 only b: p = 2 * P(X >= 8 | n=10, 1/2) = 2 * 56 / 1024."""
    labels = np.zeros(30, dtype=int)
    pred_a = np.zeros(30, dtype=int)
    pred_b = np.zeros(30, dtype=int)
    pred_b[:8] = 1  # a right, b wrong
    pred_a[8:10] = 1  # b right, a wrong
    pred_a[10:15] = pred_b[10:15] = 1  # both wrong: not discordant
    r = mcnemar_test(labels, pred_a, pred_b)
    assert (r.only_a, r.only_b) == (8, 2)
    assert r.p == pytest.approx(112 / 1024)
    assert "exact binomial" in r.method
    assert mcnemar_test(labels, pred_a, pred_a).p == 1.0


# -------------------------------------------------------------------------------- bootstrap


def _one_bad_subject() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """8 subjects x 5 cells; subject 'a0' (class 0) gets all its cells wrong, the rest right."""
    subjects = np.repeat([f"{c}{i}" for c in "ab" for i in range(4)], 5).astype(object)
    labels = np.repeat([0, 0, 0, 0, 1, 1, 1, 1], 5)
    probs = np.where(labels[:, None] == 1, [0.2, 0.8], [0.7, 0.3])
    probs[:5] = [0.1, 0.9]
    return labels, probs, subjects


def test_bootstrap_resamples_whole_subjects() -> None:
    labels, probs, subjects = _one_bad_subject()
    boot = bootstrap_metrics(labels, probs, subjects, ["hem", "all"], n_boot=400, seed=0)
    # every resample has 8 subjects x 5 cells; the bad subject drawn j times costs 5j cells
    allowed = {1 - 5 * j / 40 for j in range(9)}
    assert set(np.round(boot.samples["acc"], 12)) <= {round(a, 12) for a in allowed}
    assert len(set(boot.samples["acc"])) > 2  # and it does vary
    assert boot.by_subject
    assert boot.point["acc"] == pytest.approx(35 / 40)


def test_bootstrap_intervals_contain_the_point_estimate() -> None:
    rng = np.random.default_rng(0)
    subjects = np.repeat([f"s{i}" for i in range(20)], 10).astype(object)
    labels = np.repeat(np.arange(20) % 2, 10)
    logit = 1.2 * (2 * labels - 1) + rng.normal(0, 1, 200)
    p1 = 1 / (1 + np.exp(-logit))
    probs = np.stack([1 - p1, p1], axis=1)
    boot = bootstrap_metrics(labels, probs, subjects, ["hem", "all"], n_boot=300, seed=1)
    for key, (low, high) in boot.interval().items():
        assert low <= boot.point[key] <= high, key
        assert low < high, key


def test_draw_subject_counts_keeps_strata_sizes() -> None:
    strata = np.array([0, 0, 0, 1, 1, 1, 1])
    counts = draw_subject_counts(7, 200, np.random.default_rng(0), strata)
    assert counts.shape == (200, 7)
    assert (counts[:, :3].sum(axis=1) == 3).all()
    assert (counts[:, 3:].sum(axis=1) == 4).all()
    again = draw_subject_counts(7, 200, np.random.default_rng(0), strata)
    assert np.array_equal(counts, again)


def test_cells_without_subject_are_their_own_group() -> None:
    codes, by_subject = encode_subjects(np.array([None, None, "x", "x"], dtype=object))
    assert len(set(codes[:2])) == 2 and codes[2] == codes[3]
    assert by_subject
    assert not encode_subjects(np.array([None, None], dtype=object))[1]


def test_paired_bootstrap_uses_the_same_resamples() -> None:
    labels, probs, subjects = _one_bad_subject()
    same = paired_bootstrap(labels, probs, probs, subjects, n_boot=100, seed=0)
    assert same["acc"]["diff"] == 0.0 and (same["acc"]["low"], same["acc"]["high"]) == (0, 0)
    fixed = probs.copy()
    fixed[:5] = [0.9, 0.1]  # b fixes the bad subject
    d = paired_bootstrap(labels, fixed, probs, subjects, n_boot=300, seed=0)["acc"]
    assert d["diff"] == pytest.approx(5 / 40)
    # with shared resamples the difference is exactly 5 * (times a0 drawn) / 40 >= 0
    assert d["low"] >= 0.0 and d["high"] <= 1.0


def test_delong_leaves_out_unknown_labels() -> None:
    """Label -1 (unknown) is no positive: the test equals the one on the labelled cells."""
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 80)
    a = labels + rng.normal(0, 1, 80)
    b = labels + rng.normal(0, 1.5, 80)
    masked = labels.copy()
    masked[:15] = -1
    keep = masked >= 0
    want = delong_test(labels[keep], a[keep], b[keep])
    got = delong_test(masked, a, b)
    assert (got.auc_a, got.auc_b, got.se) == pytest.approx((want.auc_a, want.auc_b, want.se))
    auc, var = delong_auc_variance(masked, a)
    assert (auc, var) == pytest.approx(delong_auc_variance(labels[keep], a[keep]))
    with pytest.raises(ValueError, match="labels must be 1 .positive., 0 .negative. or -1"):
        delong_test(np.r_[labels[:-1], 2], a, b)


# --------------------------------------------------------------- clustered AUC (Obuchowski)


def _psi(x: float, y: float) -> float:
    return 1.0 if x > y else 0.5 if x == y else 0.0


def _obuchowski_by_hand(
    labels: np.ndarray, a: np.ndarray, b: np.ndarray, clusters: np.ndarray
) -> tuple[float, float, float]:
    """Obuchowski (1997, Biometrics 53:567), section 2, straight from the formulas: a loop over
    clusters and over every (positive, negative) pair. Returns AUC(a), AUC(b), se(a - b)."""
    ids = sorted(set(clusters[labels >= 0].tolist()))
    big_i = len(ids)
    m_i = [int(((clusters == c) & (labels == 1)).sum()) for c in ids]
    n_i = [int(((clusters == c) & (labels == 0)).sum()) for c in ids]
    big_m, big_n = sum(m_i), sum(n_i)
    i10, i01 = sum(m > 0 for m in m_i), sum(n > 0 for n in n_i)
    thetas, xs, ys = [], [], []
    for s in (a, b):
        pos, neg = s[labels == 1], s[labels == 0]
        theta = sum(_psi(x, y) for x in pos for y in neg) / (big_m * big_n)
        v10 = [
            sum(sum(_psi(x, y) for y in neg) / big_n for x in s[(clusters == c) & (labels == 1)])
            for c in ids
        ]
        v01 = [
            sum(sum(_psi(x, y) for x in pos) / big_m for y in s[(clusters == c) & (labels == 0)])
            for c in ids
        ]
        thetas.append(theta)
        xs.append([v10[i] - m_i[i] * theta for i in range(big_i)])
        ys.append([v01[i] - n_i[i] * theta for i in range(big_i)])

    def cov(r: int, t: int) -> float:
        s10 = i10 / ((i10 - 1) * big_m) * sum(xs[r][i] * xs[t][i] for i in range(big_i))
        s01 = i01 / ((i01 - 1) * big_n) * sum(ys[r][i] * ys[t][i] for i in range(big_i))
        s11_rt = big_i / (big_i - 1) * sum(xs[r][i] * ys[t][i] for i in range(big_i))
        s11_tr = big_i / (big_i - 1) * sum(xs[t][i] * ys[r][i] for i in range(big_i))
        return s10 / big_m + s01 / big_n + (s11_rt + s11_tr) / (big_m * big_n)

    return thetas[0], thetas[1], float(np.sqrt(cov(0, 0) + cov(1, 1) - 2 * cov(0, 1)))


def _clustered_data(seed: int, n_clusters: int = 14) -> tuple[np.ndarray, ...]:
    """Clusters of 1-8 cells with mixed labels, a cluster effect in each score, and ties."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 9, n_clusters)
    clusters = np.repeat([f"s{i:02d}" for i in range(n_clusters)], sizes).astype(object)
    prevalence = np.repeat(rng.uniform(0.1, 0.9, n_clusters), sizes)
    labels = (rng.random(len(clusters)) < prevalence).astype(int)
    effect_a = np.repeat(rng.normal(0, 0.8, n_clusters), sizes)
    effect_b = np.repeat(rng.normal(0, 0.8, n_clusters), sizes)
    a = np.round(labels + effect_a + rng.normal(0, 0.7, len(labels)), 1)
    b = np.round(0.6 * labels + effect_b + rng.normal(0, 0.7, len(labels)), 1)
    return labels, a, b, clusters


@pytest.mark.parametrize("seed", range(4))
def test_clustered_auc_equals_obuchowski_by_hand(seed: int) -> None:
    labels, a, b, clusters = _clustered_data(seed)
    labels[:3] = -1  # unknown cells are left out by both
    auc_a, auc_b, se = _obuchowski_by_hand(labels, a, b, clusters)
    r = clustered_auc_test(labels, a, b, clusters)
    assert (r.auc_a, r.auc_b, r.se) == pytest.approx((auc_a, auc_b, se), abs=1e-12)
    assert r.diff == pytest.approx(auc_a - auc_b, abs=1e-12)
    assert r.z == pytest.approx(r.diff / se)
    assert r.p == pytest.approx(2 * sps.norm.sf(abs(r.diff / se)))
    assert r.n_clusters == len(set(clusters[labels >= 0]))


@pytest.mark.parametrize("seed", range(3))
def test_clustered_auc_with_one_cell_per_cluster_is_delong(seed: int) -> None:
    labels, a, b, _ = _clustered_data(seed, n_clusters=30)
    r = clustered_auc_test(labels, a, b, np.arange(len(labels)))
    d = delong_test(labels, a, b)
    assert r.n_clusters == len(labels)
    for key in ("auc_a", "auc_b", "diff", "se", "z", "p"):
        assert abs(getattr(r, key) - getattr(d, key)) < 1e-10, key


def test_clustered_auc_se_grows_with_subject_effects() -> None:
    """C-NMC-like: one label per subject, 30 subjects x 20 cells, a subject effect in each
    method's score. Cells of a subject move together, so the subject-level se is far larger
    than DeLong's, which counts 600 independent cells."""
    rng = np.random.default_rng(7)
    subjects = np.repeat(np.arange(30), 20)
    labels = np.repeat(np.arange(30) % 2, 20)
    a = labels + np.repeat(rng.normal(0, 1, 30), 20) + rng.normal(0, 0.3, 600)
    b = labels + np.repeat(rng.normal(0, 1, 30), 20) + rng.normal(0, 0.3, 600)
    r = clustered_auc_test(labels, a, b, subjects)
    d = delong_test(labels, a, b)
    assert r.diff == pytest.approx(d.diff)
    assert r.se > 2 * d.se
    assert r.p > d.p


def test_clustered_auc_refuses_too_few_clusters() -> None:
    labels = np.array([1, 1, 0, 0])
    with pytest.raises(ValueError, match="at least 2 clusters with a positive"):
        clustered_auc_test(labels, np.arange(4.0), np.arange(4.0), ["x", "x", "y", "z"])
    with pytest.raises(ValueError, match="one cluster .subject. id per cell"):
        clustered_auc_test(labels, np.arange(4.0), np.arange(4.0), ["x", "y"])


# ------------------------------------------------------------- clustered McNemar (Durkalski)


def _mcnemar_cells(only_a: int, only_b: int, both: int) -> tuple[np.ndarray, np.ndarray]:
    a = np.r_[np.ones(only_a), np.zeros(only_b), np.ones(both)].astype(bool)
    b = np.r_[np.zeros(only_a), np.ones(only_b), np.ones(both)].astype(bool)
    return a, b


def test_clustered_mcnemar_worked_example() -> None:
    """Three subjects, worked by hand from Durkalski et al. (2003), X^2 = [sum d_k]^2 / sum d_k^2
    with d_k = (b_k - c_k) / n_k:
    s1: 4 cells, 2 only a right, 2 concordant  -> d = 2/4 = 0.5
    s2: 2 cells, 1 only b right, 1 concordant  -> d = -1/2 = -0.5
    s3: 5 cells, 3 only a right, 2 concordant  -> d = 3/5 = 0.6
    X^2 = 0.6^2 / (0.25 + 0.25 + 0.36) = 0.36 / 0.86 = 18/43.
    """
    parts = [_mcnemar_cells(2, 0, 2), _mcnemar_cells(0, 1, 1), _mcnemar_cells(3, 0, 2)]
    a = np.concatenate([p[0] for p in parts])
    b = np.concatenate([p[1] for p in parts])
    clusters = np.repeat(["s1", "s2", "s3"], [4, 2, 5]).astype(object)
    r = clustered_mcnemar_test(a, b, clusters)
    assert (r.only_a, r.only_b, r.n_clusters) == (5, 1, 3)
    assert r.statistic == pytest.approx(18 / 43)
    assert r.p == pytest.approx(sps.chi2.sf(18 / 43, 1))


def test_clustered_mcnemar_equals_a_loop_over_clusters() -> None:
    rng = np.random.default_rng(2)
    clusters = rng.integers(0, 12, 150)
    a, b = rng.random(150) < 0.7, rng.random(150) < 0.6
    num = den = 0.0
    for k in np.unique(clusters):
        cells = clusters == k
        d = ((a & ~b)[cells].sum() - (b & ~a)[cells].sum()) / cells.sum()
        num, den = num + d, den + d**2
    r = clustered_mcnemar_test(a, b, clusters)
    assert r.statistic == pytest.approx(num**2 / den)
    assert r.p == pytest.approx(sps.chi2.sf(num**2 / den, 1))


def test_clustered_mcnemar_with_one_cell_per_cluster_is_mcnemar() -> None:
    a, b = _mcnemar_cells(14, 6, 30)
    r = clustered_mcnemar_test(a, b, np.arange(len(a)))
    assert r.statistic == pytest.approx((14 - 6) ** 2 / (14 + 6))
    assert r.p == pytest.approx(sps.chi2.sf(3.2, 1))


def test_clustered_mcnemar_one_cell_per_cluster_matches_statsmodels() -> None:
    from statsmodels.stats import contingency_tables as contingency

    rng = np.random.default_rng(4)
    a, b = rng.random(200) < 0.75, rng.random(200) < 0.65
    table = [[int((a & b).sum()), int((a & ~b).sum())], [int((~a & b).sum()), int((~a & ~b).sum())]]
    want = contingency.mcnemar(table, exact=False, correction=False)
    r = clustered_mcnemar_test(a, b, np.arange(200))
    assert r.statistic == pytest.approx(want.statistic)
    assert r.p == pytest.approx(want.pvalue)


def test_clustered_mcnemar_no_discordance_and_bad_input() -> None:
    a, b = _mcnemar_cells(0, 0, 10)
    r = clustered_mcnemar_test(a, b, np.repeat([0, 1], 5))
    assert (r.statistic, r.p) == (0.0, 1.0)
    with pytest.raises(ValueError, match="correct_b must be one flag per cell"):
        clustered_mcnemar_test(a, np.full(10, 2), np.zeros(10))


# ------------------------------------------------------------- subject permutation test


def _subject_data(
    rng: np.random.Generator, n_subjects: int, cells: int, shift_b: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One label per subject (as C-NMC), a subject effect per method: a and b exchangeable
    within a subject unless ``shift_b`` moves b away from the truth."""
    subjects = np.repeat(np.arange(n_subjects), cells)
    labels = np.repeat(np.arange(n_subjects) % 2, cells)
    sign = 2 * labels - 1

    def probs(shift: float) -> np.ndarray:
        effect = np.repeat(rng.normal(0, 1.0, n_subjects), cells)
        logit = sign * (1.0 - shift) + effect + rng.normal(0, 0.5, len(labels))
        return np.stack([1 / (1 + np.exp(logit)), 1 / (1 + np.exp(-logit))], axis=1)

    return labels, probs(0.0), probs(shift_b), subjects


def test_permutation_identical_methods_give_p_one() -> None:
    labels, pa, _, subjects = _subject_data(np.random.default_rng(0), 10, 6)
    for metric in ("wfs", "auc", "logloss"):
        r = subject_permutation_test(labels, pa, pa, subjects, metric, ["hem", "all"], 200, 0)
        assert (r.diff, r.p, r.n_subjects) == (0.0, 1.0, 10)


def test_permutation_equals_a_loop_over_the_same_swaps() -> None:
    """The p-value by definition: score() of each swapped data set, swaps drawn as documented."""
    rng = np.random.default_rng(1)
    labels, pa, pb, subjects = _subject_data(rng, 8, 5, shift_b=0.5)
    labels[:3] = -1
    preds = (pa.argmax(axis=1), (pb[:, 1] >= 0.3).astype(int))  # a tuned threshold for b
    for metric in ("ba", "auc", "kappa"):
        r = subject_permutation_test(
            labels, pa, pb, subjects, metric, ["hem", "all"], 40, 5, pred_b=preds[1]
        )
        swaps = np.random.default_rng(5).integers(0, 2, (40, 8)).astype(bool)
        observed = _swapped_diff(labels, (pa, pb), preds, subjects, np.zeros(8, bool), metric)
        extreme = 0
        for swap in swaps:
            d = _swapped_diff(labels, (pa, pb), preds, subjects, swap, metric)
            extreme += abs(d) >= abs(observed) - 1e-12
        assert r.diff == pytest.approx(observed, abs=1e-12)
        assert r.p == pytest.approx((1 + extreme) / 41)


def _swapped_diff(
    labels: np.ndarray,
    probs: tuple,
    preds: tuple,
    subjects: np.ndarray,
    swap: np.ndarray,
    metric: str,
) -> float:
    """metric(a') - metric(b') where the subjects flagged in ``swap`` trade a's and b's cells."""
    cell = swap[subjects]
    (pa, pb), (ya, yb) = probs, preds
    a = _score_with_pred(labels, np.where(cell[:, None], pb, pa), np.where(cell, yb, ya), metric)
    b = _score_with_pred(labels, np.where(cell[:, None], pa, pb), np.where(cell, ya, yb), metric)
    return a - b


def _score_with_pred(labels: np.ndarray, probs: np.ndarray, pred: np.ndarray, metric: str) -> float:
    """score() of the probabilities whose argmax is ``pred`` (for threshold metrics) or of
    ``probs`` themselves (AUC, log-loss do not depend on the decision)."""
    if metric in ("auc", "logloss"):
        return score(labels, probs, ["hem", "all"])[metric]
    one_hot = np.eye(2)[pred]
    return score(labels, one_hot, ["hem", "all"])[metric]


def test_permutation_better_on_every_subject_is_significant() -> None:
    labels, pa, _, subjects = _subject_data(np.random.default_rng(2), 30, 8)
    worse = pa.copy()
    for s in range(30):  # b gets two more cells of every subject wrong than a
        cells = np.flatnonzero(subjects == s)
        right = cells[pa[cells].argmax(axis=1) == labels[cells]][:2]
        worse[right] = worse[right][:, ::-1]
    r = subject_permutation_test(labels, pa, worse, subjects, "acc", ["hem", "all"], 999, 0)
    assert r.diff > 0
    assert r.p < 0.01


def test_permutation_null_rejection_rate_near_nominal() -> None:
    """200 simulated studies where a and b are exchangeable per subject, with strong subject
    effects: the subject test rejects at 5% about 5% of the time; the same test with cells as
    the unit (no subject ids) rejects far more often."""
    rng = np.random.default_rng(3)
    by_subject, by_cell = [], []
    for _ in range(200):
        labels, pa, pb, subjects = _subject_data(rng, 12, 10)
        seed = int(rng.integers(1 << 30))
        for out, ids in ((by_subject, subjects), (by_cell, np.full(len(labels), None))):
            r = subject_permutation_test(labels, pa, pb, ids, "ba", ["hem", "all"], 99, seed)
            out.append(r.p <= 0.05)
    assert np.mean(by_subject) <= 0.09
    assert np.mean(by_cell) > 2 * np.mean(by_subject)


def test_permutation_refuses_unknown_metric() -> None:
    labels, pa, pb, subjects = _subject_data(np.random.default_rng(0), 4, 3)
    with pytest.raises(ValueError, match="metric must be one of"):
        subject_permutation_test(labels, pa, pb, subjects, "f2")


# ------------------------------------------------------------------------ multiple testing


def test_holm_by_hand_with_a_nan() -> None:
    """Family of 4 (the NaN is left out): sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 =
    0.02, 0.03, 0.06, 0.04, then made non-decreasing: 0.02, 0.03, 0.06, 0.06."""
    got = holm_adjust([0.01, 0.04, 0.03, np.nan, 0.005])
    assert np.isnan(got[3])
    assert got[[0, 1, 2, 4]] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm_adjust([0.4, 0.9]) == pytest.approx([0.8, 0.9])  # 0.4 x 2, 0.9 x 1
    assert holm_adjust([0.6, 0.7]) == pytest.approx([1.0, 1.0])  # 1.2 capped at 1
    assert np.isnan(holm_adjust([np.nan])).all() and holm_adjust([]).shape == (0,)


def test_holm_refuses_values_outside_zero_one() -> None:
    with pytest.raises(ValueError, match=r"p_values must lie in \[0, 1\]"):
        holm_adjust([0.2, 1.5])
