"""The cluster path as the README documents it, on loopback clusters in a private network.

- ``ray job submit ... -- wen search CONFIG --address auto --storage SHARED`` on a two-node
  cluster with token authentication (cluster/local_cluster.sh): the job's working folder is
  uploaded as Ray does (the config inside it), the dataset and the storage are on paths every
  node sees; the search finishes. The same job with a relative ``--storage`` is refused with
  the reason (it would land in Ray's temporary copy of the working folder).
- ``wen search --address`` joins a cluster somebody started WITHOUT token authentication:
  it warns what that exposes and runs, with no token anywhere.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from wen_proc import REPO, SMOKE, run_in_private_network, unshare_works, wen_command

CLUSTER = REPO / "cluster" / "local_cluster.sh"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not unshare_works(), reason="needs `unshare -n` (root) for a private loopback network"
    ),
]


def _env(wen_env: dict[str, str], home: Path) -> dict[str, str]:
    env = {k: v for k, v in wen_env.items() if not k.startswith("RAY_AUTH")}
    env.update(HOME=str(home), PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}")
    return env


def _small_config(folder: Path, data_root: Path) -> Path:
    """Two one-epoch trials (one backbone, two folds) on a dataset on a shared path."""
    raw = yaml.safe_load(SMOKE.read_text())
    raw["data"].pop("synthetic")
    raw["data"].update(root=str(data_root), layout="cnmc-kaggle")
    raw["train"]["epochs"] = 1
    raw["search"]["space"]["model.backbone"]["values"] = ["test_resnet"]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _synth(root: Path, env: dict[str, str]) -> None:
    import subprocess

    done = subprocess.run(
        wen_command() + ["data", "synth", str(root), "--layout", "cnmc-kaggle",
                         "--subjects-per-class", "4", "--cells-per-subject", "8", "--size", "48"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def _assert_finished(run: Path, trials: int) -> None:
    frame = pd.read_csv(run / "results.csv")
    assert len(frame) == trials and (frame["status"] == "TERMINATED").all(), frame.to_string()
    assert len(list((run / "predictions").glob("*.parquet"))) == trials


@pytest.mark.timeout(480)
def test_ray_job_submit_of_wen_search_on_a_two_node_cluster(
    tmp_path: Path, wen_env: dict[str, str]
) -> None:
    home, state, port, dash = tmp_path / "home", Path(f"/tmp/wenj-{os.getpid()}"), 6394, 8394
    home.mkdir()
    shared = tmp_path / "shared"  # every node of a loopback cluster sees this folder
    env = _env(wen_env, home)
    _synth(shared / "C-NMC_Leukemia", env)
    job = tmp_path / "job"  # the working folder `ray job submit` uploads
    _small_config(job, shared / "C-NMC_Leukemia")
    submit = f"ray job submit --address http://127.0.0.1:{dash} --working-dir {job} --"
    script = f"""
set -u
ip link set lo up
export WEN_CLUSTER_DIR={state} WEN_CLUSTER_PORT={port} WEN_CLUSTER_WORKERS=1
export WEN_CLUSTER_DASHBOARD_PORT={dash} RAY_AUTH_MODE=token
{CLUSTER} start > {tmp_path}/cluster.log 2>&1 || {{ cat {tmp_path}/cluster.log; {CLUSTER} stop; exit 3; }}
{submit} wen search study.yaml --address auto --storage {shared}/runs --name job > {tmp_path}/job.log 2>&1
echo "job=$?"
{submit} wen search study.yaml --address auto --storage runs --name relative > {tmp_path}/relative.log 2>&1
echo "relative=$?"
{CLUSTER} stop
"""
    try:
        done = run_in_private_network(script, cwd=tmp_path, env=env, timeout=450)
    finally:
        shutil.rmtree(state, ignore_errors=True)
    output = done.stdout + done.stderr
    logs = {
        n: (tmp_path / f"{n}.log").read_text()
        for n in ("job", "relative")
        if (tmp_path / f"{n}.log").exists()
    }
    assert "job=0" in output, output[-2000:] + logs.get("job", "")[-5000:]
    assert "succeeded" in logs["job"], logs["job"][-3000:]
    _assert_finished(shared / "runs" / "job", trials=2)
    saved = yaml.safe_load((shared / "runs" / "job" / "config.yaml").read_text())
    assert saved["data"]["root"] == str(shared / "C-NMC_Leukemia")
    assert saved["search"]["storage"] == str(shared / "runs")
    # the relative storage would have landed in the job's temporary working folder
    assert "relative=0" not in output, output[-2000:]
    assert "temporary copy of its working folder" in logs["relative"], logs["relative"][-3000:]
    assert not (shared / "runs" / "relative").exists()


@pytest.mark.timeout(300)
def test_joining_a_cluster_without_token_auth_warns_and_runs(
    tmp_path: Path, wen_env: dict[str, str]
) -> None:
    home, temp, port = tmp_path / "home", Path(f"/tmp/wenn-{os.getpid()}"), 6395
    home.mkdir()
    env = _env(wen_env, home)
    _synth(tmp_path / "data", env)
    config = _small_config(tmp_path, tmp_path / "data")
    wen = " ".join(wen_command())
    # somebody else's cluster: plain `ray start`, token authentication off
    script = f"""
set -u
ip link set lo up
export RAY_AUTH_MODE=disabled
ray start --head --port={port} --node-ip-address=127.0.0.1 --num-cpus=2 --num-gpus=0 \\
    --include-dashboard=false --temp-dir={temp} --disable-usage-stats > {tmp_path}/head.log 2>&1 \\
    || {{ cat {tmp_path}/head.log; exit 3; }}
unset RAY_AUTH_MODE
{wen} search {config} --address 127.0.0.1:{port} --storage {tmp_path}/runs --name open > {tmp_path}/wen.log 2>&1
echo "search=$?"
RAY_AUTH_MODE=disabled ray stop --force > /dev/null 2>&1
"""
    try:
        done = run_in_private_network(script, cwd=tmp_path, env=env, timeout=280)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    log = (tmp_path / "wen.log").read_text()
    assert "search=0" in done.stdout, done.stdout + done.stderr + log[-5000:]
    assert "runs WITHOUT token authentication" in log and "run any code" in log, log[-3000:]
    _assert_finished(tmp_path / "runs" / "open", trials=2)
    assert not (home / ".ray" / "auth_token").exists()  # joining made no token of its own
