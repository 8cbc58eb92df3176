"""Fault 9: the ensemble stage killed mid-study, and two ``wen ensemble`` runs on one RUN.

The Optuna study lives in ``RUN/ensemble/study.db`` (finished trials copied in every 50); a
re-run resumes it, so the study ends with exactly ``--n-trials`` trials. A run holds
``RUN/ensemble/run.lock`` from start to end, so a second run waits instead of adding trials to
the same study at once or interleaving its files with the first's.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

FAST = ["--bootstrap", "10", "--crossfit-folds", "2", "--no-progress"]


def complete_trials(run: Path) -> list[int]:
    """Numbers of the COMPLETE trials in the run's study database (read-only)."""
    db = run / "ensemble" / "study.db"
    if not db.is_file():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            rows = con.execute("SELECT number FROM trials WHERE state = 'COMPLETE'").fetchall()
    except sqlite3.Error:  # tables not created yet, or locked for a moment
        return []
    return [r[0] for r in rows]


@pytest.mark.slow
def test_killed_ensemble_study_resumes_where_it_stopped(prediction_run: Path, start_wen) -> None:
    args = ["ensemble", str(prediction_run), "--methods", "optuna", "--n-trials", "600", *FAST]
    first = start_wen(args)
    first.wait_for(lambda: len(complete_trials(prediction_run)) >= 50, 300, "50 trials in study.db")
    os.killpg(first.proc.pid, signal.SIGKILL)
    first.proc.wait(timeout=30)
    at_kill = len(complete_trials(prediction_run))
    assert 50 <= at_kill < 600, at_kill
    assert not (prediction_run / "ensemble" / "chosen.json").exists()  # it really was cut off

    again = start_wen(args)
    assert again.finish(timeout=300) == 0, again.output[-3000:]
    numbers = complete_trials(prediction_run)
    # the study continued: exactly the configured number of trials, none twice
    assert len(numbers) == 600 and len(set(numbers)) == 600
    weights = json.loads((prediction_run / "ensemble" / "weights.json").read_text())
    assert weights["methods"]["optuna"]["n_trials_done"] == 600


@pytest.mark.slow
def test_two_concurrent_runs_neither_corrupt_the_study_nor_mix_outputs(
    prediction_run: Path, start_wen
) -> None:
    common = ["ensemble", str(prediction_run), "--n-trials", "120", *FAST]
    a = start_wen([*common, "--methods", "sap,optuna"])
    b = start_wen([*common, "--methods", "sap,wen_acc,wen_auc,optuna"])
    assert a.finish(timeout=300) == 0, a.output[-3000:]
    assert b.finish(timeout=300) == 0, b.output[-3000:]
    waited = [p for p in (a, b) if "another `wen ensemble` is running" in p.output]
    assert len(waited) == 1, (a.output[-2000:], b.output[-2000:])
    last = waited[0]  # the run that waited finished last: every output file must be its own
    expect = {"sap", "optuna", "best_single", "wen_kappa"}
    if last is b:
        expect |= {"wen_acc", "wen_auc"}
    out = prediction_run / "ensemble"
    assert set(pd.read_csv(out / "comparison.csv")["method"]) == expect
    assert set(json.loads((out / "weights.json").read_text())["methods"]) == expect
    assert json.loads((out / "chosen.json").read_text())["method"] in expect
    numbers = complete_trials(prediction_run)
    assert len(numbers) == 120 and len(set(numbers)) == 120  # the second resumed a finished study
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
