"""The honest evaluation protocol.

1. Every method is fitted on validation predictions only (out-of-fold when the search ran
   folds) and reported on the test split; no method ever sees a test label.
2. How much a method overfits its validation predictions is estimated by cross-fitting:
   K subject-grouped folds of the validation cells (``StratifiedGroupKFold``); each fold is
   predicted by the method fitted on the other K-1. Fitted-on and held-out scores are
   reported side by side.
3. The method to export is chosen by a validation score (``select_by``) -- the held-out
   (cross-fitted) one, since the fitted-on score rewards overfitting -- never by test.
4. Optionally (binary), the decision threshold is tuned on the data a method was fitted on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.base import clone

from ensemble._metrics import LOWER_IS_BETTER, GroupedScorer, confusion_metrics, labels_from_probs
from ensemble.members import CandidateRule, SplitArrays
from ensemble.methods import EnsembleMethod, member_scores
from ensemble.stats import encode_subjects
from trainers.metrics import positive_index, score

__all__ = [
    "CandidateSelection",
    "MethodResult",
    "ProtocolResult",
    "choose_method",
    "crossfit_predict",
    "run_protocol",
    "score_predictions",
    "tune_threshold",
]

#: Metrics that do not depend on a decision threshold (tuning one for them means nothing).
THRESHOLD_FREE = frozenset({"auc", "logloss"})
#: Preference among methods that tie on the selection score: the simpler first.
SIMPLICITY = (
    "best_single",
    "sap",
    "wen_acc",
    "wen_auc",
    "wen_f1",
    "wen_kappa",
    "greedy",
    "optuna",
    "stacking",
)


@dataclass
class MethodResult:
    """One method: fitted on validation, its predictions on val, val held-out and test."""

    name: str
    method: EnsembleMethod
    val_probs: np.ndarray
    crossfit_probs: np.ndarray
    crossfit_labels: np.ndarray
    test_probs: np.ndarray | None
    threshold: float | None = None
    crossfit_thresholds: list[float] = field(default_factory=list)
    scores: dict[str, dict[str, float]] = field(default_factory=dict)  # split -> metrics

    def probs(self, split: str) -> np.ndarray | None:
        """Probabilities on a split (``val``, ``val_crossfit``, ``test``)."""
        return {
            "val": self.val_probs,
            "val_crossfit": self.crossfit_probs,
            "test": self.test_probs,
        }[split]

    def labels(self, split: str, pos: int) -> np.ndarray:
        """Predicted classes on a split: argmax, or the tuned threshold where there is one."""
        if split == "val_crossfit":
            return self.crossfit_labels
        probs = self.probs(split)
        if probs is None:
            raise ValueError(f"method {self.name} has no {split!r} predictions")
        return labels_from_probs(probs, self.threshold, pos)


@dataclass
class ProtocolResult:
    """Every method's result, the cross-fitting folds used and the chosen method."""

    results: dict[str, MethodResult]
    crossfit_folds: int
    chosen: str
    chosen_by: str
    why: str
    notes: list[str]
    #: the candidate rule cross-fitting repeated in every fold ("" when members were given)
    nested_selection: str = ""


def score_predictions(
    labels: np.ndarray,
    probs: np.ndarray,
    class_names: Sequence[str] | None,
    pred: np.ndarray | None = None,
) -> dict[str, float]:
    """Study metrics: ``trainers.metrics.score`` for argmax; with explicit ``pred`` (a tuned
    threshold) the same metrics from ``ensemble._metrics`` (tested equal to it)."""
    if pred is None:
        return score(labels, probs, class_names)
    scorer = GroupedScorer(labels, probs, np.zeros(len(labels), np.int64), class_names, pred)
    return {k: float(v[0]) for k, v in scorer.scores(np.ones((1, 1))).items()}


