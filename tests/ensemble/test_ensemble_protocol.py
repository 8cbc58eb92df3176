"""The honest protocol: fitted on validation only, cross-fitted by subject, chosen by val."""

from __future__ import annotations

import numpy as np
import pytest

from ensemble import METHODS, MethodOptions, create_method
from ensemble.members import SplitArrays
from ensemble.protocol import choose_method, crossfit_predict, run_protocol, tune_threshold
from ensemble.stats import encode_subjects

NAMES = ("hem", "all")
OPTIONS = MethodOptions(class_names=NAMES, seed=3, n_trials=12, greedy_rounds=10)


def _split(P: np.ndarray, y: np.ndarray, subjects: np.ndarray) -> SplitArrays:
    return SplitArrays(P, y, np.array([f"c{i}" for i in range(len(y))], dtype=object), subjects)


def _val_test(arrays) -> tuple[SplitArrays, SplitArrays]:
    """Subjects 0-3 of each class for validation, 4-5 for test."""
    P, y, subjects = arrays
    is_val = np.array([int(s[-2:]) < 4 for s in subjects])
    return (
        _split(P[:, is_val], y[is_val], subjects[is_val]),
        _split(P[:, ~is_val], y[~is_val], subjects[~is_val]),
    )


def _methods() -> dict:
    return {n: create_method(n, OPTIONS) for n in METHODS.names()}


def test_test_labels_never_change_any_weights(skilled_arrays) -> None:
    val, test = _val_test(skilled_arrays)
    flipped = _split(test.P, 1 - test.y, test.subject_ids)
    a = run_protocol(_methods(), val, test, class_names=NAMES, crossfit_folds=3, say=lambda s: None)
    b = run_protocol(
        _methods(), val, flipped, class_names=NAMES, crossfit_folds=3, say=lambda s: None
    )
    for name in METHODS.names():
        assert np.array_equal(a.results[name].method.weights_, b.results[name].method.weights_)
        assert np.array_equal(a.results[name].test_probs, b.results[name].test_probs)
        assert a.results[name].scores["val_crossfit"] == b.results[name].scores["val_crossfit"]
    assert a.chosen == b.chosen  # the choice never looks at test
    # flipping every test label turns test accuracy around, so test really was scored
    assert a.results["sap"].scores["test"]["acc"] == pytest.approx(
        1 - b.results["sap"].scores["test"]["acc"]
    )


def test_crossfit_holds_out_whole_subjects(skilled_arrays) -> None:
    """A spy method records which cells each fold fits on; no subject straddles folds."""
    P, y, subjects = skilled_arrays
    fits: list[np.ndarray] = []

    class Spy(type(create_method("sap"))):
        def _fit_weights(self, P, y, groups):
            fits.append(groups.copy())
            return super()._fit_weights(P, y, groups)

    probs, labels, folds, _ = crossfit_predict(Spy(), _split(P, y, subjects), 4, seed=0)
    assert folds == 4 and len(fits) == 4
    codes, _ = encode_subjects(subjects)
    all_groups = set(codes)
    held_out = [all_groups - set(g) for g in fits]
    assert all(h for h in held_out)
    assert set().union(*held_out) == all_groups  # every subject held out exactly once
    assert sum(len(h) for h in held_out) == len(all_groups)
    assert np.allclose(probs, P.mean(axis=0))  # SAP needs no fit: same as in-sample


def test_crossfit_folds_are_capped_by_subjects_per_class(skilled_arrays) -> None:
    P, y, subjects = skilled_arrays  # 6 subjects per class
    _, _, folds, _ = crossfit_predict(create_method("sap"), _split(P, y, subjects), 10, seed=0)
    assert folds == 6
    one = np.array(["s"] * len(y), dtype=object)
    with pytest.raises(ValueError, match="at least 2 subjects of every class"):
        crossfit_predict(create_method("sap"), _split(P, y, one), 3, seed=0)


def test_searched_methods_report_fitted_and_held_out_scores(skilled_arrays) -> None:
    P, y, subjects = skilled_arrays
    val = _split(P, y, subjects)
    r = run_protocol(
        {"stacking": create_method("stacking", OPTIONS), "sap": create_method("sap")},
        val,
        None,
        class_names=NAMES,
        crossfit_folds=3,
        say=lambda s: None,
    )
    st = r.results["stacking"]
    assert set(st.scores) == {"val", "val_crossfit"}
    # stacking is fitted on these very labels: its in-sample logloss is the optimistic one
    assert st.scores["val"]["logloss"] < st.scores["val_crossfit"]["logloss"]
    assert r.crossfit_folds == 3


