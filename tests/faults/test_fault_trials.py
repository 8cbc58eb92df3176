"""Faults 1-3: a trial raises, a trial's worker is SIGKILLed, the search driver is SIGKILLed.

Each search runs ``wen search`` in a subprocess (its own Ray, its own session) on the smoke
preset and asserts on the files the run leaves. One search carries faults 1 and 2 (every trial
raises once after epoch 1 through the ``WEN_FAULT_INJECT`` hook, and one trial's worker
process is killed with SIGKILL while that trial runs its retry); a second, with the Optuna
searcher, loses its driver.
"""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from fault_helpers import session_processes
from trainers import load_config, train
from trainers.config import TrialConfig
from run_files import assert_prediction_files
from wen_proc import SMOKE

ONE_FOLD = ["--set", "search.folds=[0]"]  # 2 trials: the smoke's two backbones on fold 0
TRAINING = r"^ray::ImplicitFunc\.train"
EPOCHS = 3  # the retry runs epochs 2-3: seconds in which to kill it


def results(run: Path) -> pd.DataFrame:
    frame = pd.read_csv(run / "results.csv")
    assert frame["trial_id"].is_unique  # one row per trial
    return frame


def assert_complete(run: Path, frame: pd.DataFrame, epochs: int = 2) -> None:
    """Every trial finished once: one prediction set (no temp files), weights and logs."""
    assert (frame["status"] == "TERMINATED").all(), frame.to_string()
    assert (frame["epochs_run"] == epochs).all()
    assert_prediction_files(run, frame)  # one set a trial, its snapshots, no temp files
    for trial in frame["trial_id"]:
        assert (run / "models" / trial / "model.safetensors").stat().st_size > 0
        assert list((run / "tensorboard" / trial).glob("events.out.tfevents.*"))


def failures(output: str) -> dict[str, int]:
    """Tune's last "# failures" count per trial, from its error table."""
    out: dict[str, int] = {}
    for trial, count in re.findall(r"\|\s*trial_(\S+)\s*\|\s*(\d+)\*?\s*\|", output):
        out[trial] = int(count)
    return out


def training_workers(sid: int) -> dict[int, str]:
    """Trial workers of session ``sid`` inside a trial's ``train``: pid -> trial id.

    Ray titles a worker ``ray::ImplicitFunc.train`` while it trains (``ray::ImplicitFunc``
    once the trial has raised and the process is on its way out), and Tune runs each trial in
    its own working directory, ``trial_<id>``."""
    found = {}
    for pid in session_processes(sid, TRAINING):
        try:
            name = Path(os.readlink(f"/proc/{pid}/cwd")).name
        except OSError:
            continue
        if name.startswith("trial_"):
            found[pid] = name.removeprefix("trial_")
    return found


def _kill_a_retried_trial(sid: int, first: dict[str, int]) -> tuple[int, str] | None:
    """SIGKILL a worker training a trial in its retry; (pid, trial id), or None.

    ``first`` remembers the worker each trial was first seen training in. A trial in another
    worker has raised the injected fault and been restored from its checkpoint; it never raises
    again, so killing it now is exactly one more failure. (A worker killed after its trial
    raised, or between trials, fails nothing: the choice cannot be left to chance.)"""
    for pid, trial in training_workers(sid).items():
        if first.setdefault(trial, pid) == pid:
            continue
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
        return pid, trial
    return None


@pytest.fixture(scope="module")
def faulty_search(
    tmp_path_factory: pytest.TempPathFactory, wen_env: dict[str, str]
) -> dict[str, Any]:
    """Faults 1 + 2 in one search: every trial raises after epoch 1 on its first fresh start,
    and one trial's worker is killed with SIGKILL while that trial runs its retry."""
    from wen_proc import WenProcess

    storage = tmp_path_factory.mktemp("faulty")
    env = {**wen_env, "WEN_FAULT_INJECT": "1"}
    args = ["search", str(SMOKE), "--storage", str(storage), "--name", "faulty", *ONE_FOLD,
            "--set", f"train.epochs={EPOCHS}"]  # fmt: skip
    wen = WenProcess(args, env)
    first: dict[str, int] = {}
    try:
        victim, trial = wen.wait_for(
            lambda: _kill_a_retried_trial(wen.proc.pid, first),
            300,
            "a retried trial to kill",
            interval=0.2,
        )
        code = wen.finish(timeout=480)
    finally:
        if wen.proc.poll() is None:
            wen.kill_group()
    return {"run": storage / "faulty", "code": code, "output": wen.output, "victim": victim,
            "victim_trial": trial}  # fmt: skip


