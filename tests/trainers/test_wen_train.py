"""``wen train`` on the synthetic smoke config: completes on CPU, leaves checkpoints and predictions."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from search.cli import app
from trainers.predictions import read_predictions

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "train_smoke.yaml"


def test_wen_train_smoke_config_leaves_checkpoints_and_predictions(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        [
            "train",
            str(SMOKE),
            "--out",
            str(out),
            "--set",
            "train.threads=2",
            "--trial-id",
            "smoke0",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "best epoch" in result.output and "predictions:" in result.output
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["model"]["backbone"] == "test_resnet" and saved["train"]["epochs"] == 2
    assert saved["data"]["input_size"] == 48
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert ckpts and set(ckpts) <= {"epoch_0001", "epoch_0002"}
    for name in ckpts:
        assert {p.name for p in (out / "checkpoints" / name).iterdir()} == {
            "model.safetensors", "state.safetensors", "state.json",
        }  # fmt: skip
    pset = read_predictions(out / "predictions" / "smoke0.parquet")
    assert pset.trial_id == "smoke0" and {"val", "test"} <= set(pset.frame["split"])


def test_wen_train_config_errors_are_one_clear_message(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "train",
            str(SMOKE),
            "--out",
            str(tmp_path / "x"),
            "--set",
            "model.backbone=inception_resnet_v2",
        ],
    )
    assert result.exit_code == 2
    assert "inception_resnet_v2 needs inputs of at least 75 px" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "x").exists()


def test_wen_train_ignores_other_stages_sections(tmp_path: Path) -> None:
    from search.cli.train import load_trial_config

    raw = yaml.safe_load(SMOKE.read_text())
    raw["ensemble"] = {"n_trials": 5}
    path = tmp_path / "whole.yaml"
    path.write_text(yaml.safe_dump(raw))
    cfg = load_trial_config(path, ["train.epochs=1"])
    assert cfg.train.epochs == 1 and not hasattr(cfg, "ensemble")
