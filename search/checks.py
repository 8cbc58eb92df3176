"""Checks of a whole-run config that span its sections, and the loader that runs them.

``search/config.py`` only declares the typed sections (a leaf module); the rules that need the
search stage's modules run here, after validation, in the same one :class:`ConfigError`:

1. structure, always: every ``search.space`` key exists in the trial config and scheduler
   times fall on whole learning-rate cycles;
2. with ``check_registries`` (and only when 1. found nothing): registry names and files
   (``trainers.checks.check_names``) and one trial config built per searched value.

>>> space = {"optim.lrr": {"type": "choice", "values": [0.1]}}
>>> load_wen_config({"data": {"synthetic": {}}, "search": {"space": space}})
Traceback (most recent call last):
...
trainers.config.ConfigError: 1 configuration problem(s):
  - search.space.optim.lrr: unknown key; allowed keys under optim: alpha, betas, eps, lr, momentum, name, weight_decay (check the spelling)
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from search.config import WenConfig
from search.schedulers import scheduler_problems
from search.space import space_key_problems, space_value_problems
from trainers.checks import check_names
from trainers.config import load_config

__all__ = ["load_wen_config", "structure_problems", "wen_config_problems"]


def structure_problems(config: WenConfig) -> list[str]:
    """Space keys that do not exist and scheduler times off whole LR cycles, one line each."""
    return space_key_problems(config.search.space) + scheduler_problems(config)


def wen_config_problems(config: WenConfig, check_registries: bool = True) -> list[str]:
    """Every problem of a validated whole-run config (empty when it can run).

    Registry and searched-value problems are looked for only once the structure holds: a
    space key that does not exist would otherwise fail once per searched value too.
    """
    problems = structure_problems(config)
    if problems or not check_registries:
        return problems
    return check_names(config) + space_value_problems(config)


def load_wen_config(
    source: str | Path | dict[str, Any],
    overrides: dict[str, Any] | list[str] | None = None,
    check_registries: bool = True,
) -> WenConfig:
    """Read, override and validate a whole-run config; one ``ConfigError`` lists every problem.

    ``check_registries=False`` checks structure only (a preset whose data folder is elsewhere).
    """
    checks = partial(wen_config_problems, check_registries=check_registries)
    config = load_config(source, overrides, model=WenConfig, checks=checks)
    assert isinstance(config, WenConfig)  # load_config returns an instance of `model`
    return config