@pytest.mark.slow
def test_trial_that_raises_is_retried_from_its_checkpoint_with_equal_metrics(faulty_search) -> None:
    run, output = faulty_search["run"], faulty_search["output"]
    assert faulty_search["code"] == 0, output[-4000:]
    assert "injected failure after epoch 1" in output
    frame = results(run)
    assert len(frame) == 2
    assert_complete(run, frame, epochs=EPOCHS)
    for trial in frame["trial_id"]:
        progress = pd.read_csv(run / f"trial_{trial}" / "progress.csv")
        # epoch 2 ran after resuming from the epoch-1 checkpoint, not from scratch
        assert progress.loc[progress["epoch"] == 2, "resumed_from_epoch"].tolist() == [1]
        # ... and its metrics equal an uninterrupted run of the same trial config (CPU, seed)
        meta = json.loads((run / "models" / trial / "config.json").read_text())
        config = load_config(meta["config"], model=TrialConfig)
        reports: list[dict] = []
        train(config, reports.append, out_dir=run.parent / f"uninterrupted-{trial}")
        history = progress.drop_duplicates("epoch", keep="last").set_index("epoch")
        for report in reports:
            for key in ("val_loss", "val_wfs", "val_auc", "train_loss"):
                assert history.loc[report["epoch"], key] == pytest.approx(
                    report[key], rel=1e-9, abs=1e-12
                ), (trial, report["epoch"], key)


@pytest.mark.slow
def test_killed_trial_worker_is_retried_and_completes(faulty_search) -> None:
    run, output = faulty_search["run"], faulty_search["output"]
    assert faulty_search["code"] == 0, output[-4000:]
    frame = results(run)
    assert_complete(run, frame, epochs=EPOCHS)
    # the killed worker's trial failed once more than the other (the injected fault) and
    # still finished, with one result row and one prediction set
    counts = failures(output)
    expected = {t: 2 if t == faulty_search["victim_trial"] else 1 for t in frame["trial_id"]}
    assert counts == expected, (faulty_search["victim"], counts, output[-3000:])


@pytest.mark.slow
def test_killed_driver_resumes_without_losing_or_repeating_trials(
    tmp_path: Path, start_wen
) -> None:
    """Fault 3, with the Optuna searcher: its state must survive the driver's death."""
    samples = 4
    args = ["search", str(SMOKE), "--storage", str(tmp_path), "--name", "killed", *ONE_FOLD,
            "--set", "search.algorithm=optuna", "--set", f"search.num_samples={samples}",
            "--set", "search.max_concurrent=1", "--set", "search.seed=11", "--set", "train.epochs=6",
            "--set", "search.space={optim.lr: {type: loguniform, low: 1.0e-4, high: 1.0e-2}}"]  # fmt: skip
    run = tmp_path / "killed"
    wen = start_wen(args)

    def mid_search() -> bool:
        done = (
            {p.stem for p in (run / "predictions").glob("*.parquet")}
            if (run / "predictions").is_dir()
            else set()
        )
        if len(done) < 2:
            return False
        # a checkpoint folder of an unfinished trial: Tune persists it as the trial reports
        running = [
            p
            for p in run.glob("trial_*/checkpoint_*")
            if p.parent.name.removeprefix("trial_") not in done
        ]
        return bool(running)

    wen.wait_for(mid_search, 400, "two trials to finish and a third to checkpoint")
    finished = {p: p.stat().st_mtime_ns for p in (run / "predictions").glob("*.parquet")}
    wen.kill_driver()
    assert not (run / "results.csv").exists()

    again = start_wen([*args, "--resume"])
    assert again.finish(timeout=480) == 0, again.output[-4000:]
    frame = results(run)
    # the configured number of trials, each once, with its predictions; none of them repeated;
    # orphans of Tune's at-least-once restore (if any) are set aside, never read
    assert len(frame) == samples, frame.to_string()
    orphans = run / "predictions" / "_orphaned"
    assert not {p.stem for p in orphans.glob("*.parquet")} & set(frame["trial_id"])
    assert_complete(run, frame, epochs=6)
    assert frame["optim.lr"].nunique() == samples, frame["optim.lr"].tolist()
    for path, mtime in finished.items():
        assert path.stat().st_mtime_ns == mtime, f"{path.name} was re-run"
    commands = (run / "command.txt").read_text().splitlines()
    assert len(commands) == 2 and commands[1].endswith("--resume")
