"""``wen search`` without Ray: dry-run output, and the refusals that come before any trial."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from search.cli import app
from wen_proc import SMOKE

runner = CliRunner()


def test_dry_run_prints_the_expanded_space_and_resources(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["search", str(SMOKE), "--dry-run", "--storage", str(tmp_path), "--name", "d",
         "--set", "search.resources.cpus=2", "--set", "search.resources.memory_gb=3"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = result.output
    assert "model.backbone: grid of ['test_resnet', 'test_efficientnet']" in out
    assert "optim.lr: loguniform [0.0001, 0.001]" in out
    assert "data.split.fold: folds [0, 1] (grid axis)" in out
    assert "[3] model.backbone=test_efficientnet, data.split.fold=1" in out
    assert "trials: 4" in out
    assert "each trial needs: 2 CPU, 0 GPU, 3 GiB memory" in out
    assert f"run folder: {tmp_path}/d" in out
    assert not (tmp_path / "d").exists()  # a dry run writes nothing


def test_dry_run_shows_asha_rungs_on_cycle_troughs() -> None:
    result = runner.invoke(
        app,
        ["search", str(SMOKE), "--dry-run", "--set", "train.epochs=8", "--set", "search.folds=null",
         "--set", "search.scheduler.name=asha", "--set", "schedule.half_cycle_epochs=1"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "rungs at epochs 2, 4, 8; LR cycle 2 epochs" in result.output


def test_bad_space_key_fails_before_anything_runs(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["search", str(SMOKE), "--storage", str(tmp_path), "--set",
              "search.space={optim.lrr: {type: choice, values: [0.1]}}"],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "search.space.optim.lrr: unknown key" in result.output
    assert not list(tmp_path.iterdir())


def test_resume_and_restart_refusals(tmp_path: Path) -> None:
    base = ["search", str(SMOKE), "--storage", str(tmp_path), "--name", "r"]
    result = runner.invoke(app, [*base, "--resume"])
    assert result.exit_code == 2 and "holds no search to resume" in result.output
    run = tmp_path / "r"
    run.mkdir()
    (run / "tuner.pkl").write_bytes(b"")  # what Tune leaves: a search exists here
    result = runner.invoke(app, base)
    assert result.exit_code == 2 and "already holds a search: pass --resume" in result.output
    saved = yaml.safe_load(SMOKE.read_text())
    from search.run import load_search_config

    (run / "config.yaml").write_text(
        yaml.safe_dump(load_search_config(str(SMOKE), None).model_dump(mode="json"))
    )
    result = runner.invoke(app, [*base, "--resume", "--set", "train.epochs=3"])
    assert result.exit_code == 2 and "differs from the one the search started with" in result.output
    assert "train.epochs" in result.output and saved["train"]["epochs"] == 2


def test_gpu_request_without_gpus_fails_before_any_trial(tmp_path: Path, monkeypatch) -> None:
    import search.run as run_module

    # the cluster check runs right after Ray starts; stand in a CPU-only node list for it
    monkeypatch.setattr(run_module, "start_ray", lambda *a, **k: run_module_session())
    monkeypatch.setattr(
        run_module, "alive_nodes", lambda: [{"NodeID": "n", "Resources": {"CPU": 2.0}}]
    )
    result = runner.invoke(app, ["search", str(SMOKE), "--storage", str(tmp_path), "--name", "g",
                                 "--set", "search.resources.gpus=1"])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "gpus=1 but the Ray cluster has no GPU" in result.output
    assert not list((tmp_path / "g").glob("trial_*"))


def run_module_session():
    from search.raycluster import RaySession

    return RaySession(started_here=False, dashboard_url=None, address="")
