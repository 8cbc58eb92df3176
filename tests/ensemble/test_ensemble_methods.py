"""The shared contract every ensemble method passes, and the study's equations by hand."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from ensemble import METHODS, MethodOptions, create_method
from ensemble.methods import OptunaWeights
from trainers._registry import UnknownNameError


def _options(k: int) -> MethodOptions:
    names = ("hem", "all") if k == 2 else tuple(f"c{i}" for i in range(k))
    return MethodOptions(class_names=names, seed=7, n_trials=15, greedy_rounds=10)


def _data(k: int, seed: int = 0, n: int = 90) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    P = []
    for skill in (2.0, 1.0, 0.2):
        logits = rng.normal(0, 1, (n, k))
        logits[np.arange(n), y] += skill
        e = np.exp(logits)
        P.append(e / e.sum(axis=1, keepdims=True))
    return np.stack(P), y


# ------------------------------------------------------------------------- the contract


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("name", METHODS.names())
class TestMethodContract:
    def test_weights_on_simplex_and_probabilities(self, name: str, k: int) -> None:
        P, y = _data(k)
        m = create_method(name, _options(k))
        assert m.fit(P, y) is m
        assert m.weights_.shape == (3,)
        assert (m.weights_ >= 0).all()
        assert m.weights_.sum() == pytest.approx(1.0)
        proba = m.predict_proba(P)
        assert proba.shape == (90, k)
        assert np.allclose(proba.sum(axis=1), 1.0)
        assert (proba >= 0).all()
        assert np.array_equal(m.predict(P), proba.argmax(axis=1))

    def test_seeded_determinism(self, name: str, k: int) -> None:
        P, y = _data(k)
        a = create_method(name, _options(k)).fit(P, y)
        b = create_method(name, _options(k)).fit(P, y)
        assert np.array_equal(a.weights_, b.weights_)
        assert np.array_equal(a.predict_proba(P), b.predict_proba(P))

    def test_shape_errors_are_clear(self, name: str, k: int) -> None:
        P, y = _data(k)
        m = create_method(name, _options(k))
        with pytest.raises(RuntimeError, match="not fitted yet"):
            m.predict_proba(P)
        with pytest.raises(ValueError, match=r"\[n_members, n_samples, n_classes\]"):
            m.fit(P[0], y)
        with pytest.raises(ValueError, match="one label per sample"):
            m.fit(P, y[:-1])
        with pytest.raises(ValueError, match="class indices"):
            m.fit(P, np.full_like(y, k))
        bad = P.copy()
        bad[0, 0, 0] = np.nan
        with pytest.raises(ValueError, match="finite"):
            m.fit(bad, y)
        m.fit(P, y)
        with pytest.raises(ValueError, match="fitted on 3 and"):
            m.predict_proba(P[:2])

    def test_fit_on_validation_only(self, name: str, k: int) -> None:
        """Weights depend on (P_val, y_val) alone: predicting other data changes nothing."""
        P, y = _data(k, seed=0)
        P_test, _ = _data(k, seed=1, n=40)
        m = create_method(name, _options(k)).fit(P, y)
        before = m.weights_.copy()
        m.predict_proba(P_test)
        m.predict(P_test)
        assert np.array_equal(m.weights_, before)
        refit = create_method(name, _options(k)).fit(P, y)
        assert np.array_equal(refit.weights_, before)


def test_unknown_method_lists_valid_names() -> None:
    with pytest.raises(UnknownNameError, match="valid names: best_single, greedy"):
        create_method("wen_nope")


def test_registry_has_every_method_of_the_brief() -> None:
    assert set(METHODS.names()) == {
        "best_single",
        "sap",
        "wen_acc",
        "wen_auc",
        "wen_f1",
        "wen_kappa",
        "optuna",
        "greedy",
        "stacking",
    }


# --------------------------------------------------------------------- Eq. 1 and Eq. 2 by hand

P_HAND = np.array(
    [
        [[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.8, 0.2]],  # member 0: all right (acc 1, kappa 1)
        [[0.6, 0.4], [0.7, 0.3], [0.2, 0.8], [0.45, 0.55]],  # member 1: acc 0.5, kappa 0
    ]
)
Y_HAND = np.array([0, 1, 1, 0])


def test_sap_is_the_simple_average_eq1() -> None:
    m = create_method("sap").fit(P_HAND, Y_HAND)
    expected = np.array([[0.75, 0.25], [0.55, 0.45], [0.25, 0.75], [0.625, 0.375]])
    assert np.allclose(m.predict_proba(P_HAND), expected)
    assert m.weights_.tolist() == [0.5, 0.5]


def test_wen_acc_weights_by_validation_accuracy_eq2() -> None:
    # W = (1.0, 0.5): P'_j = (1.0 * P_j0 + 0.5 * P_j1) / 1.5
    m = create_method("wen_acc").fit(P_HAND, Y_HAND)
    assert np.allclose(m.weights_, [2 / 3, 1 / 3])
    expected = np.array([[0.8, 0.2], [0.5, 0.5], [0.8 / 3, 2.2 / 3], [2.05 / 3, 0.95 / 3]])
    assert np.allclose(m.predict_proba(P_HAND), expected)


def test_wen_kappa_zero_kappa_gets_no_weight_eq2() -> None:
    # member 1's kappa: p_o = 0.5, p_e = (2*2 + 2*2) / 16 = 0.5 -> kappa 0
    m = create_method("wen_kappa").fit(P_HAND, Y_HAND)
    assert np.allclose(m.weights_, [1.0, 0.0])
    assert np.allclose(m.predict_proba(P_HAND), P_HAND[0])


def test_wen_kappa_clips_negative_kappa_and_says_so() -> None:
    contrary = 1.0 - P_HAND[0]  # always wrong: kappa -1
    P = np.stack([P_HAND[0], contrary, P_HAND[1]])
    with pytest.warns(UserWarning, match="negative validation kappa"):
        m = create_method("wen_kappa").fit(P, Y_HAND)
    assert m.weights_[1] == 0.0
    assert any("clipped to weight 0" in n for n in m.notes_)


def test_wen_falls_back_to_sap_when_every_score_is_zero() -> None:
    P = np.stack([P_HAND[1], P_HAND[1]])
    with pytest.warns(UserWarning, match="equal weights"):
        m = create_method("wen_kappa").fit(P, Y_HAND)
    assert m.weights_.tolist() == [0.5, 0.5]


def test_best_single_picks_the_best_validation_member() -> None:
    m = create_method("best_single").fit(P_HAND[::-1], Y_HAND)
    assert m.weights_.tolist() == [0.0, 1.0]


def test_greedy_selection_with_replacement() -> None:
    P, y = _data(2)
    m = create_method("greedy", MethodOptions(greedy_rounds=20, objective="logloss")).fit(P, y)
    # weights are selection counts (repeats allowed) at the best round
    assert np.array_equal(m.counts_, np.round(m.counts_))
    assert 1 <= m.counts_.sum() <= 20
    assert np.allclose(m.weights_, m.counts_ / m.counts_.sum())
    assert m.weights_[0] == max(m.weights_)  # the strongest member is picked most
    # the first pick alone is the best single member by the objective
    one = create_method("greedy", MethodOptions(greedy_rounds=1, objective="logloss")).fit(P, y)
    assert one.weights_.tolist() == [1.0, 0.0, 0.0]


def test_stacking_weights_are_coefficient_shares() -> None:
    P, y = _data(2)
    m = create_method("stacking").fit(P, y)
    coef = np.abs(m.stacker_.coef_[0])
    assert np.allclose(m.weights_, coef / coef.sum())


def test_optuna_study_resumes_from_sqlite(tmp_path) -> None:
    P, y = _data(2)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    kw = dict(objective="logloss", sampler="tpe", seed=0, storage=storage, study_name="w")
    first = OptunaWeights(n_trials=10, **kw).fit(P, y)
    assert first.n_trials_done_ == 10
    second = OptunaWeights(n_trials=14, **kw).fit(P, y)
    study = optuna.load_study(study_name="w", storage=storage)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 14  # only the 4 missing trials ran
    assert second.best_value_ <= first.best_value_
    again = OptunaWeights(n_trials=14, **kw).fit(P, y)
    assert len(optuna.load_study(study_name="w", storage=storage).trials) == 14
    assert np.array_equal(again.weights_, second.weights_)


def test_optuna_starts_from_the_baselines() -> None:
    P, y = _data(2)
    m = OptunaWeights(n_trials=10, seed=0).fit(P, y)
    # the enqueued one-hot trials include the best member, so the search is never worse
    single = [create_method("best_single", MethodOptions(select_by="logloss")).fit(P, y)]
    from trainers.metrics import score

    assert m.best_value_ <= score(y, single[0].predict_proba(P))["logloss"] + 1e-12


def test_cmaes_without_package_says_how_to_fix() -> None:
    pytest.importorskip("optuna")
    try:
        import cmaes  # noqa: F401
    except ImportError:
        P, y = _data(2)
        with pytest.raises(ValueError, match="pip install cmaes"):
            OptunaWeights(n_trials=3, sampler="cmaes").fit(P, y)
    else:
        P, y = _data(2)
        m = OptunaWeights(n_trials=5, sampler="cmaes").fit(P, y)
        assert m.weights_.sum() == pytest.approx(1.0)


def test_killed_study_keeps_the_trials_copied_so_far(tmp_path, monkeypatch) -> None:
    P, y = _data(2)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    from ensemble.objective import WeightObjective

    calls = {"n": 0}
    real = WeightObjective.__call__

    def dies_at_seventh(self, trial):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt  # the run is killed mid-study
        return real(self, trial)

    monkeypatch.setattr(WeightObjective, "__call__", dies_at_seventh)
    kw = dict(n_trials=10, seed=0, storage=storage, study_name="w", persist_every=3)
    with pytest.raises(KeyboardInterrupt):
        OptunaWeights(**kw).fit(P, y)
    kept = optuna.load_study(study_name="w", storage=storage).trials
    assert len(kept) == 6  # two full chunks of 3 were copied before the kill
    monkeypatch.setattr(WeightObjective, "__call__", real)
    resumed = OptunaWeights(**kw).fit(P, y)
    assert resumed.n_trials_done_ == 10
    assert len(optuna.load_study(study_name="w", storage=storage).trials) == 10


def test_searched_weights_run_over_the_best_members_when_there_are_many() -> None:
    from ensemble.methods import OptunaWeights, member_scores

    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 400)
    skill = np.linspace(0.2, 2.0, 20)[:, None]  # member 19 is the best alone
    margin = skill * (2 * y - 1)[None, :] + rng.normal(0, 1, (20, 400))
    p1 = 1 / (1 + np.exp(-margin))
    P = np.stack([1 - p1, p1], axis=2)
    method = OptunaWeights(n_trials=30, seed=0, max_members=5).fit(P, y)
    best5 = set(np.argsort(member_scores(P, y, "logloss"))[:5])
    assert set(np.flatnonzero(method.weights_)) <= best5
    assert method.weights_.sum() == pytest.approx(1.0)
    assert any("5 of 20 members" in n for n in method.notes_)
    few = OptunaWeights(n_trials=10, seed=0, max_members=25).fit(P, y)
    assert not few.notes_  # 20 members <= 25: searched over all
