"""End-to-end searches on Ray: smoke preset, retries, kill + resume, two nodes, dashboards.

Each test runs ``wen search`` in a subprocess (its own Ray instance, its own session) and
asserts on the files the run leaves: results tables, prediction files, model weights,
TensorBoard logs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import urllib.request
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from search.raycluster import free_port

from run_files import assert_prediction_files
from trainers.run_layout import RUN_LAYOUT
from wen_proc import (
    REPO,
    SMOKE,
    listening_addresses,
    run_in_private_network,
    unshare_works,
    wen_command,
)

ONE_FOLD = ["--set", "search.folds=[0]"]  # 2 trials: the smoke's two backbones on fold 0


def hparams_sessions(logdir: Path) -> dict[str, dict[str, Any]]:
    """Every session TensorBoard's HParams plugin lists for ``logdir`` (its HTTP data API:
    what TensorBoard's own HParams view asks), by name, with its hyperparameters."""
    from tensorboard import program

    board = program.TensorBoard()
    board.configure(argv=[None, "--logdir", str(logdir), "--host", "127.0.0.1",
                          "--port", str(free_port(6150))])  # fmt: skip
    url = board.launch()
    body = {"experimentName": "", "startIndex": 0, "sliceSize": 1000,
            "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_RUNNING"]}  # fmt: skip
    request = urllib.request.Request(
        url + "data/plugin/hparams/session_groups",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "X-XSRF-Protected": "1"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        groups = json.loads(response.read())["sessionGroups"]
    return {g["name"]: g["hparams"] for g in groups}


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.status == 200
    except OSError:
        return False


def results(run: Path) -> pd.DataFrame:
    frame = pd.read_csv(run / "results.csv")
    assert frame["trial_id"].is_unique
    return frame


def assert_complete(run: Path, frame: pd.DataFrame, epochs: int = 2) -> None:
    """Every trial finished once, with predictions, weights and TensorBoard logs."""
    assert (frame["status"] == "TERMINATED").all(), frame.to_string()
    assert (frame["epochs_run"] == epochs).all()
    assert_prediction_files(run, frame)  # one set a trial, its snapshots, no temp files
    for trial in frame["trial_id"]:
        assert (run / "models" / trial / "model.safetensors").stat().st_size > 0
        assert (run / "models" / trial / "config.json").is_file()
        assert list((run / "tensorboard" / trial).glob("events.out.tfevents.*"))


def _watch_live_epochs(wen: Any, browser: Any) -> tuple[str, list[int], set[str]]:
    """Open ``wen search --dashboard``'s page while the search runs; the epoch counts it
    showed, on one page load, until the search ended; and where its socket listened."""
    board = wen.wait_for(
        lambda: re.search(r"wen dashboard: (http://127\.0\.0\.1:(\d+)/)", wen.output),
        120,
        "the wen dashboard URL",
    )
    page = browser.new_page()
    page.goto(board.group(1))
    listening = listening_addresses(int(board.group(2)))
    seen: list[int] = []
    while wen.proc.poll() is None:
        epochs = page.get_attribute("#status", "data-epochs")
        if epochs is not None and (not seen or int(epochs) != seen[-1]):
            seen.append(int(epochs))
        page.wait_for_timeout(500)
    return board.group(1), seen, listening


def test_smoke_search_completes_with_dashboard(tmp_path: Path, start_wen, browser: Any) -> None:
    """The smoke preset on local Ray: 4 trials, out-of-fold predictions, the Ray dashboard
    answering, `wen dashboard` showing new epochs live (one page load), TensorBoard's HParams
    view listing every trial."""
    port_was_free = free_port(8265) == 8265
    # 4 epochs a trial (the preset has 2): the 16 epochs span several of the page's polls
    wen = start_wen(["search", str(SMOKE), "--storage", str(tmp_path), "--name", "smoke",
                     "--set", "train.epochs=4",
                     "--dashboard", "--dashboard-port", str(free_port(8610))])  # fmt: skip
    url = wen.wait_for(
        lambda: re.search(r"Ray dashboard: (http://127\.0\.0\.1:(\d+))", wen.output),
        180,
        "the dashboard URL",
    )
    if port_was_free:
        assert url.group(2) == "8265"
    # the dashboard answers while the search runs (before results.csv exists)
    wen.wait_for(lambda: http_ok(url.group(1)), 60, "the Ray dashboard to answer")
    assert not (tmp_path / "smoke" / "results.csv").exists()
    _, seen, listening = _watch_live_epochs(wen, browser)
    assert wen.finish(timeout=400) == 0, wen.output[-4000:]
    assert listening == {"127.0.0.1"}
    run = tmp_path / "smoke"
    frame = results(run)
    assert len(frame) == 4
    assert_complete(run, frame, epochs=4)
    # epochs arrived on the open page as the trials reported them, without a reload: the
    # one page load showed a count between none and all, and the count never went back
    total = int(frame["epochs_run"].sum())
    print("epochs on the page:", seen, "of", total)
    assert seen == sorted(seen) and any(0 < n < total for n in seen), (seen, total)
    for trial in frame["trial_id"]:
        record = json.loads((run / RUN_LAYOUT.live_trial(trial)).read_text())
        assert record["status"] == "TERMINATED" and len(record["epochs"]) == 4
        assert record["epochs"][-1]["lr_points"]  # the learning-rate trace the page draws
    assert json.loads((run / RUN_LAYOUT.live_search).read_text())["status"] == "finished"
    assert sorted(hparams_sessions(run / RUN_LAYOUT.tensorboard)) == sorted(frame["trial_id"])
    # each backbone trained on both folds: out-of-fold predictions for the ensemble stage
    assert sorted(frame.groupby("model.backbone")["fold"].apply(sorted).tolist()) == [
        [0, 1],
        [0, 1],
    ]
    # one configuration = the same sampled learning rate on every fold
    assert frame.groupby("model.backbone")["optim.lr"].nunique().eq(1).all()
    assert frame["node_ip"].notna().all() and frame["node_id"].notna().all()
    # 4 trials, 2 at a time: Tune reused the 2 trial workers (no process start, no imports)
    pids = {int(pd.read_csv(run / f"trial_{t}" / "progress.csv")["pid"].iloc[-1])
            for t in frame["trial_id"]}  # fmt: skip
    assert len(pids) == 2, pids
    # Tune's checkpoints name the trainer's checkpoints in RUN: no weights copied into them
    for folder in run.glob("trial_*/checkpoint_*"):
        assert sorted(p.name for p in folder.iterdir()) == ["wen_tune.json"], folder
    assert (run / "config.yaml").is_file() and (run / "results.parquet").is_file()
    assert (run / "command.txt").read_text().count("wen search") == 1
    assert "val_wfs" in wen.output and "TERMINATED" in wen.output  # the live table


@pytest.mark.slow
def test_asha_promotion_pauses_trials_and_promotes_the_best(tmp_path: Path, start_wen) -> None:
    """6 trials, rungs at epochs 1 and 3 of 4, reduction factor 3: every trial runs to
    rung 1, floor(6/3) = 2 go on to rung 3, and one is promoted to the end, so the search
    spends 6 + 2 x 2 + 1 = 11 epochs of FIFO's 24. Paused trials resume from their rung's
    checkpoint; the others stop where they paused."""
    wen = start_wen(["search", str(SMOKE), "--storage", str(tmp_path), "--name", "promo",
                     "--set", "search.folds=null", "--set", "search.num_samples=3",
                     "--set", "train.epochs=4", "--set", "search.scheduler.name=asha_promotion",
                     "--set", "search.scheduler.reduction_factor=3",
                     "--set", "search.max_concurrent=null"])  # fmt: skip
    assert wen.finish(timeout=400) == 0, wen.output[-4000:]
    run = tmp_path / "promo"
    frame = results(run)
    assert len(frame) == 6 and (frame["status"] == "TERMINATED").all(), frame.to_string()
    assert sorted(frame["epochs_run"]) == [1, 1, 1, 1, 3, 4], frame.to_string()
    assert frame.loc[frame["epochs_run"] < 4, "stopped_early"].all()
    # the one that ran to the end waited at rung 3 (fewer than 3 rivals) and resumed there
    full = frame.loc[frame["epochs_run"] == 4].iloc[0]
    assert full["resumes"] >= 1, frame.to_string()
    history = pd.read_csv(run / f"trial_{full['trial_id']}" / "progress.csv")
    assert history.loc[history["epoch"] == 4, "resumed_from_epoch"].tolist() == [3]
    # the best at rung 3 is the one promoted (ties by the validation loss)
    at3 = {t: pd.read_csv(run / f"trial_{t}" / "progress.csv").set_index("epoch").loc[3]
           for t in frame.loc[frame["epochs_run"] >= 3, "trial_id"]}  # fmt: skip
    best = max(at3, key=lambda t: (at3[t]["val_wfs"], -at3[t]["val_loss"]))
    assert best == full["trial_id"], {t: (r["val_wfs"], r["val_loss"]) for t, r in at3.items()}
    # predictions: the finished trial's best-epoch file; every trial's trough snapshots
    names = sorted(p.name for p in (run / "predictions").glob("*.parquet"))
    assert names == [f"{full['trial_id']}.parquet"], names
    assert_prediction_files(run, frame, best_files=False)


@pytest.mark.slow
def test_failed_trial_is_retried_from_its_checkpoint(tmp_path: Path, start_wen) -> None:
    wen = start_wen(
        ["search", str(SMOKE), "--storage", str(tmp_path), "--name", "retry", *ONE_FOLD],
        {"WEN_FAULT_INJECT": "1"},
    )
    assert wen.finish(timeout=400) == 0, wen.output[-4000:]
    assert "injected failure after epoch 1" in wen.output
    run = tmp_path / "retry"
    frame = results(run)
    assert len(frame) == 2
    assert_complete(run, frame)
    assert (frame["resumes"] >= 1).all()
    for trial in frame["trial_id"]:
        progress = pd.read_csv(run / f"trial_{trial}" / "progress.csv")
        # epoch 2 ran after resuming from the epoch-1 checkpoint, not from scratch
        assert progress.loc[progress["epoch"] == 2, "resumed_from_epoch"].tolist() == [1]


@pytest.mark.slow
def test_killed_driver_resumes_without_duplicates(tmp_path: Path, start_wen) -> None:
    # 8 epochs: the second trial must still be running when the poll (every 0.5 s) sees its
    # first checkpoint, or the driver is killed after the search has already finished
    args = ["search", str(SMOKE), "--storage", str(tmp_path), "--name", "killed", *ONE_FOLD,
            "--set", "search.max_concurrent=1", "--set", "train.epochs=8"]  # fmt: skip
    run = tmp_path / "killed"
    wen = start_wen(args)

    def second_trial_running() -> bool:
        done = (
            {p.stem for p in (run / "predictions").glob("*.parquet")}
            if (run / "predictions").is_dir()
            else set()
        )
        if len(done) != 1:
            return False
        # Tune persists a trial's checkpoint into RUN as the trial reports it (progress.csv
        # is synced later), so a checkpoint folder is the sign the second trial is mid-way
        running = [
            p
            for p in run.glob("trial_*/checkpoint_*")
            if p.parent.name.removeprefix("trial_") not in done
        ]
        return bool(running)

    wen.wait_for(second_trial_running, 300, "the first trial to finish and the second to start")
    first = next((run / "predictions").glob("*.parquet"))
    first_mtime = first.stat().st_mtime_ns
    wen.kill_driver()
    assert not (run / "results.csv").exists()

    again = start_wen([*args, "--resume"])
    assert again.finish(timeout=400) == 0, again.output[-4000:]
    frame = results(run)
    assert len(frame) == 2
    assert_complete(run, frame, epochs=8)
    assert first.stat().st_mtime_ns == first_mtime  # the finished trial was not re-run
    commands = (run / "command.txt").read_text().splitlines()
    assert len(commands) == 2 and commands[1].endswith("--resume")


@pytest.mark.slow
@pytest.mark.skipif(
    not unshare_works(), reason="needs `unshare -n` (root) for a private loopback network"
)
def test_two_node_cluster_runs_trials_on_both_nodes(
    tmp_path: Path, wen_env: dict[str, str]
) -> None:
    """Head + worker on 127.0.0.1 inside a private network namespace; trials land on both."""
    home, state = tmp_path / "home", Path(f"/tmp/wenc-{os.getpid()}")
    home.mkdir()
    wen = " ".join(wen_command())
    script = f"""
set -u
ip link set lo up
export HOME={home} WEN_CLUSTER_DIR={state} WEN_CLUSTER_PORT=6390 PATH={Path(wen_command()[0]).parent}:$PATH
{REPO}/cluster/local_cluster.sh start || {{ {REPO}/cluster/local_cluster.sh stop; exit 3; }}
{wen} search {SMOKE} --address 127.0.0.1:6390 --storage {tmp_path} --name twonode --set 'search.folds=[0]'
rc=$?
{REPO}/cluster/local_cluster.sh stop
exit $rc
"""
    try:
        done = run_in_private_network(script, cwd=REPO, env=wen_env, timeout=500)
    finally:
        shutil.rmtree(state, ignore_errors=True)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-5000:]
    frame = results(tmp_path / "twonode")
    assert len(frame) == 2
    assert_complete(tmp_path / "twonode", frame)
    assert frame["node_id"].nunique() == 2, frame[["trial_id", "node_ip", "node_id"]]
    assert (frame["node_ip"] == "127.0.0.1").all()


def test_tensorboard_dashboard_serves_a_run(tmp_path: Path, start_wen) -> None:
    run = tmp_path / "run"
    (run / "tensorboard" / "t0").mkdir(parents=True)
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(run / "tensorboard" / "t0")) as writer:
        writer.add_scalar("val/val_wfs", 0.5, 1)
    board = start_wen(["tensorboard", str(run), "--port", "6006"])
    url = board.wait_for(
        lambda: re.search(r"TensorBoard: (http://127\.0\.0\.1:\d+/?)", board.output),
        120,
        "TensorBoard",
    )
    board.wait_for(lambda: http_ok(url.group(1)), 60, "TensorBoard to answer")
    board.kill_group()
