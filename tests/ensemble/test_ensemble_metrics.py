"""The vectorised metrics equal trainers.metrics.score; the Optuna objective via FixedTrial."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from sklearn.metrics import roc_auc_score

from ensemble._metrics import GroupedScorer, batched_confusion
from ensemble.objective import WeightObjective
from trainers._atomic import atomic_write_text
from trainers.metrics import score
from tied_rows import tied_rows


def _close(a: float, b: float) -> bool:
    return (np.isnan(a) and np.isnan(b)) or bool(np.isclose(a, b, atol=1e-9))


@pytest.mark.parametrize("k", [2, 3, 4])
def test_grouped_scorer_equals_score_on_resampled_data(k: int) -> None:
    """Weighting subjects by counts == scoring the data with those subjects' cells repeated."""
    rng = np.random.default_rng(k)
    for trial in range(8):
        n = int(rng.integers(20, 200))
        y = rng.integers(0, k, n)
        y[rng.random(n) < 0.05] = -1  # unknown labels are left out, as in score()
        p = rng.dirichlet(np.ones(k), n).astype(np.float32)
        if k == 2 and trial % 2:
            p = np.round(p, 1)  # many ties: AUC must count them one half
            p = p / p.sum(axis=1, keepdims=True)
        g = rng.integers(0, 6, n)
        names = ["hem", "all"] if k == 2 and trial % 3 == 0 else None
        scorer = GroupedScorer(y, p, g, names)
        W = np.vstack([np.ones(scorer.n_groups), rng.integers(0, 3, (2, scorer.n_groups))])
        got = scorer.scores(W)
        for b in range(len(W)):
            idx = np.concatenate(
                [np.repeat(np.flatnonzero(g == s), int(W[b, s])) for s in range(scorer.n_groups)]
            )
            want = score(y[idx], p[idx], names)
            for key, value in want.items():
                assert _close(got[key][b], value), (k, trial, b, key, got[key][b], value)


def test_grouped_scorer_with_explicit_predictions() -> None:
    y = np.array([0, 0, 1, 1])
    p = np.array([[0.7, 0.3], [0.6, 0.4], [0.55, 0.45], [0.2, 0.8]])
    pred = np.array([0, 1, 1, 1])  # as a threshold of 0.35 on the positive class would give
    m = GroupedScorer(y, p, np.arange(4), pred=pred).scores(np.ones((1, 4)))
    assert m["acc"][0] == pytest.approx(0.75)
    assert m["ba"][0] == pytest.approx(0.75)
    assert m["auc"][0] == pytest.approx(1.0)  # AUC does not depend on the threshold


def test_objective_fixed_trial_one_hot_equals_single_member_score() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    P = np.stack([rng.dirichlet([1 + 3 * y_i for y_i in (0, 1)], 300) for _ in range(3)])
    P[1] = np.where(y[:, None] == 1, [0.3, 0.7], [0.8, 0.2]) * 0.5 + P[1] * 0.5
    for metric in ("logloss", "wfs", "ba", "acc", "kappa"):
        objective = WeightObjective(P, y, metric, ["hem", "all"])
        for member in range(3):
            trial = optuna.trial.FixedTrial({f"w{i}": float(i == member) for i in range(3)})
            assert objective(trial) == pytest.approx(score(y, P[member])[metric], abs=1e-9)


def test_objective_normalises_raw_weights_and_scores_mixtures() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 100)
    P = rng.dirichlet([2, 2], (2, 100))
    objective = WeightObjective(P, y, "logloss")
    scaled = objective(optuna.trial.FixedTrial({"w0": 0.2, "w1": 0.6}))
    mix = 0.25 * P[0] + 0.75 * P[1]
    assert scaled == pytest.approx(score(y, mix)["logloss"], abs=1e-9)
    # all-zero raw weights mean "no preference": the uniform mixture
    zero = objective(optuna.trial.FixedTrial({"w0": 0.0, "w1": 0.0}))
    assert zero == pytest.approx(score(y, P.mean(axis=0))["logloss"], abs=1e-9)
    assert objective.direction == "minimize"
    assert WeightObjective(P, y, "wfs").direction == "maximize"
    with pytest.raises(ValueError, match="objective metric must be one of"):
        WeightObjective(P, y, "nope")


def test_atomic_write_leaves_old_file_when_interrupted(tmp_path, monkeypatch) -> None:
    target = tmp_path / "comparison.csv"
    atomic_write_text(target, "old\n")

    def boom(src, dst):
        raise KeyboardInterrupt  # as if the run were killed between write and rename

    monkeypatch.setattr("trainers._atomic.os.replace", boom)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(target, "new\n")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["comparison.csv"]


