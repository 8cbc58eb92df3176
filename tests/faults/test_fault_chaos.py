"""Chaos: 30 trials on a two-node loopback cluster under a seeded schedule of faults.

``chaos_search.py`` (inside a private network namespace, token auth on every node) runs an
Optuna search of 30 short trials while trial workers are SIGKILLed every ~20 s, the worker
node is killed once and replaced, and the driver is SIGKILLed once and the search resumed
with ``--resume``. Then every guarantee is checked on the files: each configured trial has
exactly one result row and one readable prediction set, no temporary file is left anywhere
in the run folder, and the searcher issued no configuration twice.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest

from run_files import assert_prediction_files
from wen_proc import REPO, run_in_private_network, unshare_works

SAMPLES = 30
SEED = 7
CHAOS = Path(__file__).with_name("chaos_search.py")


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.skipif(
    not unshare_works(), reason="needs `unshare -n` (root) for a private loopback network"
)
def test_thirty_trials_survive_a_seeded_schedule_of_faults(
    tmp_path: Path, wen_env: dict[str, str]
) -> None:
    home, state = tmp_path / "home", Path(f"/tmp/wenx-{os.getpid()}")
    home.mkdir()
    env = {k: v for k, v in wen_env.items() if not k.startswith("RAY_AUTH")}
    env.update(
        HOME=str(home),
        WEN_CLUSTER_DIR=str(state),
        WEN_CLUSTER_PORT="6395",
        PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
        # the GCS declares a silent node dead after period x threshold: ~3 s, not ~15 s
        RAY_health_check_period_ms="1000",
        RAY_health_check_failure_threshold="3",
    )
    # killed trials cannot remove their scratch folders: keep them where the test looks
    (tmp_path / "tmp").mkdir()
    env["TMPDIR"] = str(tmp_path / "tmp")
    script = (
        f"{sys.executable} {CHAOS} --storage {tmp_path} --name chaos "
        f"--samples {SAMPLES} --seed {SEED} --timeout 1000"
    )
    try:
        done = run_in_private_network(script, cwd=REPO, env=env, timeout=1150)
    finally:
        shutil.rmtree(state, ignore_errors=True)
    log = tmp_path / "chaos.log"
    tail = (done.stdout + done.stderr)[-3000:] + "\n--- wen ---\n"
    tail += log.read_text()[-6000:] if log.exists() else ""
    assert done.returncode == 0, tail
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    print("chaos:", counts)
    assert counts["rc"] == 0, tail
    assert counts["worker_kills"] >= 2, counts
    assert counts["node_kills"] == counts["node_restarts"] == counts["driver_kills"] == 1, counts

    run = tmp_path / "chaos"
    frame = pd.read_csv(run / "results.csv")
    # every configured trial: one row, finished, all its epochs
    assert len(frame) == SAMPLES and frame["trial_id"].is_unique, frame.to_string()
    assert (frame["status"] == "TERMINATED").all(), frame.to_string()
    assert (frame["epochs_run"] == 3).all(), frame.to_string()
    # one readable prediction set per trial (and its snapshots); orphans set aside, unread
    assert_prediction_files(run, frame)
    orphans = run / "predictions" / "_orphaned"
    assert not {p.stem for p in orphans.glob("*.parquet")} & set(frame["trial_id"])
    # no temporary file anywhere in the run folder (Tune's storage marker is not one)
    temporary = [p for p in run.rglob("*") if p.name.endswith(".tmp")
                 or (p.name.startswith(".") and p.name != ".validate_storage_marker")]  # fmt: skip
    assert not temporary, temporary[:10]
    # the searcher issued no configuration twice
    values = frame["schedule.max_lr"]
    assert values.nunique() == SAMPLES, values.tolist()
    # the faults struck trials: some were retried from a checkpoint
    assert frame["resumes"].sum() >= 1, frame[["trial_id", "resumes"]].to_string()
