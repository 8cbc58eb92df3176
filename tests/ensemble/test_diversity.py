"""ensemble.diversity: pairwise disagreement and error correlation on hand-worked examples, and
Krogh & Vedelsby's ambiguity decomposition checked exactly on hand-computed probabilities."""

from __future__ import annotations

import time

import numpy as np
import pytest

from ensemble.diversity import ambiguity_decomposition, labelled, pairwise_diversity

EXACT = 1e-12


# ------------------------------------------------------------------------ pairwise diversity


def test_disagreement_and_error_correlation_by_hand() -> None:
    # 3 members, 4 samples, 2 classes; y = [0, 0, 1, 1]
    # decisions: A = [0, 0, 1, 0]  errors A = [0, 0, 0, 1]
    #            B = [0, 1, 1, 0]  errors B = [0, 1, 0, 1]
    #            C = [1, 1, 0, 1]  errors C = [1, 1, 1, 0]
    y = np.array([0, 0, 1, 1])
    decisions = np.array([[0, 0, 1, 0], [0, 1, 1, 0], [1, 1, 0, 1]])
    P = np.where(decisions[..., None] == np.arange(2), 0.8, 0.2)
    d = pairwise_diversity(P, y)
    # disagreement: A-B differ on sample 1 -> 1/4; A-C on all four -> 1; B-C on 0, 2, 3 -> 3/4
    expected = np.array([[0, 1 / 4, 1], [1 / 4, 0, 3 / 4], [1, 3 / 4, 0]])
    np.testing.assert_allclose(d.disagreement, expected, rtol=0, atol=EXACT)
    # error rates: A 1/4, B 2/4, C 3/4
    np.testing.assert_allclose(d.error_rate, [0.25, 0.5, 0.75], rtol=0, atol=EXACT)
    # Pearson of error vectors eA = [0,0,0,1], eB = [0,1,0,1], eC = [1,1,1,0] (n = 4):
    # A-B: mean(eA eB) = 1/4, cov = 1/4 - 1/4 * 1/2 = 1/8, var A = 3/16, var B = 1/4
    #      rho = (1/8) / sqrt(3/16 * 1/4) = (1/8) / (sqrt(3)/8) = 1/sqrt(3)
    # A-C: mean(eA eC) = 0, cov = 0 - 1/4 * 3/4 = -3/16, var C = 3/16 -> rho = -1
    # B-C: mean(eB eC) = 1/4, cov = 1/4 - 1/2 * 3/4 = -1/8
    #      rho = (-1/8) / sqrt(1/4 * 3/16) = -1/sqrt(3)
    r = 1 / np.sqrt(3)
    expected = np.array([[1, r, -1], [r, 1, -r], [-1, -r, 1]])
    np.testing.assert_allclose(d.error_correlation, expected, rtol=0, atol=EXACT)
    assert d.n == 4 and d.note(0, 1) == ""


def test_three_classes_count_different_wrong_classes_as_disagreement() -> None:
    # y = [2, 2, 0]; A decides [0, 2, 0], B decides [1, 2, 0]: both wrong on sample 0 with
    # different classes -> they disagree there (1/3) yet their errors are identical (rho = 1)
    y = np.array([2, 2, 0])
    decisions = np.array([[0, 2, 0], [1, 2, 0]])
    P = np.where(decisions[..., None] == np.arange(3), 0.6, 0.2)
    d = pairwise_diversity(P, y)
    assert d.disagreement[0, 1] == pytest.approx(1 / 3, abs=EXACT)
    assert d.error_correlation[0, 1] == pytest.approx(1.0, abs=EXACT)


def test_unlabelled_rows_are_left_out() -> None:
    y = np.array([0, -1, 1, -1])
    decisions = np.array([[0, 1, 1, 0], [1, 0, 1, 1]])
    P = np.where(decisions[..., None] == np.arange(2), 0.9, 0.1)
    d = pairwise_diversity(P, y)
    # labelled samples 0 and 2: decisions differ on sample 0 only
    assert d.n == 2 and d.disagreement[0, 1] == pytest.approx(0.5, abs=EXACT)
    P2, y2 = labelled(P, y)
    assert P2.shape == (2, 2, 2) and y2.tolist() == [0, 1]


def test_a_constant_error_vector_gives_nan_with_a_reason() -> None:
    y = np.array([0, 1, 1])
    decisions = np.array([[0, 1, 1], [1, 0, 0], [0, 0, 1]])  # never wrong, always wrong, mixed
    P = np.where(decisions[..., None] == np.arange(2), 0.7, 0.3)
    d = pairwise_diversity(P, y)
    assert np.isnan(d.error_correlation[0, 2]) and np.isnan(d.error_correlation[1, 2])
    assert np.isnan(d.error_correlation[0, 0])
    assert d.disagreement[0, 1] == 1.0  # disagreement stays defined
    assert d.note(0, 2).startswith("member 0 is never wrong on these 3 samples: the corr")
    assert d.note(2, 1, ["a", "b", "c"]).startswith("b is wrong on all 3 samples")
    assert d.note(0, 1).startswith("member 0")


