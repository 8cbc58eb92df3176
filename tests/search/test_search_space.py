"""Search spaces: keys checked against the config model, values by building configs, Tune space."""

from __future__ import annotations

import pytest

from search.checks import load_wen_config
from search.config import SpaceSpec, WenConfig
from search.space import (
    FOLD_KEY,
    TRIAL_INDEX,
    build_param_space,
    candidate_values,
    count_trials,
    describe_space,
    grid_points,
    space_key_problems,
    trial_overrides,
)
from trainers.config import ConfigError

BASE = {
    "data": {
        "synthetic": {"size": 48},
        "input_size": 48,
        "split": {"method": "group_kfold", "n_folds": 3},
    },
    "model": {"backbone": "test_resnet"},
    "train": {"epochs": 4},
}


def cfg(search: dict, check: bool = True, **top: object) -> WenConfig:
    config = load_wen_config({**BASE, **top, "search": search}, check_registries=check)
    assert isinstance(config, WenConfig)
    return config


def problems(search: dict, check: bool = True, **top: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        cfg(search, check, **top)
    return info.value.problems


def test_unknown_space_key_lists_the_allowed_keys() -> None:
    found = "\n".join(
        problems({"space": {"optim.lrr": {"type": "choice", "values": [1e-3]}}}, check=False)
    )
    assert "search.space.optim.lrr: unknown key" in found
    assert "allowed keys under optim:" in found and "lr" in found and "weight_decay" in found
    found = "\n".join(
        problems({"space": {"modell.backbone": {"type": "choice", "values": ["x"]}}}, check=False)
    )
    assert "allowed keys under the top level" in found and "model" in found


def test_section_and_value_keys_are_refused_with_the_fix() -> None:
    (msg,) = space_key_problems({"optim": SpaceSpec(type="choice", values=[1])})
    assert "is a section" in msg and "optim.lr" in msg
    (msg,) = space_key_problems({"optim.lr.x": SpaceSpec(type="choice", values=[1])})
    assert "optim.lr is a value, not a section" in msg
    # optional sections (data.synthetic) are walked into
    assert space_key_problems({"data.synthetic.size": SpaceSpec(type="choice", values=[32])}) == []


def test_each_value_is_checked_by_building_a_trial_config() -> None:
    found = problems(
        {"space": {"model.backbone": {"type": "choice", "values": ["test_resnet", "no_such_net"]}}}
    )
    assert len(found) == 1
    assert found[0].startswith("search.space.model.backbone='no_such_net':")
    found = problems({"space": {"optim.lr": {"type": "uniform", "low": -1.0, "high": 0.1}}})
    assert found[0].startswith("search.space.optim.lr=-1.0: optim.lr:")
    found = problems(
        {"space": {"data.augmentation": {"type": "grid", "values": ["paper", "wild"]}}}
    )
    assert "data.augmentation='wild'" in found[0] and "valid names" in found[0]


def test_fold_values_are_checked_and_need_a_split_with_folds() -> None:
    found = problems({"folds": [0, 3]})
    assert found[0].startswith("search.folds=3:") and "fold < n_folds" in found[0]
    found = problems({"folds": [0]}, data={**BASE["data"], "split": {"method": "group_holdout"}})
    assert any("data.split.method group_kfold or official" in p for p in found)
    found = problems(
        {"folds": [0], "space": {FOLD_KEY: {"type": "grid", "values": [0, 1]}}}, check=False
    )
    assert "keep search.folds" in found[0]


def test_metric_mode_and_algorithm_rules() -> None:
    (msg,) = problems({"metric": "val_loss"}, check=False)
    assert "set search.mode=min" in msg
    (msg,) = problems({"metric": "val_wfss"}, check=False)
    assert "valid metrics" in msg and "val_wfs" in msg
    (msg,) = problems(
        {"algorithm": "optuna", "space": {"optim.name": {"type": "grid", "values": ["adam"]}}},
        check=False,
    )
    assert "Optuna samples" in msg and "type choice" in msg
    found = problems(
        {
            "algorithm": "optuna",
            "space": {"optim.betas": {"type": "choice", "values": [[0.9, 0.99]]}},
        }
    )
    assert "Optuna choices must be numbers" in found[0]


def test_spec_shape_rules() -> None:
    with pytest.raises(ValueError, match="whole-number bounds"):
        SpaceSpec(type="randint", low=1.5, high=4)
    with pytest.raises(ValueError, match="takes `values`, not `low`"):
        SpaceSpec(type="choice", values=[1], low=0)
    assert candidate_values(SpaceSpec(type="randint", low=2, high=5)) == [2, 4]
    assert candidate_values(SpaceSpec(type="loguniform", low=1e-4, high=1e-2)) == [1e-4, 1e-2]


def test_param_space_grid_choice_and_fold_axis() -> None:
    from ray.tune.search.sample import Categorical, Float, Integer

    search = {
        "space": {
            "model.backbone": {"type": "grid", "values": ["test_resnet", "test_efficientnet"]},
            "optim.name": {"type": "choice", "values": ["adam", "rmsprop"]},
            "optim.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2},
            "data.batch_size": {"type": "randint", "low": 8, "high": 33},
        },
        "folds": [0, 1, 2],
        "num_samples": 2,
    }
    random = cfg(search).search
    space = build_param_space(random)
    assert space["model.backbone"] == {"grid_search": ["test_resnet", "test_efficientnet"]}
    assert space[FOLD_KEY] == {"grid_search": [0, 1, 2]}
    assert isinstance(space["optim.name"], Categorical)
    assert isinstance(space["optim.lr"], Float) and isinstance(space["data.batch_size"], Integer)
    assert count_trials(random) == 2 * 2 * 3
    grid = cfg({**search, "algorithm": "grid"}).search
    assert build_param_space(grid)["optim.name"] == {"grid_search": ["adam", "rmsprop"]}
    assert len(grid_points(grid)) == 2 * 2 * 3 and count_trials(grid) == 24
    text = "\n".join(describe_space(random))
    assert "grid points (6)" in text and "trials: 12" in text


def test_optuna_fold_axis_comes_from_the_repeater_index() -> None:
    search = {
        "algorithm": "optuna",
        "space": {"optim.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2}},
        "folds": [0, 2],
        "num_samples": 3,
    }
    settings = cfg(search).search
    assert FOLD_KEY not in build_param_space(settings)
    assert count_trials(settings) == 6
    assert trial_overrides({"optim.lr": 0.01, TRIAL_INDEX: 1}, settings.folds) == {
        "optim.lr": 0.01,
        FOLD_KEY: 2,
    }
    assert trial_overrides({"optim.lr": 0.01}, None) == {"optim.lr": 0.01}
