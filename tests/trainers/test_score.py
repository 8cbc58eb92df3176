"""``trainers.metrics.score`` against scikit-learn on random data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from trainers.metrics import METRIC_KEYS, positive_index, score
from tied_rows import tied_rows


def random_probs(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y] * rng.random((n, 1))
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, p


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binary_matches_sklearn_with_all_as_positive(seed: int) -> None:
    y, p = random_probs(200, 2, seed)
    # class "all" at index 0 here, so the positive class is 0, not the default 1
    m = score(y, p, ["all", "hem"])
    pred = p.argmax(1)
    assert set(m) == set(METRIC_KEYS)
    assert m["wp"] == pytest.approx(skm.precision_score(y, pred, average="weighted"))
    assert m["wr"] == pytest.approx(skm.recall_score(y, pred, average="weighted"))
    assert m["wfs"] == pytest.approx(skm.f1_score(y, pred, average="weighted"))
    assert m["acc"] == pytest.approx(skm.accuracy_score(y, pred))
    recalls = skm.recall_score(y, pred, average=None)
    assert m["ba"] == pytest.approx(recalls.mean())
    assert m["auc"] == pytest.approx(skm.roc_auc_score(y == 0, p[:, 0]))
    assert m["kappa"] == pytest.approx(skm.cohen_kappa_score(y, pred))
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred, pos_label=0))
    assert m["logloss"] == pytest.approx(skm.log_loss(y, p))
    # default class order (hem, all): positive is index 1
    m2 = score(y, p, ["hem", "all"])
    assert m2["f1"] == pytest.approx(skm.f1_score(y, pred, pos_label=1))
    assert m2["auc"] == pytest.approx(skm.roc_auc_score(y, p[:, 1]))


def test_multiclass_uses_macro_ovr_auc_and_macro_f1() -> None:
    y, p = random_probs(300, 4, 7)
    m = score(y, p, ["Benign", "Early", "Pre", "Pro"])
    pred = p.argmax(1)
    assert m["auc"] == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr", average="macro"))
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert m["wfs"] == pytest.approx(skm.f1_score(y, pred, average="weighted"))
    assert m["ba"] == pytest.approx(skm.balanced_accuracy_score(y, pred))


def test_unknown_labels_are_excluded_and_one_class_gives_nan_auc() -> None:
    y, p = random_probs(100, 2, 3)
    y_masked = y.copy()
    y_masked[:30] = -1
    assert score(y_masked, p) == pytest.approx(score(y[30:], p[30:]))
    ones = np.ones(20, dtype=int)
    m = score(ones, p[:20])
    assert math.isnan(m["auc"])
    assert all(math.isnan(v) for v in score(-np.ones(5, int), p[:5]).values())


def test_bad_shapes_fail_clearly() -> None:
    with pytest.raises(ValueError, match="one row per label"):
        score(np.zeros(3, int), np.full((4, 2), 0.5))
    with pytest.raises(ValueError, match="out of range for 2 classes"):
        score(np.array([0, 2]), np.full((2, 2), 0.5))


def test_positive_index() -> None:
    assert positive_index(["hem", "all"], 2) == 1
    assert positive_index(["ALL", "hem"], 2) == 0
    assert positive_index(None, 2) == 1


@pytest.mark.parametrize("seed", [0, 1, 3])
def test_multiclass_auc_keeps_exact_ties(seed: int) -> None:
    """Probabilities that already sum to 1 are scored as they are, as scikit-learn does."""
    y, p = tied_rows(60, seed)
    want = skm.roc_auc_score(y, p, multi_class="ovr", average="macro")
    assert score(y, p)["auc"] == pytest.approx(want, abs=1e-12)


def test_multiclass_auc_with_an_absent_class_averages_the_present_ones() -> None:
    """A class nobody has gets no AUC; the macro mean runs over the classes present, on the
    same scores as when every class is present (rows renormalised only if they do not sum to 1)."""
    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, 80)  # class 3 of 4 absent
    p = rng.dirichlet(np.ones(4), 80) * rng.uniform(0.5, 2.0, (80, 1))  # rows do not sum to 1
    norm = p / p.sum(axis=1, keepdims=True)
    want = np.mean([skm.roc_auc_score(y == c, norm[:, c]) for c in range(3)])
    assert score(y, p)["auc"] == pytest.approx(want, abs=1e-12)