def test_no_labelled_samples_give_nan_not_a_crash() -> None:
    P = np.full((2, 3, 2), 0.5)
    d = pairwise_diversity(P, np.array([-1, -1, -1]))
    assert d.n == 0 and np.isnan(d.disagreement).all() and d.note(0, 1) == "no labelled samples"
    a = ambiguity_decomposition(P, np.array([-1, -1, -1]), np.array([0.5, 0.5]))
    assert a.n == 0 and np.isnan(a.ensemble_brier)


def test_the_matrices_match_a_loop_over_pairs() -> None:
    rng = np.random.default_rng(0)
    P = rng.dirichlet(np.ones(3), size=(6, 200))
    y = rng.integers(0, 3, 200)
    d = pairwise_diversity(P, y)
    dec = P.argmax(axis=2)
    err = (dec != y).astype(float)
    for a in range(6):
        for b in range(6):
            if a != b:
                assert d.disagreement[a, b] == pytest.approx(np.mean(dec[a] != dec[b]), abs=EXACT)
                rho = np.corrcoef(err[a], err[b])[0, 1]
                assert d.error_correlation[a, b] == pytest.approx(rho, abs=1e-12)


# ------------------------------------------------------------------- ambiguity decomposition


def test_ambiguity_two_classes_two_members_by_hand() -> None:
    # y = [0, 1]  -> one-hot Y = [[1, 0], [0, 1]];  weights w = (0.75, 0.25)
    # member 1: p = [[.8, .2], [.4, .6]]   member 2: p = [[.4, .6], [.2, .8]]
    # pbar = .75 p1 + .25 p2 = [[.7, .3], [.35, .65]]
    # ensemble Brier per sample: s0 (.3^2 + .3^2) = .18; s1 (.35^2 + .35^2) = .245 -> mean .2125
    # member 1 Brier: s0 .04 + .04 = .08; s1 .16 + .16 = .32 -> mean .20
    # member 2 Brier: s0 .36 + .36 = .72; s1 .04 + .04 = .08 -> mean .40
    # weighted member Brier: .75 * .20 + .25 * .40 = .25
    # ambiguity member 1: s0 (.1^2 + .1^2) = .02; s1 (.05^2 + .05^2) = .005 -> mean .0125
    # ambiguity member 2: s0 (.3^2 + .3^2) = .18; s1 (.15^2 + .15^2) = .045 -> mean .1125
    # weighted ambiguity: .75 * .0125 + .25 * .1125 = .009375 + .028125 = .0375
    # check: .25 - .0375 = .2125
    P = np.array([[[0.8, 0.2], [0.4, 0.6]], [[0.4, 0.6], [0.2, 0.8]]])
    a = ambiguity_decomposition(P, np.array([0, 1]), np.array([0.75, 0.25]))
    assert a.ensemble_brier == pytest.approx(0.2125, abs=EXACT)
    assert a.member_brier == pytest.approx(0.25, abs=EXACT)
    assert a.ambiguity == pytest.approx(0.0375, abs=EXACT)
    assert abs(a.residual) <= EXACT and a.n == 2