def test_tune_threshold_on_validation() -> None:
    y = np.array([0, 0, 0, 1, 1, 1])
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.65, 0.35], [0.6, 0.4], [0.2, 0.8]])
    t = tune_threshold(y, probs, "ba", NAMES)
    assert 0.3 < t <= 0.35  # argmax (0.5) misses two positives; this threshold misses none
    assert tune_threshold(y, probs, "acc", NAMES) == t  # 6/6 right there too


def test_threshold_flag_tunes_on_val_and_applies_to_test(skilled_arrays) -> None:
    val, test = _val_test(skilled_arrays)
    r = run_protocol(
        {"sap": create_method("sap"), "best_single": create_method("best_single")},
        val,
        test,
        class_names=NAMES,
        crossfit_folds=3,
        select_by="ba",
        tune_thresholds=True,
        say=lambda s: None,
    )
    sap = r.results["sap"]
    assert sap.threshold is not None and len(sap.crossfit_thresholds) == 3
    assert sap.threshold == tune_threshold(val.y, sap.val_probs, "ba", NAMES)
    pred = np.where(sap.test_probs[:, 1] >= sap.threshold, 1, 0)
    assert np.array_equal(sap.labels("test", 1), pred)
    assert sap.scores["test"]["acc"] == pytest.approx((pred == test.y).mean())


def test_choose_method_by_validation_ties_go_to_the_simpler() -> None:
    name, why = choose_method({"optuna": 0.9, "sap": 0.9, "stacking": 0.8}, "wfs")
    assert name == "sap" and "ties broken" in why and "test scores played no part" in why
    assert choose_method({"optuna": 0.30, "sap": 0.35}, "logloss")[0] == "optuna"
    with pytest.raises(ValueError, match="no method has a finite"):
        choose_method({"sap": float("nan")}, "wfs")


def _equal_members(
    rng: np.random.Generator, n_subjects: int = 40, cells: int = 10, members: int = 8
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Members equal by construction: each is the same signal plus its own noise per subject
    (member x subject) and per cell, on subjects with random effects of their own."""
    subject = np.repeat(np.arange(n_subjects), cells)
    y = np.repeat(np.arange(n_subjects) % 2, cells)
    shared = rng.normal(0, 0.8, n_subjects)[subject]
    P = []
    for _ in range(members):
        z = 0.6 * (2 * y - 1) + shared + rng.normal(0, 0.8, n_subjects)[subject]
        p1 = 1 / (1 + np.exp(-(z + rng.normal(0, 1.0, len(y)))))
        P.append(np.stack([1 - p1, p1], axis=1))
    return np.array(P), y, np.array([f"s{i:03d}" for i in subject], dtype=object)


def test_nested_crossfit_removes_the_optimism_of_choosing_members() -> None:
    """Eight members of two backbones, equal by construction. Candidates chosen on the whole
    validation set (best per backbone) make best_single's cross-fitted WFS optimistic; choosing
    them again inside every fold (CandidateSelection) removes that: its mean over 60 studies
    is within noise of the members' true WFS, the plain cross-fit's mean well above."""
    from ensemble.members import CandidateRule
    from ensemble.methods import member_scores
    from ensemble.protocol import CandidateSelection
    from trainers.metrics import score

    rng = np.random.default_rng(0)
    rule = CandidateRule(
        "best-per-backbone", ("a",) * 4 + ("b",) * 4, tuple((f"t{i}",) for i in range(8))
    )
    big_P, big_y, _ = _equal_members(rng, n_subjects=2000)
    true = np.mean([score(big_y, big_P[m], NAMES)["wfs"] for m in range(8)])
    plain, nested = [], []
    for replicate in range(60):
        P, y, subjects = _equal_members(rng)
        chosen = rule.pick(member_scores(P, y, "wfs", NAMES))
        val = _split(P[chosen], y, subjects)
        for out, selection in ((plain, None), (nested, CandidateSelection(P, rule))):
            result = run_protocol(
                {"best_single": create_method("best_single")},
                val,
                None,
                class_names=NAMES,
                crossfit_folds=5,
                seed=replicate,
                selection=selection,
                say=lambda _m: None,
            )
            out.append(result.results["best_single"].scores["val_crossfit"]["wfs"])
    plain, nested = np.array(plain), np.array(nested)
    gap = plain - nested
    assert gap.mean() > 0.01 and gap.mean() > 4 * gap.std() / np.sqrt(len(gap))
    assert plain.mean() - true > 2 * plain.std() / np.sqrt(len(plain))
    assert abs(nested.mean() - true) < 2 * nested.std() / np.sqrt(len(nested))
    assert "chose the members again (best-per-backbone)" in " ".join(result.notes)
