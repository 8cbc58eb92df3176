"""Ensemble methods: estimators that weight members' class probabilities.

Every method is a scikit-learn style estimator (``sklearn.base.BaseEstimator``):
``__init__`` only stores its parameters, ``fit(P, y, groups=None)`` sets ``weights_`` and
returns ``self``, ``predict_proba(P)`` and ``predict(P)`` apply it. ``P`` is always
[n_members, n_samples, n_classes]. ``weights_`` is non-negative and sums to 1; for
``stacking`` it is each member's share of the stacker's absolute coefficients (an importance,
not a mixing weight). After ``fit``, ``combiner()`` is the method's export spec
(``ensemble.combiners``): what the exported graph, the manifest and the report need, so none of
them branches on a method's name. Methods are chosen by name from :data:`METHODS`.

>>> import numpy as np
>>> P = np.array([[[.9, .1], [.2, .8]], [[.6, .4], [.4, .6]]])
>>> m = create_method("sap").fit(P, np.array([0, 1]))
>>> m.weights_.tolist(), m.predict(P).tolist()
([0.5, 0.5], [0, 1])
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator

from ensemble._metrics import LOWER_IS_BETTER, member_scores
from ensemble.combiners import STACKING_CLIP, Combiner, logistic_stacker, weighted_average
from ensemble.objective import OBJECTIVE_METRICS, WeightObjective, normalise_weights
from trainers._registry import Registry

__all__ = [
    "METHODS",
    "EnsembleMethod",
    "BestSingle",
    "SimpleAverage",
    "ScoreWeighted",
    "OptunaWeights",
    "GreedySelection",
    "Stacking",
    "MethodOptions",
    "SAMPLERS",
    "create_method",
    "open_storage",
    "member_scores",
]


# ----------------------------------------------------------------------------- validation


def check_P(P: Any, name: str = "P") -> np.ndarray:
    """``P`` as a float [n_members, n_samples, n_classes] array, or a clear error.

    float32 (as prediction files store probabilities) stays float32: a float64 copy of 500
    candidates x 20,000 cells is 160 MB per fit and per fold; anything else becomes float64.
    Weighted averages come out in float64 either way (the weights are float64).
    """
    arr = np.asarray(P)
    if arr.dtype != np.float32:
        arr = arr.astype(np.float64)
    if arr.ndim != 3:
        raise ValueError(
            f"{name} must be [n_members, n_samples, n_classes], got {arr.ndim} dimension(s) "
            f"with shape {arr.shape}; stack members with trainers.predictions.to_arrays"
        )
    if min(arr.shape) == 0 or arr.shape[2] < 2:
        raise ValueError(
            f"{name} needs at least 1 member, 1 sample and 2 classes, got shape {arr.shape}"
        )
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite, found NaN or inf")
    return arr


def check_labels(y: Any, n_samples: int, n_classes: int) -> np.ndarray:
    """Integer labels, one per sample, each a class index, or a clear error."""
    arr = np.asarray(y)
    if arr.ndim != 1 or len(arr) != n_samples:
        raise ValueError(
            f"y must be 1-D with one label per sample ({n_samples}), got shape {arr.shape}"
        )
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"y must hold integer class indices, got dtype {arr.dtype}")
    if arr.min() < 0 or arr.max() >= n_classes:
        raise ValueError(
            f"y must be class indices 0..{n_classes - 1} (unknown labels -1 cannot be fitted "
            f"on), got values {int(arr.min())}..{int(arr.max())}"
        )
    return arr.astype(np.int64)


# ----------------------------------------------------------------------------- base class


class EnsembleMethod(BaseEstimator):
    """Base of every method: shape checks, ``predict_proba`` as a weighted average, ``predict``.

    Subclasses implement ``_fit_weights(P, y, groups) -> weights``.
    """

    class_names: Sequence[str] | None = None

    def fit(self, P: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> EnsembleMethod:
        """Fit on validation predictions ``P`` [members, samples, classes] and labels ``y``.

        ``groups`` (subject of each sample) is accepted by every method so the protocol can
        call them alike; methods that do not split their fitting data ignore it.
        """
        P = check_P(P)
        y = check_labels(y, P.shape[1], P.shape[2])
        if groups is not None and len(groups) != P.shape[1]:
            raise ValueError(
                f"groups must have one entry per sample ({P.shape[1]}), got {len(groups)}"
            )
        self.n_members_, self.n_classes_ = P.shape[0], P.shape[2]
        self.notes_: list[str] = []
        w = np.asarray(self._fit_weights(P, y, groups), dtype=np.float64)
        self.weights_ = w
        return self

    def _fit_weights(self, P: np.ndarray, y: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
        raise NotImplementedError

    def _check_fitted_P(self, P: np.ndarray) -> np.ndarray:
        self._check_fitted()
        P = check_P(P)
        if P.shape[0] != self.n_members_ or P.shape[2] != self.n_classes_:
            raise ValueError(
                f"P has {P.shape[0]} member(s) and {P.shape[2]} class(es), the method was "
                f"fitted on {self.n_members_} and {self.n_classes_}; pass the same members in "
                "the same order"
            )
        return P

    def combiner(self) -> Combiner:
        """How the fitted method combines members, as data (``ensemble.combiners``): a
        weighted average of the members' probabilities unless a subclass says otherwise."""
        self._check_fitted()
        return weighted_average()

    def _check_fitted(self) -> None:
        if not hasattr(self, "weights_"):
            raise RuntimeError(
                f"{type(self).__name__} is not fitted yet; call fit(P_val, y_val) first"
            )

    def predict_proba(self, P: np.ndarray) -> np.ndarray:
        """Weighted average of members' probabilities, rows renormalised to sum to 1 (Eq. 1/2)."""
        P = self._check_fitted_P(P)
        mix = np.tensordot(self.weights_, P, axes=1)
        return mix / mix.sum(axis=1, keepdims=True)

    def predict(self, P: np.ndarray) -> np.ndarray:
        """The class with the highest ensemble probability."""
        return self.predict_proba(P).argmax(axis=1)


