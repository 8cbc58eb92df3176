"""Schedulers judge cyclic trials only at whole learning-rate cycles; searchers are seeded."""

from __future__ import annotations

import pytest

from search.checks import load_wen_config
from search.config import WenConfig
from search.schedulers import (
    SCHEDULERS,
    asha_rungs,
    create_scheduler,
    cycle_epochs,
    grace_epochs,
)
from search.searchers import create_search_alg, searcher_metric, tune_num_samples
from search.space import TRIAL_INDEX, build_param_space
from trainers._registry import UnknownNameError
from trainers.config import ConfigError

BASE = {"data": {"synthetic": {"size": 48}}, "model": {"backbone": "test_resnet"}}


def cfg(**sections: object) -> WenConfig:
    raw = {**BASE, **sections}
    config = load_wen_config(raw, check_registries=False)
    assert isinstance(config, WenConfig)
    return config


def problems(**sections: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        cfg(**sections)
    return info.value.problems


@pytest.mark.parametrize(
    ("half", "grace_cycles", "rf", "epochs"),
    [(6.0, 1, 2, 96), (1.5, 2, 3, 60), (0.5, 1, 2, 10), (2.0, 1, 4, 64)],
)
def test_asha_rungs_fall_on_whole_cycles_and_match_ray(
    half: float, grace_cycles: int, rf: float, epochs: int
) -> None:
    config = cfg(
        schedule={"name": "cyclic", "half_cycle_epochs": half},
        train={"epochs": epochs},
        search={
            "scheduler": {"name": "asha", "grace_cycles": grace_cycles, "reduction_factor": rf}
        },
    )
    cycle = cycle_epochs(config.schedule)
    assert cycle == 2 * half
    scheduler = create_scheduler(config)
    assert scheduler._time_attr == "epoch"
    ray_rungs = sorted(m for m, _ in scheduler._brackets[0]._rungs)
    ours = asha_rungs(epochs, int(grace_epochs(config)), rf)
    assert ray_rungs == ours and len(ours) >= 2
    for rung in ray_rungs:
        # a trough of the cyclic LR: a whole number of cycles, never a peak (odd half-cycles)
        assert (rung / cycle) == int(rung / cycle)
        assert (rung / half) % 2 == 0
    assert ray_rungs[0] == grace_cycles * cycle


def test_asha_rules_state_the_fix() -> None:
    found = problems(
        schedule={"name": "cyclic", "half_cycle_epochs": 0.75},
        train={"epochs": 20},
        search={"scheduler": {"name": "asha", "grace_cycles": 1}},
    )
    assert "1.5 epochs" in found[0] and "whole number of epochs" in found[0]
    found = problems(
        schedule={"name": "cyclic", "half_cycle_epochs": 1},
        train={"epochs": 20},
        search={"scheduler": {"name": "asha", "reduction_factor": 2.5}},
    )
    assert "reduction_factor must be a whole number" in found[0]
    found = problems(
        schedule={"name": "cyclic", "half_cycle_epochs": 6},
        train={"epochs": 10},
        search={"scheduler": {"name": "asha"}},
    )
    assert "after the last epoch (train.epochs=10)" in found[0]
    # without cycles a "cycle" is one epoch, and any reduction factor is fine
    ok = cfg(
        schedule={"name": "constant"},
        train={"epochs": 9},
        search={"scheduler": {"name": "asha", "reduction_factor": 2.5}},
    )
    assert grace_epochs(ok) == 1


def test_hyperband_counts_cycles() -> None:
    config = cfg(
        schedule={"name": "cyclic", "half_cycle_epochs": 2},
        train={"epochs": 36},
        search={"scheduler": {"name": "hyperband", "reduction_factor": 3}},
    )
    scheduler = create_scheduler(config)
    assert scheduler._time_attr == "lr_cycles" and scheduler._max_t_attr == 9
    found = problems(
        schedule={"name": "cyclic", "half_cycle_epochs": 2},
        train={"epochs": 36, "checkpoint_every": 3},
        search={"scheduler": {"name": "hyperband"}},
    )
    assert "checkpoint_every=3 must divide 4" in found[0]


def test_pbt_only_perturbs_keys_read_on_resume() -> None:
    found = problems(
        schedule={"name": "constant"},
        search={
            "scheduler": {"name": "pbt"},
            "space": {"optim.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2}},
        },
    )
    assert (
        "PBT copies weights" in found[0] and "optim.lr" in found[0] and "model.dropout" in found[0]
    )
    found = problems(
        schedule={"name": "constant"},
        data={**BASE["data"], "split": {"method": "group_kfold"}},
        search={
            "scheduler": {"name": "pbt"},
            "folds": [0, 1],
            "space": {"model.dropout": {"type": "uniform", "low": 0.0, "high": 0.5}},
        },
    )
    assert any("leaks one fold's validation" in p for p in found)
    config = cfg(
        schedule={"name": "constant"},
        search={
            "scheduler": {"name": "pbt"},
            "space": {"model.dropout": {"type": "uniform", "low": 0.0, "high": 0.5}},
        },
    )
    scheduler = create_scheduler(config)
    assert scheduler._time_attr == "lr_cycles"
    assert list(scheduler._hyperparam_mutations) == ["model.dropout"]


def test_every_scheduler_has_its_traits() -> None:
    from search.config import SchedulerConfig
    from search.schedulers import SCHEDULER_TRAITS

    allowed = SchedulerConfig.model_fields["name"].annotation.__args__
    assert set(SCHEDULER_TRAITS) == set(SCHEDULERS.names()) == set(allowed)


def test_unknown_scheduler_name_lists_the_registry() -> None:
    with pytest.raises(
        UnknownNameError, match="valid names: asha, asha_promotion, fifo, hyperband, pbt"
    ):
        SCHEDULERS.get("median")


def _suggestions(config: WenConfig, n: int) -> list[dict]:
    searcher = create_search_alg(config.search)
    searcher.set_search_properties(None, None, build_param_space(config.search))
    return [searcher.suggest(f"t{i}") for i in range(n)]


def test_optuna_is_seeded_repeated_per_fold_and_limited() -> None:
    from ray.tune.search import ConcurrencyLimiter, Repeater

    search = {
        "algorithm": "optuna",
        "seed": 3,
        "num_samples": 2,
        "folds": [0, 1],
        "max_concurrent": 4,
        "space": {"optim.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2}},
    }
    config = cfg(data={**BASE["data"], "split": {"method": "group_kfold"}}, search=search)
    searcher = create_search_alg(config.search)
    assert isinstance(searcher, ConcurrencyLimiter) and isinstance(searcher.searcher, Repeater)
    assert searcher.searcher.searcher.metric == searcher_metric(config.search) == "best_val_wfs"
    assert tune_num_samples(config.search) == 4
    first, second = _suggestions(config, 4), _suggestions(config, 4)
    assert first == second  # seeded
    # each suggestion repeated once per fold, the Repeater's index picking the fold
    assert (
        first[0]["optim.lr"] == first[1]["optim.lr"] != first[2]["optim.lr"] == first[3]["optim.lr"]
    )
    assert [s[TRIAL_INDEX] for s in first] == [0, 1, 0, 1]
    # and Optuna is told the mean over a configuration's folds
    limiter = create_search_alg(config.search)
    limiter.set_search_properties(None, None, build_param_space(config.search))
    limiter.suggest("a")
    limiter.suggest("b")
    limiter.on_trial_complete("a", {"best_val_wfs": 0.6})
    limiter.on_trial_complete("b", {"best_val_wfs": 0.8})
    study = limiter.searcher.searcher._ot_study
    assert study.trials[0].value == pytest.approx(0.7)
