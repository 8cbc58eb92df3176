"""Scoring weight vectors on validation predictions: the searched methods' inner loop.

:class:`WeightObjective` holds the validation arrays, prepared once, and scores one weight
vector (an Optuna trial, through ``__call__``) or many at once (:meth:`score_many`, used by
greedy selection). Everything is vectorised numpy; nothing here builds a DataFrame.

>>> import numpy as np, optuna
>>> P = np.array([[[.9, .1], [.2, .8]], [[.4, .6], [.6, .4]]])  # [members, samples, classes]
>>> obj = WeightObjective(P, np.array([0, 1]), metric="acc")
>>> obj(optuna.trial.FixedTrial({"w0": 1.0, "w1": 0.0}))
1.0
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ensemble._metrics import LOWER_IS_BETTER, _CLIP, batched_confusion, confusion_metrics
from trainers.metrics import positive_index

__all__ = ["OBJECTIVE_METRICS", "WeightObjective", "normalise_weights"]

#: Metrics a weight search can optimise.
OBJECTIVE_METRICS = ("logloss", "wfs", "ba", "acc", "kappa", "f1", "wp", "wr")


def normalise_weights(raw: np.ndarray) -> np.ndarray:
    """Non-negative raw weights -> a point on the simplex (uniform when all are zero)."""
    raw = np.clip(np.asarray(raw, dtype=np.float64), 0.0, None)
    total = raw.sum(axis=-1, keepdims=True)
    uniform = np.full_like(raw, 1.0 / raw.shape[-1])
    return np.where(total > 0, raw / np.where(total > 0, total, 1.0), uniform)


class WeightObjective:
    """Validation score of the weighted average of members' probabilities.

    ``P`` is [n_members, n_samples, n_classes], ``labels`` [n_samples]. An Optuna trial
    proposes one raw weight in [0, 1] per member (``w0``, ``w1``, ...); the weights are
    normalised onto the simplex, so every point of the simplex is reachable and the scale of
    the raw weights does not matter.
    """

    def __init__(
        self,
        P: np.ndarray,
        labels: np.ndarray,
        metric: str = "logloss",
        class_names: Sequence[str] | None = None,
    ) -> None:
        if metric not in OBJECTIVE_METRICS:
            raise ValueError(
                f"objective metric must be one of {list(OBJECTIVE_METRICS)}, got {metric!r}"
            )
        # float32 probabilities (as prediction files store them) stay float32: greedy selection
        # scores every candidate each round, and float64 copies double the memory traffic
        P = np.asarray(P)
        self.P = P if P.dtype == np.float32 else P.astype(np.float64)
        self.y = np.asarray(labels, dtype=np.int64)
        self.metric = metric
        self.n_members, self.n_samples, self.k = self.P.shape
        self.pos = positive_index(class_names, self.k)
        rows = np.arange(self.n_samples)
        # logloss needs only the true class's probability and each row's sum (loaded once)
        clipped = np.clip(self.P, _CLIP, 1.0).astype(self.P.dtype, copy=False)
        self._p_true = np.ascontiguousarray(clipped[:, rows, self.y])  # row-major, as summed
        self._row_sum = clipped.sum(axis=2)
        # two classes: argmax(blend + P_i) is class 1 exactly when P_i1 - P_i0 > blend_0 - blend_1
        self._margin = self.P[:, :, 1] - self.P[:, :, 0] if self.k == 2 else None
        self._buffers: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def direction(self) -> str:
        """``minimize`` for logloss, ``maximize`` otherwise (an Optuna study direction)."""
        return "minimize" if self.metric in LOWER_IS_BETTER else "maximize"

    def param_names(self) -> list[str]:
        """The trial parameter of each member's raw weight."""
        return [f"w{i}" for i in range(self.n_members)]

    def weights(self, trial: Any) -> np.ndarray:
        """The normalised weights an Optuna trial proposes."""
        raw = [trial.suggest_float(name, 0.0, 1.0) for name in self.param_names()]
        return normalise_weights(np.array(raw))

    def score_many(self, weights: np.ndarray) -> np.ndarray:
        """Objective value of each row of ``weights`` [m, n_members] (rows on the simplex)."""
        w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
        if w.shape[1] != self.n_members:
            raise ValueError(
                f"weights must have one column per member ({self.n_members}), got {w.shape}"
            )
        if self.metric == "logloss":
            p_true = (w @ self._p_true) / (w @ self._row_sum)
            return -np.log(p_true).mean(axis=1)
        mix = np.einsum("mk,knc->mnc", w, self.P, optimize=True)
        return self._confusion_values(mix.argmax(axis=2))

    def score_additions(self, counts: np.ndarray) -> np.ndarray:
        """Objective value of ``counts + e_i`` (normalised) for every member i at once.

        Greedy selection's inner loop: the current blend is summed once, so scoring all N
        additions costs N x samples, not the N x N x samples of :meth:`score_many` on the
        candidate weight matrix. The normalisation cancels out of both the log-loss ratio and
        the argmax, so the sums need no dividing. Sums are in ``P``'s precision (float32 as
        stored: within 1e-6 of :meth:`score_many`'s float64), the mean in float64.
        """
        c = np.asarray(counts, dtype=self.P.dtype)
        if self.metric == "logloss":
            # two [members, samples] buffers reused every round (fresh arrays of that size
            # cost more in page faults than the arithmetic)
            if self._buffers is None:
                self._buffers = (np.empty_like(self._p_true), np.empty_like(self._row_sum))
            p_true, row_sum = self._buffers
            np.add(self._p_true, (c @ self._p_true)[None, :], out=p_true)
            np.add(self._row_sum, (c @ self._row_sum)[None, :], out=row_sum)
            np.log(np.divide(p_true, row_sum, out=p_true), out=p_true)
            return -p_true.mean(axis=1, dtype=np.float64)
        blend = np.tensordot(c, self.P, axes=1)  # [samples, classes]
        if self._margin is not None:  # ties go to class 0, as argmax's
            return self._confusion_values(self._margin > (blend[:, 0] - blend[:, 1])[None, :])
        return self._confusion_values((blend[None] + self.P).argmax(axis=2))

    def _confusion_values(self, pred: np.ndarray) -> np.ndarray:
        """The (non-logloss) metric of each row of predicted classes ``pred`` [m, samples]."""
        cm = batched_confusion(self.y, pred, self.k)
        return confusion_metrics(cm, self.pos)[self.metric]

    def member_values(self) -> np.ndarray:
        """Each member's own objective value (its one-hot weights), without blending them."""
        if self.metric == "logloss":
            return -np.log(self._p_true / self._row_sum).mean(axis=1, dtype=np.float64)
        return self._confusion_values(self.P.argmax(axis=2))

    def score(self, weights: np.ndarray) -> float:
        """Objective value of one weight vector."""
        return float(self.score_many(np.asarray(weights)[None, :])[0])

    def __call__(self, trial: Any) -> float:
        """Optuna objective: propose weights, return their validation score."""
        return self.score(self.weights(trial))
