"""Config validation: unknown keys with their path and the allowed keys, ranges, overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from search.checks import load_wen_config
from search.config import WenConfig
from trainers.config import (
    ConfigError,
    TrialConfig,
    apply_overrides,
    config_hash,
    load_config,
    parse_overrides,
    save_config,
)

BASE = {"data": {"synthetic": {"size": 48}}}


def problems(raw: dict, overrides: list[str] | None = None, model=TrialConfig) -> list[str]:
    with pytest.raises(ConfigError) as info:
        if model is WenConfig:  # the whole-run checks live in the search stage
            load_wen_config(raw, overrides, check_registries=False)
        else:
            load_config(raw, overrides, model=model)
    return info.value.problems


def test_unknown_key_names_full_path_and_allowed_keys() -> None:
    (msg,) = problems({"data": {"synthetic": {"size": 48}, "crop": {"fracton": 0.5}}})
    assert msg.startswith("data.crop.fracton: unknown key")
    assert "fraction" in msg and "size" in msg


def test_every_problem_is_collected_into_one_error() -> None:
    found = problems(
        {"data": {"synthetic": {"size": 48}, "input_sze": 3}, "train": {"epochs": 0}, "bogus": 1}
    )
    keys = sorted(p.split(":")[0] for p in found)
    assert keys == ["bogus", "data.input_sze", "train.epochs"]
    epochs = next(p for p in found if p.startswith("train.epochs"))
    assert "greater than or equal to 1" in epochs and "got 0" in epochs


def test_wrong_type_is_named() -> None:
    (msg,) = problems(BASE, ["optim.lr=fast"])
    assert msg.startswith("optim.lr:") and "'fast'" in msg


def test_cross_field_rules_state_the_fix() -> None:
    (msg,) = problems(BASE, ["schedule.base_lr=0.1", "schedule.max_lr=0.01"])
    assert "base_lr < max_lr" in msg and "schedule" in msg
    (msg,) = problems({"data": {}})
    assert "data.root" in msg and "data.synthetic" in msg
    (msg,) = problems(BASE, ["data.split.method=group_kfold", "data.split.fold=5"])
    assert "fold < n_folds" in msg


def test_overrides_parse_yaml_values_and_create_sections() -> None:
    ov = parse_overrides(["train.epochs=3", "optim.betas=[0.8, 0.9]", "model.pretrained=true"])
    assert ov == {"train.epochs": 3, "optim.betas": [0.8, 0.9], "model.pretrained": True}
    cfg = load_config(BASE, ov)
    assert cfg.train.epochs == 3 and cfg.optim.betas == (0.8, 0.9) and cfg.model.pretrained
    assert apply_overrides({}, {"a.b.c": 1}) == {"a": {"b": {"c": 1}}}
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_overrides(["train.epochs"])
    with pytest.raises(ConfigError, match="is a value, not a section"):
        apply_overrides({"train": 3}, {"train.epochs": 1})


def test_search_and_ensemble_sections_are_validated_too() -> None:
    found = problems(
        {**BASE, "search": {"space": {"optim.lr": {"type": "loguniform", "low": 0, "high": 1}}}},
        model=WenConfig,
    )
    assert any(p.startswith("search.space.optim.lr") and "low > 0" in p for p in found)
    found = problems({**BASE, "ensemble": {"n_trails": 5}}, model=WenConfig)
    assert found[0].startswith("ensemble.n_trails: unknown key") and "n_trials" in found[0]


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [1, 2")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(listy)


def test_resolved_config_round_trips_and_hash_is_stable(tmp_path: Path) -> None:
    cfg = load_wen_config(BASE, ["train.epochs=4"], check_registries=False)
    path = save_config(cfg, tmp_path / "run" / "config.yaml")
    again = load_wen_config(path, check_registries=False)
    assert again == cfg
    assert config_hash(again) == config_hash(cfg)
    assert config_hash(load_config(BASE, ["train.epochs=5"])) != config_hash(cfg.trial_part())


def test_every_config_path_is_made_absolute_against_the_folder_wen_runs_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    raw = {
        "data": {"root": "data/C-NMC_Leukemia", "cache_dir": "~/cache", "synthetic_dir": None},
        "model": {"pretrained_path": "weights/vgg16.safetensors"},
        "search": {"storage": "runs"},
    }
    cfg = load_wen_config(raw, check_registries=False)
    assert isinstance(cfg, WenConfig)
    assert cfg.data.root == tmp_path / "data" / "C-NMC_Leukemia"
    assert cfg.data.cache_dir == tmp_path / "home" / "cache"
    assert cfg.model.pretrained_path == tmp_path / "weights" / "vgg16.safetensors"
    assert cfg.search.storage == str(tmp_path / "runs")
    assert load_wen_config(BASE, check_registries=False).search.storage == str(tmp_path / "runs")
    assert load_wen_config({**BASE, "search": {"storage": "s3://bucket/runs"}},
                       check_registries=False).search.storage == "s3://bucket/runs"  # fmt: skip
    # a trial rebuilt elsewhere from the resolved values keeps them (idempotent)
    monkeypatch.chdir(tmp_path / "..")
    again = WenConfig.model_validate(cfg.model_dump(mode="json"))
    assert again.data.root == cfg.data.root and again.search.storage == cfg.search.storage


def test_relative_storage_inside_a_ray_job_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from search.storage import RunStorage, StorageError

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(
        "RAY_JOB_CONFIG_JSON_ENV_VAR",
        json.dumps({"runtime_env": {"working_dir": "gcs://_ray_pkg_x.zip"}}),
    )
    with pytest.raises(StorageError, match="temporary copy of its working folder"):
        RunStorage.open("runs", "x")
    assert RunStorage.open(str(tmp_path / "shared"), "x").storage == str(tmp_path / "shared")
    with pytest.warns(UserWarning, match="temporary copy of its working folder"):
        cfg = load_config({"data": {"root": "data"}})
    assert cfg.data.root == tmp_path / "data"
