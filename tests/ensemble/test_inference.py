"""The paired tests of ``wen ensemble`` on test sets too small for some of them."""

from __future__ import annotations

import numpy as np

from ensemble import create_method
from ensemble.inference import PairedSettings, paired_tests
from ensemble.members import SplitArrays
from ensemble.protocol import run_protocol

NAMES = ("hem", "all")


def _arrays(rng: np.random.Generator, n_subjects: int, cells: int = 6) -> SplitArrays:
    subject = np.repeat(np.arange(n_subjects), cells)
    y = np.repeat(np.arange(n_subjects) % 2, cells)
    z = (2 * y - 1)[None, :] + rng.normal(0, 1, (3, len(y)))
    p1 = 1 / (1 + np.exp(-z))
    P = np.stack([1 - p1, p1], axis=2)
    ids = np.array([f"c{i}" for i in range(len(y))], dtype=object)
    return SplitArrays(P, y, ids, np.array([f"s{i}" for i in subject], dtype=object))


def test_a_test_set_with_one_subject_per_class_still_gets_its_tables() -> None:
    """Obuchowski's test needs two subjects of each class: with one, its row says why and
    has no p-value, and every other test and the adjustment still run (a user's first small
    run must not fail at the statistics)."""
    rng = np.random.default_rng(0)
    val, test = _arrays(rng, 8), _arrays(rng, 2)
    methods = {n: create_method(n) for n in ("best_single", "sap", "wen_kappa")}
    result = run_protocol(methods, val, test, class_names=NAMES, crossfit_folds=2,
                          say=lambda _m: None)  # fmt: skip
    tests = paired_tests(result.results, ("best_single", "wen_kappa"), test, NAMES, 1,
                         PairedSettings(n_boot=50, n_perm=99))  # fmt: skip
    auc = tests[(tests["metric"] == "auc") & (tests["family"] == "headline")]
    assert (auc["test"] == "not computed").all() and auc["p_value"].isna().all()
    assert auc["detail"].str.contains("at least 2 clusters").all()
    assert auc["p_adjusted"].isna().all()
    others = tests[(tests["family"] == "headline") & (tests["metric"] != "auc")]
    assert others["p_value"].notna().all() and others["p_adjusted"].notna().all()
    assert np.isfinite(auc["estimate"]).all()  # the bootstrap difference is still shown