def tune_threshold(
    labels: np.ndarray, probs: np.ndarray, metric: str, class_names: Sequence[str] | None
) -> float:
    """The decision threshold on the positive class's probability that maximises ``metric``.

    Candidates are the midpoints between consecutive distinct probabilities (and 0.5);
    all are scored at once from cumulative confusion counts. Binary only.
    """
    if probs.shape[1] != 2:
        raise ValueError("threshold tuning needs two classes")
    pos = positive_index(class_names, 2)
    s = probs[:, pos]
    y_pos = (labels == pos).astype(np.float64)
    uniq = np.unique(s)
    cands = np.unique(np.r_[0.5, (uniq[1:] + uniq[:-1]) / 2.0, uniq[0], uniq[-1] + 1e-9])
    # cells with s >= t are called positive: count them per candidate via a sorted search
    order = np.argsort(s)
    s_sorted, pos_sorted = s[order], y_pos[order]
    cum_pos = np.r_[0.0, np.cumsum(pos_sorted)]
    below = np.searchsorted(s_sorted, cands, side="left")  # cells called negative
    n, n_pos = len(s), y_pos.sum()
    fn = cum_pos[below]
    tn = below - fn
    tp = n_pos - fn
    fp = (n - below) - tp
    cm = np.zeros((len(cands), 2, 2))
    neg = 1 - pos
    cm[:, neg, neg], cm[:, neg, pos], cm[:, pos, neg], cm[:, pos, pos] = tn, fp, fn, tp
    values = confusion_metrics(cm, pos)[metric]
    values = np.where(np.isnan(values), -np.inf, values)
    # among equal scores prefer the threshold closest to 0.5 (argmax's)
    best = np.flatnonzero(values == values.max())
    return float(cands[best[np.argmin(np.abs(cands[best] - 0.5))]])


def crossfit_predict(
    method: EnsembleMethod,
    val: SplitArrays,
    n_folds: int,
    seed: int,
    threshold_metric: str | None = None,
    class_names: Sequence[str] | None = None,
    selection: CandidateSelection | None = None,
) -> tuple[np.ndarray, np.ndarray, int, list[float]]:
    """Held-out predictions of every validation cell by clones fitted on the other folds.

    Folds are ``StratifiedGroupKFold`` by subject (cells of one subject never straddle a
    fit/held-out boundary). With ``selection``, the members themselves are chosen again in
    every fold, on its fitting rows only (nested: the held-out fold chose nothing). Returns
    probabilities, predicted labels, the folds used and the per-fold thresholds (when
    ``threshold_metric`` is set).
    """
    from sklearn.model_selection import StratifiedGroupKFold

    groups, _ = encode_subjects(val.subject_ids)
    n_folds = _usable_folds(val.y, groups, n_folds)
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    k = val.P.shape[2]
    pos = positive_index(class_names, k)
    probs = np.zeros((val.P.shape[1], k))
    labels = np.zeros(val.P.shape[1], dtype=np.int64)
    thresholds = []
    for fit_idx, held_idx in splitter.split(np.zeros(len(val.y)), val.y, groups):
        P = val.P if selection is None else selection.members_for(fit_idx, val.y, class_names)
        m = _fresh(method).fit(P[:, fit_idx], val.y[fit_idx], groups[fit_idx])
        probs[held_idx] = m.predict_proba(P[:, held_idx])
        t = None
        if threshold_metric is not None:
            t = tune_threshold(
                val.y[fit_idx], m.predict_proba(P[:, fit_idx]), threshold_metric, class_names
            )
            thresholds.append(t)
        labels[held_idx] = labels_from_probs(probs[held_idx], t, pos)
    return probs, labels, n_folds, thresholds


@dataclass(frozen=True)
class CandidateSelection:
    """Every member's validation predictions (``pool``) and the rule that picks the candidates
    (``ensemble.members.CandidateRule``), for choosing members inside each fold."""

    pool: np.ndarray  # [all members, samples, classes], aligned with the candidates' val
    rule: CandidateRule
    #: each fold's choice, by its fitting rows: every method of the cross-fit shares the folds
    _picked: dict[bytes, list[int]] = field(default_factory=dict, compare=False, repr=False)

    def members_for(
        self, fit_idx: np.ndarray, y: np.ndarray, class_names: Sequence[str] | None
    ) -> np.ndarray:
        """The candidates' predictions [candidates, samples, classes], chosen on ``fit_idx``."""
        key = np.asarray(fit_idx).tobytes()
        if key not in self._picked:
            scores = member_scores(self.pool[:, fit_idx], y[fit_idx], self.rule.by, class_names)
            self._picked[key] = self.rule.pick(scores)
        return self.pool[self._picked[key]]


def _score_result(
    r: MethodResult,
    val: SplitArrays,
    test: SplitArrays | None,
    class_names: Sequence[str] | None,
    pos: int,
    tuned: bool,
) -> None:
    """The study metrics of a method on val, held-out val and test (with its threshold)."""
    t = r.threshold
    r.scores["val"] = score_predictions(
        val.y, r.val_probs, class_names, None if t is None else r.labels("val", pos)
    )
    r.scores["val_crossfit"] = score_predictions(
        val.y, r.crossfit_probs, class_names, r.crossfit_labels if tuned else None
    )
    if test is not None:
        r.scores["test"] = score_predictions(
            test.y, r.test_probs, class_names, None if t is None else r.labels("test", pos)
        )


