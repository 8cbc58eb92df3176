"""The study metrics for many weightings of one prediction set at once.

``trainers.metrics.score`` (scikit-learn) gives one set of metrics per call; a subject
bootstrap needs 1,000 of them, and a weight search needs thousands of confusion matrices.
scikit-learn has no batched form, so this module computes the same numbers from confusion
matrices and weighted Mann-Whitney sums, vectorised over the batch. Tests check it equals
``trainers.metrics.score`` on random data (binary and multi-class).

Weights are non-negative counts per group (subject): a bootstrap resample that draws a
subject twice counts each of its cells twice, exactly as if the cells were duplicated.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from trainers.metrics import METRIC_KEYS, ovr_scores, positive_index

__all__ = [
    "GroupedScorer",
    "LOWER_IS_BETTER",
    "batched_confusion",
    "confusion_metrics",
    "labels_from_probs",
    "member_score_table",
    "member_scores",
]

#: Metrics where a smaller value is better; every other metric is maximised.
LOWER_IS_BETTER = frozenset({"logloss"})
_CLIP = 1e-12  # as trainers.metrics.score clips before the log
#: GroupedScorer's subject-pair AUC holds cells x groups floats (at most 160 MB)
PAIR_COUNT_LIMIT = 20_000_000
_CHUNK = 128  # resamples scored at once by the cell-level AUC (bounds memory to ~chunk x cells)


def binary_labels(y: np.ndarray, pos: int) -> np.ndarray:
    """1 for the positive class ``pos``, 0 for the other, -1 kept for unknown labels (the
    coding ``ensemble.stats``' AUC tests and ``ensemble.operating`` take)."""
    y = np.asarray(y)
    return np.where(y < 0, -1, (y == pos).astype(np.int64))


def labels_from_probs(
    probs: np.ndarray, threshold: float | None = None, pos: int = 1
) -> np.ndarray:
    """Predicted class per row: argmax, or (binary) ``pos`` where ``probs[:, pos] >= threshold``."""
    if threshold is None:
        return probs.argmax(axis=-1)
    if probs.shape[-1] != 2:
        raise ValueError(
            f"a decision threshold needs two classes, got {probs.shape[-1]}; "
            "leave the threshold unset (argmax) for more classes"
        )
    return np.where(probs[..., pos] >= threshold, pos, 1 - pos)


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with 0 where den == 0 (scikit-learn's zero_division=0)."""
    out = np.zeros(np.broadcast(num, den).shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def confusion_metrics(cm: np.ndarray, pos: int) -> dict[str, np.ndarray]:
    """wp, wr, wfs, acc, ba, kappa, f1 and mcc from confusion matrices ``cm`` [B, k, k]
    (true x pred). MCC is Gorodkin's (2004) multi-class form, scikit-learn's
    ``matthews_corrcoef``: 0 where a denominator is 0."""
    cm = np.asarray(cm, dtype=np.float64)
    k = cm.shape[-1]
    n = cm.sum(axis=(1, 2))
    tp = np.diagonal(cm, axis1=1, axis2=2)
    support = cm.sum(axis=2)
    predicted = cm.sum(axis=1)
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * tp, support + predicted)
    present = support > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = tp.sum(axis=1) / n
        # balanced accuracy: mean recall over classes present in the truth (as scikit-learn)
        ba = (recall * present).sum(axis=1) / present.sum(axis=1)
        pe = (support * predicted).sum(axis=1) / n**2
        kappa = (acc - pe) / (1.0 - pe)
        out = {
            "wp": (support * precision).sum(axis=1) / n,
            "wr": (support * recall).sum(axis=1) / n,
            "wfs": (support * f1).sum(axis=1) / n,
            "acc": acc,
            "ba": ba,
            "kappa": kappa,
            "f1": f1[:, pos] if k == 2 else f1.mean(axis=1),
        }
        c, s = tp.sum(axis=1), n
        cov_pt = c * s - (predicted * support).sum(axis=1)
        cov_pp = s**2 - (predicted**2).sum(axis=1)
        cov_tt = s**2 - (support**2).sum(axis=1)
        denom = np.sqrt(cov_pp * cov_tt)
        out["mcc"] = np.where(denom > 0, cov_pt / np.where(denom > 0, denom, 1.0), 0.0)
    return out


class GroupedScorer:
    """All study metrics of one prediction set under any batch of group (subject) weights.

    Built once per (labels, probabilities, predicted labels, groups); :meth:`scores` then takes
    ``W`` [B, n_groups] and returns each metric as an array of B values. With ``W`` all ones
    it reproduces ``trainers.metrics.score`` (rows labelled -1 are left out, as there).

    >>> import numpy as np
    >>> y = np.array([0, 1, 1, 0]); p = np.array([[.9, .1], [.2, .8], [.6, .4], [.3, .7]])
    >>> s = GroupedScorer(y, p, groups=np.arange(4))
    >>> m = s.scores(np.ones((1, 4)))
    >>> float(m["acc"][0]), float(m["auc"][0])
    (0.5, 0.75)
    """

    def __init__(
        self,
        labels: np.ndarray,
        probs: np.ndarray,
        groups: np.ndarray,
        class_names: Sequence[str] | None = None,
        pred: np.ndarray | None = None,
    ) -> None:
        y = np.asarray(labels, dtype=np.int64)
        p = np.asarray(probs, dtype=np.float64)
        g = np.asarray(groups, dtype=np.int64)
        if p.ndim != 2 or len(p) != len(y) or len(g) != len(y):
            raise ValueError(
                f"GroupedScorer: probs must be [n, k] with one label and one group per row, got "
                f"probs {p.shape}, {len(y)} labels, {len(g)} groups"
            )
        pred = p.argmax(axis=1) if pred is None else np.asarray(pred, dtype=np.int64)
        self.n_groups = int(g.max()) + 1 if len(g) else 0
        keep = y >= 0
        y, p, g, pred = y[keep], p[keep], g[keep], pred[keep]
        k = p.shape[1]
        self.k = k
        self.pos = positive_index(class_names, k)
        G = self.n_groups
        # per-group confusion counts, so a batch of group weights is one matrix product
        self._cm = (
            np.bincount(g * k * k + y * k + pred, minlength=G * k * k)
            .reshape(G, k * k)
            .astype(np.float64)
        )
        clipped = np.clip(p, _CLIP, 1.0)
        p_true = clipped[np.arange(len(y)), y] / clipped.sum(axis=1)
        self._ll = np.bincount(g, weights=-np.log(p_true), minlength=G)
        self._count = np.bincount(g, minlength=G).astype(np.float64)
        # AUC: binary -> the positive class only; more classes -> one-vs-rest per class (macro)
        classes = [self.pos] if k == 2 else list(range(k))
        # more classes: the scores trainers.metrics uses (rows renormalised only when they do
        # not already sum to 1, so exact ties stay ties); a class absent from the (weighted)
        # truth gets NaN and is left out of the macro mean, as there
        auc_p = p if k == 2 else ovr_scores(p)
        self._auc_parts = [self._sorted_scores(auc_p[:, c], y == c, g) for c in classes]
        self._pairs: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray] | None] = {}

    @staticmethod
    def _sorted_scores(
        score: np.ndarray, positive: np.ndarray, g: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        order = np.argsort(score, kind="mergesort")
        s = score[order]
        starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]]) if len(s) else np.zeros(0, int)
        return g[order], positive[order].astype(np.float64), starts

    def _pair_counts(self, part: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """For AUC part ``part``: C [G, G], where C[a, b] counts the (positive cell of group a,
        negative cell of group b) pairs the positive ranks above (ties one half), and each
        group's positive and negative cell counts; None when G x cells is too large to hold.

        Under group weights W the weighted Mann-Whitney numerator is then W^T C W and the
        denominator (W . n_pos)(W . n_neg): a bootstrap of B subject resamples costs B x G^2,
        not B x cells. Exact: the pair counts are the chunked path's sums, regrouped.
        """
        if part not in self._pairs:
            g_sorted, pos_sorted, starts = self._auc_parts[part]
            G = self.n_groups
            if len(g_sorted) * G > PAIR_COUNT_LIMIT:
                self._pairs[part] = None
            else:
                onehot = np.zeros((len(g_sorted), G))
                onehot[np.arange(len(g_sorted)), g_sorted] = 1.0
                pos_oh, neg_oh = onehot * pos_sorted[:, None], onehot * (1 - pos_sorted)[:, None]
                if len(starts) != len(g_sorted):  # tie runs: a run's cells rank as one
                    pos_oh = np.add.reduceat(pos_oh, starts, axis=0)
                    neg_oh = np.add.reduceat(neg_oh, starts, axis=0)
                below = np.cumsum(neg_oh, axis=0) - neg_oh
                C = pos_oh.T @ (below + 0.5 * neg_oh)
                self._pairs[part] = (C, pos_oh.sum(axis=0), neg_oh.sum(axis=0))
        return self._pairs[part]

    def _auc(self, W: np.ndarray) -> np.ndarray:
        """Weighted Mann-Whitney AUC per row of W; ties count one half (as roc_auc_score)."""
        per_class = []
        for part, (g_sorted, pos_sorted, starts) in enumerate(self._auc_parts):
            if len(starts) == 0:
                per_class.append(np.full(len(W), np.nan))
                continue
            pairs = self._pair_counts(part) if len(W) > 1 else None
            if pairs is not None:
                C, n_pos, n_neg = pairs
                num = ((W @ C) * W).sum(axis=1)
                den = (W @ n_pos) * (W @ n_neg)
                with np.errstate(invalid="ignore", divide="ignore"):
                    per_class.append(np.where(den > 0, num / den, np.nan))
                continue
            out = np.empty(len(W))
            for lo in range(0, len(W), _CHUNK):
                cell_w = W[lo : lo + _CHUNK][:, g_sorted]
                if len(starts) == len(g_sorted):  # no ties: every cell is its own run
                    pos_w = cell_w * pos_sorted
                    neg_w = cell_w - pos_w
                else:
                    pos_w = np.add.reduceat(cell_w * pos_sorted, starts, axis=1)
                    neg_w = np.add.reduceat(cell_w, starts, axis=1) - pos_w
                below = np.cumsum(neg_w, axis=1) - neg_w
                num = (pos_w * (below + 0.5 * neg_w)).sum(axis=1)
                den = pos_w.sum(axis=1) * neg_w.sum(axis=1)
                with np.errstate(invalid="ignore", divide="ignore"):
                    out[lo : lo + _CHUNK] = np.where(den > 0, num / den, np.nan)
            per_class.append(out)
        stacked = np.vstack(per_class)
        if len(per_class) == 1:
            return stacked[0]
        # classes absent from a resample are left out of the macro mean (as trainers.metrics)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN column -> NaN, as intended
            return np.nanmean(stacked, axis=0)

    def scores(self, W: np.ndarray, keys: Sequence[str] = METRIC_KEYS) -> dict[str, np.ndarray]:
        """Each metric in ``keys`` (default: all of ``trainers.metrics.METRIC_KEYS``) for each
        row of ``W`` [B, n_groups]; leaving out ``auc`` skips its cell-level sums."""
        W = np.atleast_2d(np.asarray(W, dtype=np.float64))
        if W.shape[1] != self.n_groups:
            raise ValueError(
                f"GroupedScorer.scores: W must have one column per group ({self.n_groups}), "
                f"got shape {W.shape}"
            )
        unknown = sorted(set(keys) - set(METRIC_KEYS))
        if unknown:
            raise ValueError(
                f"GroupedScorer.scores: keys must be among {METRIC_KEYS}, got {unknown}"
            )
        cm = (W @ self._cm).reshape(len(W), self.k, self.k)
        out = confusion_metrics(cm, self.pos)
        with np.errstate(invalid="ignore", divide="ignore"):
            out["logloss"] = (W @ self._ll) / (W @ self._count)
        if "auc" in keys:
            out["auc"] = self._auc(W)
        return {key: out[key] for key in keys}


def batched_confusion(y: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    """Confusion matrices [m, k, k] (true x pred) of each row of predictions ``pred`` [m, n]
    against labels ``y`` [n] (every label in ``range(k)``).

    One matrix product per predicted class but the last (whose counts are the class totals
    less the others'): exact in float32 below 2**24 cells, and faster than one ``bincount``
    over m x n codes when hundreds of candidates are scored every greedy round.
    """
    pred = np.asarray(pred)
    dtype = np.float32 if pred.shape[1] < 2**24 else np.float64
    truth = (np.asarray(y)[:, None] == np.arange(k)[None, :]).astype(dtype)  # [n, k]
    cm = np.empty((len(pred), k, k), dtype=np.int64)
    for c in range(k - 1):
        cm[:, :, c] = np.rint((pred == c).astype(dtype) @ truth)
    cm[:, :, k - 1] = truth.sum(axis=0).astype(np.int64)[None, :] - cm[:, :, : k - 1].sum(axis=2)
    return cm


def member_scores(
    P: np.ndarray, y: np.ndarray, metric: str, class_names: Sequence[str] | None = None
) -> np.ndarray:
    """Each member's own ``metric`` on ``P``/``y`` (the numbers of ``trainers.metrics.score``,
    rows labelled -1 left out), for all members at once: confusion matrices by one
    ``bincount``, a binary AUC by ranks (Mann-Whitney, ties averaged as ``roc_auc_score``
    does); multi-class AUC member by member (``ensemble._metrics.GroupedScorer``). Fits and
    the nested candidate rule repeat it for hundreds of candidates."""
    if metric not in METRIC_KEYS:
        raise ValueError(f"metric must be one of {list(METRIC_KEYS)}, got {metric!r}")
    return member_score_table(P, y, class_names, (metric,))[metric]


def member_score_table(
    P: np.ndarray,
    y: np.ndarray,
    class_names: Sequence[str] | None = None,
    keys: Sequence[str] = METRIC_KEYS,
) -> dict[str, np.ndarray]:
    """:func:`member_scores` for every metric in ``keys`` at once (one confusion count)."""
    P = np.asarray(P)
    y = np.asarray(y, dtype=np.int64)
    keep = y >= 0
    if not keep.all():  # a copy of hundreds of candidates only when some labels are unknown
        P, y = P[:, keep], y[keep]
    k = P.shape[2]
    pos = positive_index(class_names, k)
    out: dict[str, np.ndarray] = {}
    if "auc" in keys:
        out["auc"] = _member_auc(P, y, pos, class_names)
    if "logloss" in keys:
        clipped = np.clip(P.astype(np.float64, copy=False), _CLIP, 1.0)
        p_true = clipped[:, np.arange(len(y)), y] / clipped.sum(axis=2)
        out["logloss"] = -np.log(p_true).mean(axis=1)
    if set(keys) - {"auc", "logloss"}:
        out.update(confusion_metrics(batched_confusion(y, P.argmax(axis=2), k), pos))
    return {key: out[key] for key in keys}


def _member_auc(
    P: np.ndarray, y: np.ndarray, pos: int, class_names: Sequence[str] | None
) -> np.ndarray:
    """Each member's AUC: a sorted search for two classes, GroupedScorer's macro OvR otherwise."""
    if P.shape[2] != 2:
        groups = np.zeros(P.shape[1], dtype=np.int64)
        return np.array(
            [
                GroupedScorer(y, P[m], groups, class_names).scores(np.ones((1, 1)), ("auc",))[
                    "auc"
                ][0]
                for m in range(len(P))
            ]
        )
    positive = y == pos
    n1, n0 = int(positive.sum()), int((~positive).sum())
    if n1 == 0 or n0 == 0:
        return np.full(len(P), np.nan)
    # Mann-Whitney by sorted search (ties count one half, as roc_auc_score): each positive's
    # negatives below it and tied with it. Sorting both sides makes the searches cache-friendly;
    # 2-3x faster than scipy's rankdata over hundreds of candidates, and exact (integer counts).
    neg = np.sort(P[:, ~positive, pos], axis=1)
    pos_scores = np.sort(P[:, positive, pos], axis=1)
    out = np.empty(len(P))
    for m in range(len(P)):
        below = np.searchsorted(neg[m], pos_scores[m], side="left")
        tied = np.searchsorted(neg[m], pos_scores[m], side="right") - below
        out[m] = (int(below.sum()) + 0.5 * int(tied.sum())) / (n1 * n0)
    return out