def test_ambiguity_three_classes_three_members_by_hand() -> None:
    # one sample of class 2 (Y = [0, 0, 1]) and one of class 0 (Y = [1, 0, 0]);
    # weights w = (0.5, 0.3, 0.2)
    # sample 0: p1 = [.2, .2, .6], p2 = [.1, .1, .8], p3 = [.5, .3, .2]
    #   pbar = [.1 + .03 + .1, .1 + .03 + .06, .3 + .24 + .04] = [.23, .19, .58]
    #   ensemble: .23^2 + .19^2 + .42^2 = .0529 + .0361 + .1764 = .2654
    #   members: p1 .04 + .04 + .16 = .24; p2 .01 + .01 + .04 = .06; p3 .25 + .09 + .64 = .98
    #   ambiguity: p1 (-.03)^2 + .01^2 + .02^2 = .0009 + .0001 + .0004 = .0014
    #              p2 (-.13)^2 + (-.09)^2 + .22^2 = .0169 + .0081 + .0484 = .0734
    #              p3 .27^2 + .11^2 + (-.38)^2 = .0729 + .0121 + .1444 = .2294
    # sample 1: p1 = [.7, .2, .1], p2 = [.4, .4, .2], p3 = [.9, .05, .05]
    #   pbar = [.35 + .12 + .18, .1 + .12 + .01, .05 + .06 + .01] = [.65, .23, .12]
    #   ensemble: .35^2 + .23^2 + .12^2 = .1225 + .0529 + .0144 = .1898
    #   members: p1 .09 + .04 + .01 = .14; p2 .36 + .16 + .04 = .56; p3 .01 + .0025 + .0025 = .015
    #   ambiguity: p1 .05^2 + (-.03)^2 + (-.02)^2 = .0025 + .0009 + .0004 = .0038
    #              p2 (-.25)^2 + .17^2 + .08^2 = .0625 + .0289 + .0064 = .0978
    #              p3 .25^2 + (-.18)^2 + (-.07)^2 = .0625 + .0324 + .0049 = .0998
    # means over the 2 samples:
    #   ensemble (.2654 + .1898) / 2 = .2276
    #   members p1 .19, p2 .31, p3 .4975 -> .5 * .19 + .3 * .31 + .2 * .4975 = .095 + .093
    #           + .0995 = .2875
    #   ambiguity p1 .0026, p2 .0856, p3 .1646 -> .0013 + .02568 + .03292 = .0599
    #   check: .2875 - .0599 = .2276
    P = np.array(
        [
            [[0.2, 0.2, 0.6], [0.7, 0.2, 0.1]],
            [[0.1, 0.1, 0.8], [0.4, 0.4, 0.2]],
            [[0.5, 0.3, 0.2], [0.9, 0.05, 0.05]],
        ]
    )
    a = ambiguity_decomposition(P, np.array([2, 0]), np.array([0.5, 0.3, 0.2]))
    assert a.ensemble_brier == pytest.approx(0.2276, abs=EXACT)
    assert a.member_brier == pytest.approx(0.2875, abs=EXACT)
    assert a.ambiguity == pytest.approx(0.0599, abs=EXACT)
    assert abs(a.residual) <= EXACT


def test_zero_weight_members_and_unlabelled_rows_drop_out() -> None:
    # the two-member example of above, with a third member of weight 0 and an unlabelled row
    P = np.array(
        [
            [[0.8, 0.2], [0.4, 0.6], [0.5, 0.5]],
            [[0.4, 0.6], [0.2, 0.8], [0.5, 0.5]],
            [[0.0, 1.0], [1.0, 0.0], [0.5, 0.5]],
        ]
    )
    a = ambiguity_decomposition(P, np.array([0, 1, -1]), np.array([0.75, 0.25, 0.0]))
    assert (a.ensemble_brier, a.member_brier, a.n) == (pytest.approx(0.2125, abs=EXACT),
                                                       pytest.approx(0.25, abs=EXACT), 2)  # fmt: skip


def test_a_single_member_has_no_ambiguity() -> None:
    P = np.array([[[0.8, 0.2], [0.4, 0.6]], [[0.4, 0.6], [0.2, 0.8]]])
    a = ambiguity_decomposition(P, np.array([0, 1]), np.array([0.0, 1.0]))
    assert a.ambiguity == 0.0 and a.ensemble_brier == pytest.approx(0.40, abs=EXACT)


def test_the_decomposition_adds_up_on_random_mixtures() -> None:
    rng = np.random.default_rng(1)
    P = rng.dirichlet(np.ones(4), size=(7, 300))
    y = rng.integers(0, 4, 300)
    w = rng.dirichlet(np.ones(7))
    a = ambiguity_decomposition(P, y, w)
    assert abs(a.residual) <= EXACT and a.ambiguity > 0
    assert a.ensemble_brier <= a.member_brier  # never worse than the members on average


@pytest.mark.parametrize(
    ("weights", "match"),
    [
        (np.array([0.5, 0.6]), "sum 1.1"),
        (np.array([1.5, -0.5]), "w >= 0"),
        (np.array([1.0]), "one entry per member"),
    ],
)
def test_non_convex_weights_are_refused(weights: np.ndarray, match: str) -> None:
    P = np.full((2, 2, 2), 0.5)
    with pytest.raises(ValueError, match=match):
        ambiguity_decomposition(P, np.array([0, 1]), weights)


def test_500_members_by_20000_samples_are_fast() -> None:
    rng = np.random.default_rng(0)
    m, n = 500, 20_000
    y = rng.integers(0, 2, n)
    margin = np.linspace(1.5, 0.3, m)[:, None] * (2 * y - 1) + rng.normal(0, 1, (m, n))
    p1 = 1 / (1 + np.exp(-margin))
    P = np.stack([1 - p1, p1], axis=2)
    start = time.perf_counter()
    d = pairwise_diversity(P, y)
    ambiguity_decomposition(P, y, np.full(m, 1 / m))
    elapsed = time.perf_counter() - start
    assert d.disagreement.shape == (m, m)
    assert elapsed < 20, f"{elapsed:.1f} s for 500 x 20,000 (the whole stage has 60 s)"
