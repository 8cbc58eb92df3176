"""Search algorithms: Tune's variant generator (grid / random) and Optuna TPE, seeded.

- ``random`` and ``grid``: ``BasicVariantGenerator`` with ``constant_grid_search=True``,
  so the sampled values of one sample stay the same across the grid axes (above all the
  fold axis: each configuration trains on every fold);
- ``optuna``: ``OptunaSearch`` with a seeded TPE sampler, repeated once per fold by Tune's
  ``Repeater`` (Optuna sees the mean over folds) and capped by a ``ConcurrencyLimiter``.

Optuna is told ``best_<metric>`` (the trial's best so far, reported every epoch) rather than
the last epoch's value, because the trainer keeps the best epoch, and a trial stopped early
by ASHA should count with what it reached.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from trainers._registry import Registry

if TYPE_CHECKING:
    from ray.tune.search import SearchAlgorithm, Searcher

    from search.config import SearchSettings

__all__ = ["SEARCHERS", "create_search_alg", "searcher_metric", "tune_num_samples"]

SearcherFactory = Callable[["SearchSettings"], "SearchAlgorithm | Searcher"]
SEARCHERS: Registry[SearcherFactory] = Registry("search algorithm", key="search.algorithm")


def searcher_metric(settings: SearchSettings) -> str:
    """The metric the searcher optimises: the running best of ``search.metric``."""
    return f"best_{settings.metric}"


def tune_num_samples(settings: SearchSettings) -> int:
    """``TuneConfig.num_samples``: with Optuna each suggestion runs once per fold."""
    if settings.algorithm == "optuna" and settings.folds:
        return settings.num_samples * len(settings.folds)
    return settings.num_samples


def _variants(settings: SearchSettings) -> Any:
    from ray.tune.search import BasicVariantGenerator

    return BasicVariantGenerator(
        constant_grid_search=True,
        random_state=settings.seed,
        max_concurrent=settings.max_concurrent or 0,
    )


SEARCHERS.register("random")(_variants)
SEARCHERS.register("grid")(_variants)


@SEARCHERS.register("optuna")
def _optuna(settings: SearchSettings) -> Any:
    from ray.tune.search import ConcurrencyLimiter, Repeater
    from ray.tune.search.optuna import OptunaSearch

    # OptunaSearch builds a TPESampler(seed=seed) itself; passing a sampler too drops the seed
    searcher: Any = OptunaSearch(
        metric=searcher_metric(settings), mode=settings.mode, seed=settings.seed
    )
    if settings.folds:
        searcher = Repeater(searcher, repeat=len(settings.folds), set_index=True)
    if settings.max_concurrent:
        searcher = ConcurrencyLimiter(searcher, max_concurrent=settings.max_concurrent)
    return searcher


def create_search_alg(settings: SearchSettings) -> Any:
    """The Tune search algorithm named by ``search.algorithm``."""
    return SEARCHERS.get(settings.algorithm)(settings)