def _usable_folds(y: np.ndarray, groups: np.ndarray, wanted: int) -> int:
    """At most as many folds as the rarest class has subjects (each fold needs one)."""
    per_class = [len(np.unique(groups[y == c])) for c in np.unique(y)]
    usable = min(wanted, min(per_class), len(np.unique(groups)))
    if usable < 2:
        raise ValueError(
            f"cross-fitting needs at least 2 subjects of every class in the validation "
            f"predictions, got {dict(zip(np.unique(y).tolist(), per_class))} subjects per class"
        )
    return usable


def _fresh(method: EnsembleMethod) -> EnsembleMethod:
    """An unfitted copy; a searched method's copy keeps its study in memory, quietly."""
    m = clone(method)
    params = m.get_params()
    if "storage" in params:
        m.set_params(storage=None, study_name=None)
    if "progress" in params:
        m.set_params(progress=False)
    return m


def choose_method(
    scores: dict[str, float], select_by: str, fallback_note: str = ""
) -> tuple[str, str]:
    """The method with the best validation score; ties go to the simpler method."""
    lower = select_by in LOWER_IS_BETTER
    finite = {k: v for k, v in scores.items() if v is not None and math.isfinite(v)}
    if not finite:
        raise ValueError(f"no method has a finite validation {select_by}")
    best_value = min(finite.values()) if lower else max(finite.values())
    tied = [k for k, v in finite.items() if math.isclose(v, best_value, rel_tol=0, abs_tol=1e-12)]
    rank = {name: i for i, name in enumerate(SIMPLICITY)}
    chosen = min(tied, key=lambda k: (rank.get(k, len(rank)), k))
    why = (
        f"best held-out validation {select_by} ({best_value:.4f}){fallback_note}; "
        + ("ties broken towards the simpler method; " if len(tied) > 1 else "")
        + "test scores played no part"
    )
    return chosen, why


def run_protocol(
    methods: dict[str, EnsembleMethod],
    val: SplitArrays,
    test: SplitArrays | None,
    *,
    class_names: Sequence[str] | None,
    crossfit_folds: int = 5,
    seed: int = 0,
    select_by: str = "wfs",
    tune_thresholds: bool = False,
    selection: CandidateSelection | None = None,
    say: Callable[[str], None] = print,
) -> ProtocolResult:
    """Fit each method on validation, cross-fit it, predict test, score all; choose one.

    ``selection`` (every member and the candidate rule) makes the cross-fit choose the
    members again in each fold, so the held-out score that chooses the method is nested over
    member selection too; without it the candidates in ``val`` are taken as given.
    """
    notes: list[str] = []
    k = val.P.shape[2]
    pos = positive_index(class_names, k)
    threshold_metric = None
    if tune_thresholds:
        if k != 2:
            notes.append("threshold tuning skipped: it needs two classes")
        else:
            threshold_metric = "ba" if select_by in THRESHOLD_FREE else select_by
            notes.append(f"decision thresholds tuned on the fitting data by {threshold_metric}")
    groups, _ = encode_subjects(val.subject_ids)
    results: dict[str, MethodResult] = {}
    folds_used = 0
    for name, method in methods.items():
        say(f"fitting {name} on validation predictions")
        method.fit(val.P, val.y, groups)
        val_probs = method.predict_proba(val.P)
        t = None
        if threshold_metric:
            t = tune_threshold(val.y, val_probs, threshold_metric, class_names)
        test_probs = method.predict_proba(test.P) if test is not None else None
        cf_probs, cf_labels, folds_used, cf_t = crossfit_predict(
            method, val, crossfit_folds, seed, threshold_metric, class_names, selection
        )
        r = MethodResult(name, method, val_probs, cf_probs, cf_labels, test_probs, t, cf_t)
        _score_result(r, val, test, class_names, pos, tuned=threshold_metric is not None)
        notes += [f"{name}: {n}" for n in getattr(method, "notes_", [])]
        results[name] = r
    if folds_used < crossfit_folds:
        notes.append(
            f"cross-fitting used {folds_used} folds, not {crossfit_folds}: the validation "
            "predictions have too few subjects of some class"
        )
    chosen, why = choose_method(
        {n: r.scores["val_crossfit"][select_by] for n, r in results.items()},
        select_by,
        f" over {folds_used} subject-grouped folds",
    )
    nested = selection.rule.spec if selection is not None else ""
    if nested:
        notes.append(
            f"cross-fitting chose the members again ({nested}) in every fold, on its fitting rows"
        )
    return ProtocolResult(results, folds_used, chosen, select_by, why, notes, nested)
