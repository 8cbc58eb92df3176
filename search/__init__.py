"""Search stage: the config-to-Ray-Tune adapter, search spaces, schedulers, resume and the CLI.

This is the only package that imports Ray, and only when a search runs: importing
``search`` (or validating a config) does not import Ray.

>>> from search import run_search  # doctest: +SKIP
>>> run_search(config, storage="runs", name="smoke")  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "RunStorage",
    "SearchError",
    "SearchOutcome",
    "build_param_space",
    "create_scheduler",
    "create_search_alg",
    "make_trainable",
    "results_table",
    "run_demo",
    "run_search",
    "smoke_overrides",
]

_WHERE = {
    "RunStorage": "search.storage",
    "SearchError": "search.run",
    "SearchOutcome": "search.run",
    "build_param_space": "search.space",
    "create_scheduler": "search.schedulers",
    "create_search_alg": "search.searchers",
    "make_trainable": "search.trainable",
    "results_table": "search.results",
    "run_demo": "search.demo",
    "run_search": "search.run",
    "smoke_overrides": "search.smoke",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'search' has no attribute {name!r}")
