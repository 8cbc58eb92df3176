"""One training trial as a pure function, plus the pieces it is made of.

>>> from trainers import TrialConfig, load_config, train  # cheap: torch loads on first use
>>> sorted(__all__)
['TrialConfig', 'TrialResult', 'create_model', 'load_config', 'score', 'train']

``trainers`` imports neither Ray nor the search, ensemble or report stages.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from trainers.config import TrialConfig, load_config

if TYPE_CHECKING:
    from trainers.loop import TrialResult, train
    from trainers.metrics import score
    from trainers.models import create_model

__all__ = ["TrialConfig", "TrialResult", "create_model", "load_config", "score", "train"]

# heavy names (torch, timm, sklearn) load on first access, so `import trainers` stays fast
_LAZY = {
    "train": "trainers.loop",
    "TrialResult": "trainers.loop",
    "create_model": "trainers.models",
    "score": "trainers.metrics",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'trainers' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value
