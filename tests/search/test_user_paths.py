"""A user's own world: relative paths in the config and on the command line, from a folder
that is not the repository, through a real Ray instance, for every stage.

The user's config says ``data.root: data/C-NMC_Leukemia`` and ``data.cache_dir: cache`` (as
the presets document: relative to the folder wen runs in), and the run goes to
``--storage runs``. Ray Tune runs each trial in its own working folder, so these paths only
work if the driver resolves them before any trial starts.
"""

from __future__ import annotations

import json

import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from wen_proc import SMOKE, wen_command

pytestmark = pytest.mark.slow


def _wen(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> str:
    done = subprocess.run(
        wen_command() + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"wen {' '.join(args)} exited {done.returncode}:\n{output[-4000:]}"
    return output


def _user_config(work: Path) -> Path:
    """The repository's smoke search, rewritten as a user would: real data at a relative path."""
    raw = yaml.safe_load(SMOKE.read_text())
    raw["data"].pop("synthetic")
    raw["data"]["root"] = "data/C-NMC_Leukemia"
    raw["data"]["cache_dir"] = "cache"
    raw["data"]["layout"] = "cnmc-kaggle"
    raw["train"]["epochs"] = 1
    raw["search"]["space"]["model.backbone"]["values"] = ["test_resnet"]
    path = work / "configs" / "mine.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_every_stage_runs_with_relative_paths_from_a_user_folder(tmp_path: Path, wen_env) -> None:
    work = tmp_path / "study"  # the user's folder; the repository is elsewhere
    work.mkdir()
    env = {**wen_env, "WEN_CACHE_DIR": "wen-cache"}  # a relative cache variable, too
    _wen(["data", "synth", "data/C-NMC_Leukemia", "--layout", "cnmc-kaggle",
          "--subjects-per-class", "4", "--cells-per-subject", "8", "--size", "48"], work, env)  # fmt: skip
    _user_config(work)

    out = _wen(["search", "configs/mine.yaml", "--storage", "runs", "--name", "mine"], work, env)
    run = work / "runs" / "mine"
    results = pd.read_csv(run / "results.csv")
    assert len(results) == 2 and (results["status"] == "TERMINATED").all(), out[-3000:]
    assert len(list((run / "predictions").glob("*.parquet"))) == 2
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"]["root"] == str(work / "data" / "C-NMC_Leukemia")
    assert saved["data"]["cache_dir"] == str(work / "cache")
    assert saved["search"]["storage"] == str(work / "runs")
    assert "configs/mine.yaml --storage runs" in (run / "command.txt").read_text()  # as typed
    assert any((work / "cache").iterdir()), "the decoded cache went somewhere else"

    _wen(["train", "configs/mine.yaml", "--out", "one-trial", "--set", "train.epochs=1"], work, env)
    assert (work / "one-trial" / "config.yaml").is_file()
    assert list((work / "one-trial" / "predictions").glob("*.parquet"))

    _wen(["ensemble", "runs/mine"], work, env)
    assert (run / "ensemble" / "comparison.csv").is_file()
    _wen(["export", "runs/mine"], work, env)
    assert (run / "model" / "ensemble.onnx").is_file()
    _wen(["predict", "runs/mine/model", "data/C-NMC_Leukemia/validation_data", "--out",
          "preds.csv", "--no-progress"], work, env)  # fmt: skip
    preds = pd.read_csv(work / "preds.csv")
    assert len(preds) > 0 and preds["error"].isna().all()
    _wen(["report", "runs/mine", "--no-gradcam"], work, env)
    assert (run / "report" / "report.html").is_file()

    # the trials' learning-rate troughs as candidates: a snapshot ensemble exports like any
    _wen(["ensemble", "runs/mine", "--candidates", "snapshots:top-3", "--n-trials", "10",
          "--no-progress"], work, env)  # fmt: skip
    _wen(["export", "runs/mine", "--out", "snapshot-model"], work, env)
    manifest = json.loads((work / "snapshot-model" / "manifest.json").read_text())
    assert manifest["members"] and all("@e" in m["name"] for m in manifest["members"])