@pytest.mark.parametrize("seed", [0, 1, 3])
def test_grouped_multiclass_auc_keeps_exact_ties(seed: int) -> None:
    y, p = tied_rows(60, seed)
    want = roc_auc_score(y, p, multi_class="ovr", average="macro")
    got = GroupedScorer(y, p, np.arange(60)).scores(np.ones((1, 60)))["auc"][0]
    assert got == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_grouped_and_score_agree_when_a_class_is_absent(seed: int) -> None:
    """Both average the one-vs-rest AUC over the classes present in the truth, on the same
    scores: rows renormalised only when they do not already sum to 1."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, 70)  # class 3 of 4 absent
    p = rng.dirichlet(np.ones(4), 70) * rng.uniform(0.5, 2.0, (70, 1))
    if seed % 2:
        p = np.round(p / p.sum(axis=1, keepdims=True), 1)  # ties, rows near but not at 1
    got = GroupedScorer(y, p, np.arange(70)).scores(np.ones((1, 70)))["auc"][0]
    assert got == pytest.approx(score(y, p)["auc"], abs=1e-12)


def test_grouped_scorer_scores_a_subset_of_metrics() -> None:
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 2, 50), rng.dirichlet([1, 1], 50)
    scorer = GroupedScorer(y, p, rng.integers(0, 5, 50))
    W = rng.integers(0, 3, (4, scorer.n_groups))
    full = scorer.scores(W)
    some = scorer.scores(W, ("wfs", "auc"))
    assert set(some) == {"wfs", "auc"}
    assert np.array_equal(some["wfs"], full["wfs"]) and np.array_equal(some["auc"], full["auc"])
    with pytest.raises(ValueError, match="keys must be among"):
        scorer.scores(W, ("f2",))


@pytest.mark.parametrize("k", [2, 3])
def test_member_scores_at_once_equal_each_member_scored_alone(k: int) -> None:
    from ensemble.methods import member_scores
    from trainers.metrics import METRIC_KEYS, score

    rng = np.random.default_rng(k)
    P = rng.dirichlet(np.ones(k), size=(4, 300))
    P[1] = np.round(P[1], 1)  # ties, as tiny models on small images give
    P[1] /= P[1].sum(axis=1, keepdims=True)
    y = rng.integers(0, k, 300)
    y[:7] = -1  # unknown labels are left out
    names = ["hem", "all"] if k == 2 else ["a", "b", "c"]
    for metric in METRIC_KEYS:
        at_once = member_scores(P, y, metric, names)
        alone = [score(y[y >= 0], P[m][y >= 0], names)[metric] for m in range(4)]
        np.testing.assert_allclose(at_once, alone, rtol=1e-9, atol=1e-12, err_msg=metric)


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("metric", ["logloss", "wfs", "kappa"])
def test_greedy_additions_score_as_the_explicit_candidate_weights(metric: str, k: int) -> None:
    rng = np.random.default_rng(7)
    P = rng.dirichlet(np.ones(k), size=(6, 200)).astype(np.float32)
    P[2] = np.round(P[2], 1)  # ties between the classes: argmax's and the margin's must agree
    P[2] /= P[2].sum(axis=1, keepdims=True)
    y = rng.integers(0, k, 200)
    objective = WeightObjective(P, y, metric, ["a", "b", "c"][:k])
    for counts in (np.zeros(6), np.array([2.0, 0, 1, 0, 0, 3])):
        explicit = objective.score_many((counts[None, :] + np.eye(6)) / (counts.sum() + 1))
        # float32 sums (as the probabilities are stored) against score_many's float64
        np.testing.assert_allclose(objective.score_additions(counts), explicit, rtol=1e-6)


def test_batched_confusion_counts_as_sklearn() -> None:
    from sklearn.metrics import confusion_matrix

    rng = np.random.default_rng(3)
    for k in (2, 3):
        y = rng.integers(0, k, 500)
        pred = rng.integers(0, k, (4, 500))
        expected = [confusion_matrix(y, p, labels=range(k)) for p in pred]
        np.testing.assert_array_equal(batched_confusion(y, pred, k), expected)
        np.testing.assert_array_equal(batched_confusion(y, pred == 1, k)[:, :, 1], [
            confusion_matrix(y, p == 1, labels=range(k))[:, 1] for p in pred
        ])  # fmt: skip


@pytest.mark.parametrize("k", [2, 3])
def test_grouped_auc_by_subject_pairs_equals_the_cell_sums(
    k: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bootstrap's AUC through subject-pair counts (W^T C W) is the cell-level weighted
    Mann-Whitney sum, ties included, for any subject weights."""
    import ensemble._metrics as metrics

    rng = np.random.default_rng(11)
    n, G = 600, 25
    y = rng.integers(0, k, n)
    p = rng.dirichlet(np.ones(k), n)
    p[:200] = np.round(p[:200], 1)  # tie runs, across subjects
    p[:200] /= p[:200].sum(axis=1, keepdims=True)
    groups = rng.integers(0, G, n)
    W = rng.poisson(1.0, (40, G)).astype(np.float64)
    by_pairs = GroupedScorer(y, p, groups).scores(W, ("auc",))["auc"]
    monkeypatch.setattr(metrics, "PAIR_COUNT_LIMIT", 0)
    by_cells = GroupedScorer(y, p, groups).scores(W, ("auc",))["auc"]
    np.testing.assert_allclose(by_pairs, by_cells, rtol=1e-12)
    ones = GroupedScorer(y, p, groups).scores(np.ones((2, G)), ("auc",))["auc"]
    truth = roc_auc_score(y == 1, p[:, 1]) if k == 2 else roc_auc_score(y, p, multi_class="ovr")
    np.testing.assert_allclose(ones, truth, rtol=1e-12)
