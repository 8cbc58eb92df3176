"""Search spaces: YAML dimensions over dotted config keys, checked before any trial starts.

A space maps a dotted trial key (``optim.lr``, ``model.backbone``) to a :class:`SpaceSpec`.
Every key is checked against the trial config model (an unknown key lists the allowed keys
at that level) and every value by building one trial config per choice and per boundary, so
a typo in a backbone name fails at once, not in trial 37 an hour later.

The fold dimension (``search.folds``) trains each configuration on each fold: with the
variant generator it is a grid axis whose random draws are held constant across folds
(``constant_grid_search``); with Optuna each suggestion is repeated once per fold (Tune's
``Repeater``) and the searcher sees the mean over folds.

>>> from search.config import SpaceSpec
>>> candidate_values(SpaceSpec(type="randint", low=2, high=5))
[2, 4]
>>> space_key_problems({"optim.lrr": SpaceSpec(type="choice", values=[1])})[0][:40]
'search.space.optim.lrr: unknown key; all'
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from trainers.checks import check_names
from trainers.config import ConfigError, TrialConfig, apply_overrides, load_config

if TYPE_CHECKING:
    from search.config import SearchSettings, SpaceSpec, WenConfig

__all__ = [
    "FOLD_KEY",
    "TRIAL_INDEX",
    "build_param_space",
    "candidate_values",
    "count_trials",
    "describe_space",
    "grid_points",
    "space_key_problems",
    "space_value_problems",
    "trial_overrides",
]

FOLD_KEY = "data.split.fold"
#: Key Tune's ``Repeater`` puts into each repeated trial's config (ray.tune.search.repeater).
TRIAL_INDEX = "__trial_index__"
#: Optuna's categorical distribution only takes these types.
_OPTUNA_SCALARS = (type(None), bool, int, float, str)


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation (``SyntheticSpec | None`` -> SyntheticSpec)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def _key_problem(key: str, model: type[BaseModel] = TrialConfig) -> str | None:
    """Why ``key`` is not a searchable leaf of ``model`` (None when it is one)."""
    current: type[BaseModel] = model
    parts = key.split(".")
    for depth, part in enumerate(parts):
        here = ".".join(parts[:depth]) or "the top level"
        field = current.model_fields.get(part)
        if field is None:
            allowed = ", ".join(sorted(current.model_fields))
            return (
                f"search.space.{key}: unknown key; allowed keys under {here}: {allowed} "
                "(check the spelling)"
            )
        sub = _model_of(field.annotation)
        last = depth == len(parts) - 1
        if last and sub is not None:
            allowed = ", ".join(f"{key}.{k}" for k in sorted(sub.model_fields))
            return f"search.space.{key}: is a section, not a value; search one of: {allowed}"
        if not last and sub is None:
            return (
                f"search.space.{key}: {'.'.join(parts[: depth + 1])} is a value, not a section; "
                "search that key itself"
            )
        if sub is not None:
            current = sub
    return None


def space_key_problems(space: dict[str, SpaceSpec]) -> list[str]:
    """One problem per space key that is not a value of the trial config."""
    return [p for p in (_key_problem(k) for k in space) if p]


def candidate_values(spec: SpaceSpec) -> list[Any]:
    """The values that stand for a dimension when checking it: every choice, or both ends."""
    if spec.type in ("choice", "grid"):
        return list(spec.values or [])
    assert spec.low is not None and spec.high is not None
    if spec.type == "randint":  # Tune's randint excludes `high`
        return sorted({int(spec.low), int(spec.high) - 1})
    return [spec.low, spec.high]


def space_value_problems(config: WenConfig) -> list[str]:
    """Build one trial config per searched value (and fold); one problem per failing value.

    Problems the base config already has (a missing data root) are reported once by the
    caller, not once per value.
    """
    settings = config.search
    base = config.trial_part()
    base_raw = base.model_dump(mode="json")
    known = set(check_names(base))
    problems: list[str] = []
    dims: list[tuple[str, list[Any]]] = [
        (key, candidate_values(spec)) for key, spec in settings.space.items()
    ]
    if settings.folds is not None:
        if base.data.split.method == "group_holdout":
            problems.append(
                "search.folds needs data.split.method group_kfold or official (one grouped "
                "holdout has no folds), got group_holdout: set data.split.method=group_kfold"
            )
        dims.append((FOLD_KEY, list(settings.folds)))
    for key, values in dims:
        if settings.algorithm == "optuna":
            odd = [v for v in values if not isinstance(v, _OPTUNA_SCALARS)]
            if odd:
                problems.append(
                    f"search.space.{key}: Optuna choices must be numbers, strings, booleans or "
                    f"null, got {odd!r}: use search.algorithm=random or grid for these values"
                )
                continue
        for value in values:
            try:
                load_config(
                    apply_overrides(base_raw, {key: value}), model=TrialConfig, checks=check_names
                )
            except ConfigError as err:
                where = "search.folds" if key == FOLD_KEY else f"search.space.{key}"
                problems += [f"{where}={value!r}: {p}" for p in err.problems if p not in known]
    return problems


def _is_grid(spec: SpaceSpec, algorithm: str) -> bool:
    return spec.type == "grid" or (spec.type == "choice" and algorithm == "grid")


def build_param_space(settings: SearchSettings) -> dict[str, Any]:
    """The Tune ``param_space``: one flat entry per dotted key (plus the fold axis).

    ``grid`` dimensions (and every ``choice`` with ``algorithm: grid``) become
    ``tune.grid_search``; the rest are sampled. With Optuna the fold axis is added by the
    searcher (a ``Repeater``), not here, because Optuna cannot take grid axes.
    """
    from ray import tune

    space: dict[str, Any] = {}
    for key, spec in settings.space.items():
        if _is_grid(spec, settings.algorithm):
            space[key] = tune.grid_search(list(spec.values or []))
        elif spec.type == "choice":
            space[key] = tune.choice(list(spec.values or []))
        elif spec.type == "uniform":
            space[key] = tune.uniform(spec.low, spec.high)
        elif spec.type == "loguniform":
            space[key] = tune.loguniform(spec.low, spec.high)
        else:
            space[key] = tune.randint(int(spec.low or 0), int(spec.high or 0))
    if settings.folds is not None and settings.algorithm != "optuna":
        space[FOLD_KEY] = tune.grid_search(list(settings.folds))
    return space


def trial_overrides(tune_config: dict[str, Any], folds: list[int] | None) -> dict[str, Any]:
    """A trial's Tune config -> dotted overrides of the base config (the fold made explicit)."""
    overrides = {k: v for k, v in tune_config.items() if k != TRIAL_INDEX}
    if TRIAL_INDEX in tune_config and folds:
        overrides[FOLD_KEY] = folds[int(tune_config[TRIAL_INDEX]) % len(folds)]
    return overrides


