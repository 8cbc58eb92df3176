"""Fault 4: a worker node is lost mid-search; its trial is rescheduled on the head.

On a two-node cluster on 127.0.0.1 (cluster/local_cluster.sh inside a private network
namespace) the worker node is stopped while its trial trains. Tune sees the trial's node die,
counts a failure (search.max_failures, 2 in the smoke preset) and restarts the trial from its
latest checkpoint on the head, once the head's CPU is free. The search exits 0.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest


from run_files import assert_prediction_files
from wen_proc import REPO, SMOKE, run_in_private_network, unshare_works, wen_command

CLUSTER = REPO / "cluster" / "local_cluster.sh"
EPOCHS = 30  # an epoch of the smoke data takes ~1 s: a wide window to stop the worker mid-trial

# Polls until a trial running on the worker node has checkpointed an epoch into RUN (so the
# lost trial has something to resume from) and no trial has finished yet.
POLL = """
import os, sys, time
from pathlib import Path

worker_sid, run, deadline = int(sys.argv[1]), Path(sys.argv[2]), time.time() + float(sys.argv[3])
search = int(sys.argv[4])

def on_worker():
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) != worker_sid:
                continue
            cmd = (entry / "cmdline").read_bytes().replace(b"\\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "ImplicitFunc" in cmd:
            found.append(int(entry.name))
    return found

while time.time() < deadline and Path(f"/proc/{search}").exists():
    done = {p.stem for p in run.glob("predictions/*.parquet")}
    pids = on_worker()
    # Tune runs a trial in its own working dir, named like the trial's folder in RUN
    names = set()
    for pid in pids:
        try:
            names.add(Path(os.readlink(f"/proc/{pid}/cwd")).name)
        except OSError:
            pass
    ready = [n for n in names if list(run.glob(f"{n}/checkpoint_*"))]
    if ready and not done:
        print("worker trial", *ready, "processes", *pids, flush=True)
        sys.exit(0)
    time.sleep(0.2)
print("timed out: worker pids", on_worker(), "done", sorted(done))
sys.exit(1)
"""


@pytest.mark.slow
@pytest.mark.timeout(420)
@pytest.mark.skipif(
    not unshare_works(), reason="needs `unshare -n` (root) for a private loopback network"
)
def test_lost_worker_node_trial_finishes_on_head(tmp_path: Path, wen_env: dict[str, str]) -> None:
    home, state, port = tmp_path / "home", Path(f"/tmp/wenf-{os.getpid()}"), 6393
    home.mkdir()
    (tmp_path / "poll.py").write_text(POLL)
    run = tmp_path / "nodeloss"
    wen = " ".join(wen_command())
    env = {k: v for k, v in wen_env.items() if not k.startswith("RAY_AUTH")}
    # the GCS declares a silent node dead after period x threshold: ~3 s instead of ~15 s
    env.update(
        HOME=str(home), RAY_health_check_period_ms="1000", RAY_health_check_failure_threshold="3"
    )
    # the killed trial cannot remove its scratch folder: keep it under tmp_path, not /tmp
    (tmp_path / "tmp").mkdir()
    env["TMPDIR"] = str(tmp_path / "tmp")
    script = f"""
set -u
ip link set lo up
export WEN_CLUSTER_DIR={state} WEN_CLUSTER_PORT={port} PATH={Path(sys.executable).parent}:$PATH
{CLUSTER} start || {{ {CLUSTER} stop; exit 3; }}
worker=$(awk '$2 == "worker1" {{print $1}}' {state}/pids)
{wen} search {SMOKE} --address 127.0.0.1:{port} --storage {tmp_path} --name nodeloss \\
    --set 'search.folds=[0]' --set train.epochs={EPOCHS} > {tmp_path}/wen.log 2>&1 &
search=$!
if python {tmp_path}/poll.py "$worker" {run} 240 "$search"; then
    {CLUSTER} stop-worker 1
    sleep 1
    # killed processes may linger as zombies (state Z) until PID 1 reaps them
    echo "worker node processes left: $(ps -o stat= -s "$worker" | grep -vc '^Z')"
else
    echo "the worker never ran a trial mid-way"
    kill -KILL "$search"
fi
wait "$search"; rc=$?
echo "search exit code: $rc"
{CLUSTER} stop
exit $rc
"""
    try:
        done = run_in_private_network(script, cwd=REPO, env=env, timeout=400)
    finally:
        shutil.rmtree(state, ignore_errors=True)
    log = (tmp_path / "wen.log").read_text() if (tmp_path / "wen.log").exists() else ""
    output = done.stdout + done.stderr
    assert "local cluster: worker1" in output and "stopped" in output, output[-3000:] + log[-3000:]
    assert "worker node processes left: 0" in output, output[-3000:]
    assert done.returncode == 0, output[-3000:] + "\n--- wen ---\n" + log[-5000:]
    # the failure was the node's loss, and the retry started from the trial's checkpoint
    assert "has been marked dead" in log, log[-5000:]
    assert re.search(r"Restored on 127\.0\.0\.1 from checkpoint: .*checkpoint_\d+", log), log[
        -5000:
    ]

    frame = pd.read_csv(run / "results.csv")
    assert len(frame) == 2 and frame["trial_id"].is_unique, frame.to_string()
    assert (frame["status"] == "TERMINATED").all(), frame.to_string()
    assert (frame["epochs_run"] == EPOCHS).all(), frame.to_string()
    assert_prediction_files(run, frame)  # one each, their snapshots, no temp files

    # every trial's reports in order: the lost one began on the worker, ended on the head
    history = {t: pd.read_csv(run / f"trial_{t}" / "progress.csv") for t in frame["trial_id"]}
    moved = [t for t, h in history.items() if h["node_id"].nunique() == 2]
    assert len(moved) == 1, {t: h[["epoch", "node_id"]].to_dict("list") for t, h in history.items()}
    lost, stayed = moved[0], next(t for t in history if t != moved[0])
    head = history[stayed]["node_id"].unique()
    assert len(head) == 1  # the head's trial never moved
    lost_nodes = history[lost]["node_id"].tolist()
    assert lost_nodes[0] != head[0] and lost_nodes[-1] == head[0], lost_nodes
    row = frame.set_index("trial_id").loc[lost]
    assert row["node_id"] == head[0] and row["resumes"] >= 1, row.to_dict()
    # the retry continued from a checkpoint taken on the worker, not from scratch
    on_head = history[lost][history[lost]["node_id"] == head[0]]
    assert (on_head["resumed_from_epoch"] >= 1).all(), on_head[["epoch", "resumed_from_epoch"]]
    assert "127.0.0.1" in set(frame["node_ip"])