# ---------------------------------------------------------------------------- the methods


class BestSingle(EnsembleMethod):
    """All weight on the member with the best validation ``metric`` (ties: the first)."""

    def __init__(self, metric: str = "wfs", class_names: Sequence[str] | None = None) -> None:
        self.metric = metric
        self.class_names = class_names

    def _fit_weights(self, P: np.ndarray, y: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
        s = member_scores(P, y, self.metric, self.class_names)
        s = np.where(np.isnan(s), np.inf if self.metric in LOWER_IS_BETTER else -np.inf, s)
        best = int(np.argmin(s) if self.metric in LOWER_IS_BETTER else np.argmax(s))
        w = np.zeros(len(P))
        w[best] = 1.0
        return w


class SimpleAverage(EnsembleMethod):
    """SAP (Eq. 1): the simple average of members' probabilities, renormalised over classes."""

    def __init__(self, class_names: Sequence[str] | None = None) -> None:
        self.class_names = class_names

    def _fit_weights(self, P: np.ndarray, y: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
        return np.full(len(P), 1.0 / len(P))


class ScoreWeighted(EnsembleMethod):
    """WEN (Eq. 2): P'_j = sum_k W_k P_jk / sum_k W_k, W_k = member k's own validation score.

    ``metric`` is acc, auc, f1 or kappa. A negative kappa (worse than chance) is clipped to 0,
    so that member gets no weight (a negative weight would not be a probability); the clip is
    noted in ``notes_`` and warned. If every score is 0 the weights fall back to uniform (SAP).
    """

    def __init__(self, metric: str = "kappa", class_names: Sequence[str] | None = None) -> None:
        self.metric = metric
        self.class_names = class_names

    def _fit_weights(self, P: np.ndarray, y: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
        if self.metric not in ("acc", "auc", "f1", "kappa"):
            raise ValueError(f"WEN metric must be acc, auc, f1 or kappa, got {self.metric!r}")
        s = np.nan_to_num(member_scores(P, y, self.metric, self.class_names), nan=0.0)
        if (s < 0).any():
            msg = (
                f"wen_{self.metric}: member(s) {np.flatnonzero(s < 0).tolist()} have negative "
                f"validation {self.metric} {np.round(s[s < 0], 4).tolist()}; clipped to weight 0"
            )
            self.notes_.append(msg)
            warnings.warn(msg, stacklevel=3)
            s = np.clip(s, 0.0, None)
        if s.sum() <= 0:
            msg = f"wen_{self.metric}: every member scores 0; falling back to equal weights (SAP)"
            self.notes_.append(msg)
            warnings.warn(msg, stacklevel=3)
        return normalise_weights(s)


#: Optuna samplers the searched weights can use, each a factory taking the seed.
SAMPLERS: Registry[Callable[[int], Any]] = Registry("sampler", key="ensemble.sampler")


@SAMPLERS.register("tpe")
def _tpe(seed: int) -> Any:
    import optuna

    # multivariate TPE models the weights jointly (they interact through normalisation)
    return optuna.samplers.TPESampler(seed=seed, multivariate=True)


@SAMPLERS.register("cmaes")
def _cmaes(seed: int) -> Any:
    import optuna

    try:
        import cmaes  # noqa: F401  (Optuna's CmaEsSampler needs it at sampling time)
    except ImportError:
        raise ValueError(
            "ensemble.sampler 'cmaes' needs the `cmaes` package, which is not installed; "
            "install it (pip install cmaes) or use --sampler tpe"
        ) from None
    return optuna.samplers.CmaEsSampler(seed=seed)


@SAMPLERS.register("random")
def _random(seed: int) -> Any:
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


def open_storage(url: str | None) -> Any:
    """An Optuna RDB storage for ``url`` (None: in memory).

    SQLite files get write-ahead logging with ``synchronous=NORMAL``: a killed process loses
    nothing committed and the file never corrupts, while commits skip the per-transaction
    fsync that otherwise dominates a fast objective's trial time.
    """
    if url is None:
        return None
    import optuna

    storage = optuna.storages.RDBStorage(url)
    if url.startswith("sqlite"):
        from sqlalchemy import event

        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        event.listen(storage.engine, "connect", _pragmas)
        storage.engine.dispose()  # reconnect so every pooled connection gets the pragmas
    return storage


class OptunaWeights(EnsembleMethod):
    """Weights searched on the simplex by an Optuna study of the validation ``objective``.

    One raw weight in [0, 1] per member, normalised (``WeightObjective``). The first trials are
    the uniform weights (SAP) and, when the budget allows, each member alone, so the search
    starts from the baselines.

    The study runs in memory (a database round trip per suggested value would cost more than
    the vectorised objective); with ``storage`` (an SQLAlchemy URL such as
    ``sqlite:///RUN/ensemble/study.db``) its finished trials are copied there every
    ``persist_every`` trials and at the end, viewable with ``optuna-dashboard``. A re-run loads
    the stored trials into the sampler's history and runs only the trials still missing; a
    killed run loses at most the trials since the last copy.

    With more than ``max_members`` members (snapshots give hundreds) the search runs over the
    ``max_members`` best by their own validation ``objective`` on the fitting data (the rest
    weigh 0, and ``notes_`` says so): TPE's cost grows with the dimensions, and a few hundred
    trials cannot explore a 500-dimensional simplex anyway.
    """

    def __init__(
        self,
        objective: str = "logloss",
        n_trials: int = 200,
        sampler: str = "tpe",
        seed: int = 0,
        storage: str | None = None,
        study_name: str | None = None,
        progress: bool = False,
        persist_every: int = 50,
        class_names: Sequence[str] | None = None,
        max_members: int = 12,
    ) -> None:
        self.objective = objective
        self.max_members = max_members
        self.n_trials = n_trials
        self.sampler = sampler
        self.seed = seed
        self.storage = storage
        self.study_name = study_name
        self.progress = progress
        self.persist_every = persist_every
        self.class_names = class_names

    def _fit_weights(self, P: np.ndarray, y: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
        keep = self._preselect(P, y)
        weights = np.zeros(len(P))
        weights[keep] = self._search(P[keep], y)
        return weights

    def _preselect(self, P: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The members the search runs over: all, or the ``max_members`` best alone."""
        if self.max_members < 1:
            raise ValueError(f"`max_members >= 1` must hold, got {self.max_members}")
        if len(P) <= self.max_members:
            return np.arange(len(P))
        objective = WeightObjective(P, y, self.objective, self.class_names)
        values = objective.member_values()
        order = np.argsort(values if objective.direction == "minimize" else -values, kind="stable")
        keep = np.sort(order[: self.max_members])
        self.notes_.append(
            f"weights searched over the {self.max_members} of {len(P)} members with the best "
            f"{self.objective} of their own on the fitting data (the others weigh 0)"
        )
        return keep

    def _search(self, P: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The study over ``P``'s members; the best trial's normalised weights."""
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        objective = WeightObjective(P, y, self.objective, self.class_names)
        names = objective.param_names()
        study = optuna.create_study(
            direction=objective.direction, sampler=SAMPLERS.get(self.sampler)(self.seed)
        )
        stored = self._stored_study(objective.direction)
        done = 0
        if stored is not None:
            complete = stored.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if complete and set(complete[0].params) != set(names):
                raise ValueError(
                    f"study {stored.study_name!r} in {self.storage} was run over parameters "
                    f"{sorted(complete[0].params)}, these members need {names}; delete the "
                    "study or give a different study name"
                )
            study.add_trials(complete)
            done = len(complete)
        if done == 0:
            self._enqueue_baselines(study, names)
        remaining = max(0, self.n_trials - done)
        self._optimize(study, stored, objective, remaining, copied=done)
        self.n_trials_done_ = done + remaining
        self.study_name_ = stored.study_name if stored is not None else None
        self.best_value_ = float(study.best_value)
        return normalise_weights(np.array([study.best_params[n] for n in names]))

    def _stored_study(self, direction: str) -> Any:
        if self.storage is None:
            return None
        import optuna

        return optuna.create_study(
            storage=open_storage(self.storage),
            study_name=self.study_name,
            direction=direction,
            load_if_exists=True,
        )

    def _enqueue_baselines(self, study: Any, names: list[str]) -> None:
        study.enqueue_trial({n: 1.0 for n in names})
        if self.n_trials >= 2 * (len(names) + 1):
            for i in range(len(names)):
                study.enqueue_trial({n: float(j == i) for j, n in enumerate(names)})

    def _optimize(
        self, study: Any, stored: Any, objective: WeightObjective, n_trials: int, copied: int
    ) -> None:
        """Run ``n_trials``; copy finished trials after the first ``copied`` to ``stored``."""
        if n_trials == 0:
            return
        import optuna
        from tqdm.auto import tqdm

        if self.persist_every < 1:
            raise ValueError(f"`persist_every >= 1` must hold, got {self.persist_every}")
        with tqdm(
            total=n_trials,
            desc="optuna weights",
            disable=not self.progress,
            unit="trial",
            leave=False,
        ) as bar:
            left = n_trials
            sent: set[int] = set()
            while left > 0:
                chunk = min(left, self.persist_every)
                study.optimize(
                    objective, n_trials=chunk, callbacks=[lambda _study, _trial: bar.update(1)]
                )
                left -= chunk
                if stored is not None:
                    # finished trials not yet copied (enqueued ones finish later than created)
                    new = [
                        t
                        for t in study.get_trials(deepcopy=False)
                        if t.number >= copied
                        and t.number not in sent
                        and t.state == optuna.trial.TrialState.COMPLETE
                    ]
                    stored.add_trials(new)
                    sent.update(t.number for t in new)


class GreedySelection(EnsembleMethod):
    """Forward selection with replacement (Caruana et al., ICML 2004).

    Each round adds the member (repeats allowed) whose addition gives the best validation
    ``objective``; the weights are the selection counts at the best round. Ties go to the
    lowest member index, so the result is deterministic.
    """

    def __init__(
        self,
        objective: str = "logloss",
        n_rounds: int = 50,
        class_names: Sequence[str] | None = None,
    ) -> None:
        self.objective = objective
        self.n_rounds = n_rounds
        self.class_names = class_names

    def _fit_weights(self, P: np.ndarray, y: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
        if self.n_rounds < 1:
            raise ValueError(f"`n_rounds >= 1` must hold, got n_rounds={self.n_rounds}")
        objective = WeightObjective(P, y, self.objective, self.class_names)
        lower = objective.direction == "minimize"
        k = len(P)
        counts = np.zeros(k)
        best_counts, best_value = None, np.inf if lower else -np.inf
        for _ in range(self.n_rounds):
            values = objective.score_additions(counts)
            values = np.where(np.isnan(values), np.inf if lower else -np.inf, values)
            pick = int(np.argmin(values) if lower else np.argmax(values))
            counts[pick] += 1
            value = values[pick]
            if (value < best_value) if lower else (value > best_value):
                best_value, best_counts = value, counts.copy()
        self.best_value_ = float(best_value)
        self.counts_ = best_counts if best_counts is not None else counts
        return self.counts_ / self.counts_.sum()


class Stacking(EnsembleMethod):
    """A logistic-regression stacker (scikit-learn) on members' out-of-fold probabilities.

    Features: each member's log-odds of the positive class (binary) or log-probabilities of
    every class (more classes). ``weights_`` is each member's share of the absolute
    coefficients: an importance that is non-negative and sums to 1, not a mixing weight.
    """

    def __init__(
        self, C: float = 1.0, seed: int = 0, class_names: Sequence[str] | None = None
    ) -> None:
        self.C = C
        self.seed = seed
        self.class_names = class_names

    def _features(self, P: np.ndarray) -> np.ndarray:
        # float64 features, as before float32 inputs were kept (the stacker is fitted on them)
        logp = np.log(np.clip(P.astype(np.float64), STACKING_CLIP, 1.0))  # [members, samples, k]
        if P.shape[2] == 2:
            return (logp[:, :, 1] - logp[:, :, 0]).T  # [samples, members]
        return np.transpose(logp, (1, 0, 2)).reshape(P.shape[1], -1)

    def _fit_weights(self, P: np.ndarray, y: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
        from sklearn.linear_model import LogisticRegression

        if len(np.unique(y)) < 2:
            raise ValueError("stacking needs at least two classes among the validation labels")
        self.stacker_ = LogisticRegression(C=self.C, max_iter=2000, random_state=self.seed)
        self.stacker_.fit(self._features(P), y)
        coef = np.abs(self.stacker_.coef_)  # [1 or classes, features]
        per_member = coef.reshape(coef.shape[0], P.shape[0], -1).sum(axis=(0, 2))
        return normalise_weights(per_member)

    def combiner(self) -> Combiner:
        """The fitted stacker's coefficients and intercept (``ensemble.combiners``)."""
        self._check_fitted()
        return logistic_stacker(self.stacker_.coef_.tolist(), self.stacker_.intercept_.tolist())

    def predict_proba(self, P: np.ndarray) -> np.ndarray:
        """The stacker's class probabilities (classes absent from the fit get 0)."""
        P = self._check_fitted_P(P)
        proba = self.stacker_.predict_proba(self._features(P))
        out = np.zeros((P.shape[1], self.n_classes_))
        out[:, self.stacker_.classes_] = proba
        return out


# ----------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class MethodOptions:
    """What the methods can be given; each factory takes only the fields it uses."""

    class_names: tuple[str, ...] | None = None
    seed: int = 0
    select_by: str = "wfs"
    objective: str = "logloss"
    n_trials: int = 200
    sampler: str = "tpe"
    storage: str | None = None
    study_name: str | None = None
    progress: bool = False
    greedy_rounds: int = 50
    stacking_C: float = 1.0
    search_max_members: int = 12

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVE_METRICS:
            raise ValueError(
                f"ensemble.objective must be one of {list(OBJECTIVE_METRICS)}, got "
                f"{self.objective!r}"
            )
        if self.sampler not in SAMPLERS:
            raise ValueError(SAMPLERS.unknown_message(self.sampler))


#: Every ensemble method by name: a factory taking :class:`MethodOptions`.
METHODS: Registry[Callable[[MethodOptions], EnsembleMethod]] = Registry(
    "ensemble method", key="ensemble.methods"
)

METHODS.register("best_single")(lambda o: BestSingle(metric=o.select_by, class_names=o.class_names))
METHODS.register("sap")(lambda o: SimpleAverage(class_names=o.class_names))
for _metric in ("acc", "auc", "f1", "kappa"):
    METHODS.register(f"wen_{_metric}")(
        lambda o, _m=_metric: ScoreWeighted(metric=_m, class_names=o.class_names)
    )
METHODS.register("optuna")(
    lambda o: OptunaWeights(
        objective=o.objective,
        n_trials=o.n_trials,
        sampler=o.sampler,
        seed=o.seed,
        storage=o.storage,
        study_name=o.study_name,
        progress=o.progress,
        class_names=o.class_names,
        max_members=o.search_max_members,
    )
)
METHODS.register("greedy")(
    lambda o: GreedySelection(
        objective=o.objective, n_rounds=o.greedy_rounds, class_names=o.class_names
    )
)
METHODS.register("stacking")(
    lambda o: Stacking(C=o.stacking_C, seed=o.seed, class_names=o.class_names)
)


def create_method(name: str, options: MethodOptions | None = None) -> EnsembleMethod:
    """A new, unfitted method by name; an unknown name lists the valid ones.

    >>> create_method("wen_kappa").metric
    'kappa'
    """
    return METHODS.get(name)(options or MethodOptions())