def grid_points(settings: SearchSettings) -> list[dict[str, Any]]:
    """Every combination of the grid axes (fold included) in Tune's order; [{}] with none."""
    axes: list[tuple[str, list[Any]]] = [
        (k, list(s.values or []))
        for k, s in settings.space.items()
        if _is_grid(s, settings.algorithm)
    ]
    if settings.folds is not None:
        axes.append((FOLD_KEY, list(settings.folds)))
    if not axes:
        return [{}]
    keys = [k for k, _ in axes]
    # Tune's variant generator varies the last grid axis slowest; the order only matters
    # for display, so plain itertools order is used.
    return [dict(zip(keys, combo)) for combo in itertools.product(*(v for _, v in axes))]


def count_trials(settings: SearchSettings) -> int:
    """How many trials the search runs in all."""
    folds = len(settings.folds) if settings.folds else 1
    if settings.algorithm == "optuna":
        return settings.num_samples * folds
    return settings.num_samples * len(grid_points(settings))


def describe_space(settings: SearchSettings) -> list[str]:
    """Human-readable lines: one per dimension, then the grid points and the trial count."""
    lines = [f"algorithm: {settings.algorithm} (seed {settings.seed})"]
    for key, spec in settings.space.items():
        if spec.type in ("choice", "grid"):
            kind = "grid" if _is_grid(spec, settings.algorithm) else "sampled choice"
            lines.append(f"  {key}: {kind} of {spec.values}")
        else:
            lines.append(
                f"  {key}: {spec.type} [{spec.low}, {spec.high}{')' if spec.type == 'randint' else ']'}"
            )
    if settings.folds is not None:
        how = "repeated per Optuna suggestion" if settings.algorithm == "optuna" else "grid axis"
        lines.append(f"  {FOLD_KEY}: folds {settings.folds} ({how})")
    points = grid_points(settings)
    if settings.algorithm != "optuna" and points != [{}]:
        lines.append(f"grid points ({len(points)}):")
        for i, point in enumerate(points[:50]):
            lines.append(f"  [{i}] " + ", ".join(f"{k}={v}" for k, v in point.items()))
        if len(points) > 50:
            lines.append(f"  ... {len(points) - 50} more")
    sampled = [k for k, s in settings.space.items() if not _is_grid(s, settings.algorithm)]
    if sampled and settings.algorithm != "optuna":
        lines.append(
            f"sampled once per sample, the same across the grid axes: {', '.join(sampled)}"
        )
    lines.append(
        f"trials: {count_trials(settings)} (num_samples={settings.num_samples}"
        + (
            f", x {len(settings.folds)} folds"
            if settings.algorithm == "optuna" and settings.folds
            else ""
        )
        + (f", concurrency <= {settings.max_concurrent}" if settings.max_concurrent else "")
        + ")"
    )
    return lines
