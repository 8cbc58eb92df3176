"""Classification metrics of the studies, computed with scikit-learn.

>>> import numpy as np
>>> m = score(np.array([0, 1, 1, 0]), np.array([[.9, .1], [.2, .8], [.6, .4], [.3, .7]]))
>>> round(m["acc"], 2), round(m["auc"], 2)
(0.5, 0.75)
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

__all__ = ["METRIC_KEYS", "labelled_rows", "ovr_scores", "positive_index", "score"]

METRIC_KEYS = ("wp", "wr", "wfs", "acc", "ba", "auc", "kappa", "f1", "mcc", "logloss")
POSITIVE_CLASS = "all"


def positive_index(class_names: Sequence[str] | None, n_classes: int) -> int:
    """Index of the positive class: the class named ``all`` (ALL, the cancer) when present, else 1."""
    if class_names is not None:
        lowered = [str(c).lower() for c in class_names]
        if POSITIVE_CLASS in lowered:
            return lowered.index(POSITIVE_CLASS)
    return 1 if n_classes > 1 else 0


def labelled_rows(
    labels: np.ndarray | Sequence[int], probs: np.ndarray, caller: str = "score"
) -> tuple[np.ndarray, np.ndarray]:
    """``labels`` as int64 and ``probs`` as float64 [n, k], keeping rows whose label is known
    (label -1 marks an unlabelled image, e.g. the final test set)."""
    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or len(p) != len(y):
        raise ValueError(
            f"{caller}: probs must be [n_samples, n_classes] with one row per label, got probs "
            f"{p.shape} and {len(y)} labels"
        )
    keep = y >= 0
    return y[keep], p[keep]


def _nan_metrics() -> dict[str, float]:
    return {k: float("nan") for k in METRIC_KEYS}


def score(
    labels: np.ndarray | Sequence[int],
    probs: np.ndarray,
    class_names: Sequence[str] | None = None,
) -> dict[str, float]:
    """Study metrics for class probabilities ``probs`` [n, k] against integer ``labels`` [n].

    Keys: ``wp``, ``wr``, ``wfs`` (precision, recall, F1 weighted by class support), ``acc``,
    ``ba`` (mean per-class recall), ``auc`` (binary: of the positive class; more classes:
    macro one-vs-rest), ``kappa`` (Cohen), ``f1`` (binary: of the positive class; more
    classes: macro F1, since one class's F1 says little there), ``mcc`` (Matthews' correlation; Gorodkin's
    multi-class form) and ``logloss``. Rows with
    label -1 (unknown) are left out; a metric that is undefined (one class only) is NaN.
    """
    from sklearn import metrics as skm

    y, p = labelled_rows(labels, probs)
    k = p.shape[1]
    if len(y) == 0:
        return _nan_metrics()
    if y.max() >= k:
        raise ValueError(f"score: label {int(y.max())} is out of range for {k} classes")
    pred = p.argmax(axis=1)
    all_labels = list(range(k))
    pos = positive_index(class_names, k)
    with warnings.catch_warnings():
        # undefined cases (one class present) are reported as NaN/0 below, not as warnings
        warnings.simplefilter("ignore")
        out = {
            "wp": skm.precision_score(
                y, pred, labels=all_labels, average="weighted", zero_division=0
            ),
            "wr": skm.recall_score(y, pred, labels=all_labels, average="weighted", zero_division=0),
            "wfs": skm.f1_score(y, pred, labels=all_labels, average="weighted", zero_division=0),
            "acc": skm.accuracy_score(y, pred),
            "ba": skm.balanced_accuracy_score(y, pred),
            "kappa": skm.cohen_kappa_score(y, pred, labels=all_labels),
            "mcc": skm.matthews_corrcoef(y, pred),
        }
        if k == 2:
            out["f1"] = skm.f1_score(
                y, pred, labels=all_labels, pos_label=pos, average="binary", zero_division=0
            )
        else:
            out["f1"] = skm.f1_score(y, pred, labels=all_labels, average="macro", zero_division=0)
        out["auc"] = _auc(y, p, pos)
        norm = np.clip(p, 1e-12, 1.0)
        out["logloss"] = skm.log_loss(y, norm / norm.sum(axis=1, keepdims=True), labels=all_labels)
    return {key: float(out[key]) for key in METRIC_KEYS}


def ovr_scores(probs: np.ndarray) -> np.ndarray:
    """Scores for the one-vs-rest AUC of more than two classes.

    ``probs`` unchanged when every row already sums to 1 (scikit-learn's own test,
    ``np.allclose(1, rows)``), else each row divided by its sum. Dividing rows that already
    sum to 1 moves some values by an ulp (0.7 + 0.2 + 0.1 is 1 - 2**-53) and so breaks exact
    ties between cells, which the AUC counts one half.

    >>> bool(ovr_scores(np.array([[0.7, 0.2, 0.1]]))[0, 0] == 0.7)
    True
    """
    p = np.asarray(probs, dtype=np.float64)
    rows = p.sum(axis=1, keepdims=True)
    return p if np.allclose(1.0, rows) else p / rows


def _auc(y: np.ndarray, p: np.ndarray, pos: int) -> float:
    from sklearn.metrics import roc_auc_score

    present = np.unique(y)
    if len(present) < 2:
        return float("nan")
    k = p.shape[1]
    if k == 2:
        return float(roc_auc_score(y == pos, p[:, pos]))
    scores = ovr_scores(p)
    if len(present) < k:
        # A class absent from the truth has no AUC (no positives): the macro mean runs over the
        # classes present, on the same scores as when all are (ensemble._metrics does the same).
        # scikit-learn's multi-class AUC refuses this case, so the mean is taken here.
        return float(np.mean([roc_auc_score(y == c, scores[:, c]) for c in present]))
    return float(roc_auc_score(y, scores, multi_class="ovr", average="macro"))
