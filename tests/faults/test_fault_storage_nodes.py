"""Fault: a multi-node search given a node-local run folder is refused before any trial.

On one machine every Ray node sees the same filesystem, so a worker node that cannot see the
storage folder is simulated: cluster/local_cluster.sh starts the worker node in a mount
namespace of its own with an empty tmpfs over the storage folder
(WEN_CLUSTER_WORKER_PRIVATE_DIR). `wen search` writes a probe file into the run folder, asks a
task pinned on each node whether it sees it (search.raycluster.storage_problems), and exits 2
with the fix before Tune starts a trial.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from wen_proc import REPO, SMOKE, run_in_private_network, wen_command

CLUSTER = REPO / "cluster" / "local_cluster.sh"
PORT = 6394  # 6390 (test_search_ray), 6392 (security) and 6393 (node loss) are taken


def _namespaces_work() -> bool:
    """`unshare -n`, and a tmpfs mounted inside `unshare -m` (both need root)."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    probe = 'd=$(mktemp -d) && mount -t tmpfs wen-probe "$d" && umount "$d"; rc=$?; rmdir "$d"; exit "$rc"'
    checks = (
        ["unshare", "-n", "true"],
        ["unshare", "-m", "--propagation", "private", "sh", "-c", probe],
    )
    return all(subprocess.run(c, capture_output=True).returncode == 0 for c in checks)


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.skipif(
    not _namespaces_work(),
    reason="needs root: `unshare -n` (private loopback network) and a tmpfs mount in `unshare -m` "
    "(a worker node that does not see the storage folder)",
)
def test_node_local_storage_on_two_nodes_is_refused_before_any_trial(
    tmp_path: Path, wen_env: dict[str, str]
) -> None:
    home, state = tmp_path / "home", Path(f"/tmp/wens-{os.getpid()}")
    storage = (tmp_path / "storage").resolve()
    home.mkdir()
    storage.mkdir()
    run = storage / "local"
    wen = " ".join(wen_command())
    env = {k: v for k, v in wen_env.items() if not k.startswith("RAY_AUTH")}
    env["HOME"] = str(home)
    cluster_env = {"WEN_CLUSTER_DIR": str(state), "WEN_CLUSTER_PORT": str(PORT)}
    script = f"""
set -u
ip link set lo up
export WEN_CLUSTER_DIR={state} WEN_CLUSTER_PORT={PORT} WEN_CLUSTER_WORKER_PRIVATE_DIR={storage}
export PATH={Path(sys.executable).parent}:$PATH
trap '{CLUSTER} stop' EXIT
{CLUSTER} start || exit 3
nodes=$(awk '{{print $1}}' {state}/pids)
# the setup itself: the head sees a file written into the storage folder, the worker does not
echo marker > {storage}/marker
# (/proc/PID/root resolves paths in PID's mount namespace)
for node in head worker; do
    pid=$(awk -v n=$node '$2 ~ "^"n {{print $1; exit}}' {state}/pids)
    seen=yes; test -e /proc/$pid/root{storage}/marker || seen=no
    echo "$node sees storage: $seen"
done
rm {storage}/marker
{wen} search {SMOKE} --address 127.0.0.1:{PORT} --storage {storage} --name local \\
    --set 'search.folds=[0]' > {tmp_path}/wen.log 2>&1
echo "search exit code: $?"
trap - EXIT
{CLUSTER} stop
left=0
for pid in $nodes; do
    # killed processes may linger as zombies (state Z) until PID 1 reaps them
    left=$((left + $(ps -o stat= -s "$pid" | grep -vc '^Z')))
done
echo "cluster processes left: $left"
"""
    try:
        done = run_in_private_network(script, cwd=REPO, env=env, timeout=240)
    finally:
        if (state / "pids").exists():  # the script died or timed out before its own `stop`
            subprocess.run(
                [str(CLUSTER), "stop"], env={**env, **cluster_env}, capture_output=True, timeout=60
            )
        shutil.rmtree(state, ignore_errors=True)
    output = done.stdout + done.stderr
    log = (tmp_path / "wen.log").read_text() if (tmp_path / "wen.log").exists() else ""
    report = output[-3000:] + "\n--- wen ---\n" + log[-5000:]
    assert done.returncode == 0, report
    assert "head sees storage: yes" in output and "worker sees storage: no" in output, report

    # refused with the clear error and its fix: exit code 2, not a crash nor a trial error
    assert "search exit code: 2" in output, report
    assert "the search cannot start" in log, log
    # exactly one node (the worker) is named as not seeing the run folder
    named = re.search(
        rf"the run folder {re.escape(str(run))} is local to this machine, but Ray node\(s\) "
        r"127\.0\.0\.1 \([0-9a-f]{8}\) cannot see it",
        log,
    )
    assert named, log
    assert "s3://" in log and "--storage" in log, log
    assert "Traceback" not in log, log

    # before any trial: Tune never started, nothing but the prepared run folder exists
    assert not list(run.glob("trial_*")), sorted(p.name for p in run.iterdir())
    assert not (run / "results.csv").exists()
    assert not (run / "tuner.pkl").exists() and not list(run.glob("experiment_state*"))
    assert not list((run / "predictions").glob("*"))
    assert not list(run.rglob("*.parquet"))
    # the probe file storage_problems wrote is removed
    assert not list(run.glob(".wen-probe-*")), sorted(p.name for p in run.iterdir())

    # the cluster is gone, every node's processes with it
    assert "local cluster stopped" in output, report
    assert "cluster processes left: 0" in output, report
