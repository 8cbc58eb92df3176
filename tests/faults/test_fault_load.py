"""Faults 12 and 14: 50 short trials on 2 cores lose no result; the dashboards listen on
127.0.0.1 only while a search runs.

One search serves both: while its 50 trials run, the test reads the listening sockets of the
Ray dashboard (printed by ``wen search``) and of TensorBoard (``wen tensorboard RUN``), and the
driver's peak memory (VmHWM) until it exits.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pandas as pd
import pytest

from fault_helpers import LOOPBACK, peak_rss_mb
from wen_proc import listening_addresses
from run_files import assert_prediction_files
from wen_proc import SMOKE, WenProcess

TRIALS = 50
# 50 trials through Ray on 2 cores take several minutes (each trial starts a worker, trains,
# predicts and writes its files): more than the suite's default per-test timeout
pytestmark = pytest.mark.timeout(1800)
TINY = [
    "search.num_samples=50", "search.folds=[0]", "search.max_concurrent=2",
    "search.space={optim.lr: {type: loguniform, low: 1.0e-4, high: 1.0e-2}}",
    "search.report_every_s=30",
    "data.synthetic.subjects_per_class=4", "data.synthetic.cells_per_subject=3",
    "data.synthetic.size=32", "data.input_size=32", "data.batch_size=8",
    "train.epochs=1", "train.max_steps_per_epoch=1", "train.keep_checkpoints=1",
]  # fmt: skip


@pytest.fixture(scope="module")
def load_search(
    tmp_path_factory: pytest.TempPathFactory, wen_env: dict[str, str]
) -> dict[str, Any]:
    storage = tmp_path_factory.mktemp("load")
    args = ["search", str(SMOKE), "--storage", str(storage), "--name", "load"]
    for item in TINY:
        args += ["--set", item]
    wen = WenProcess(args, wen_env)
    board = None
    seen: dict[str, Any] = {}
    try:
        url = wen.wait_for(
            lambda: re.search(r"Ray dashboard: http://([\d.]+):(\d+)", wen.output),
            240,
            "the dashboard URL",
        )
        seen["ray_dashboard"] = (url.group(1), listening_addresses(int(url.group(2))))
        run = storage / "load"
        wen.wait_for(
            lambda: (run / "tensorboard").is_dir(), 240, "the first trial's TensorBoard logs"
        )
        board = WenProcess(["tensorboard", str(run), "--port", "6106"], wen_env)
        tb = board.wait_for(
            lambda: re.search(r"TensorBoard: http://([\d.]+):(\d+)", board.output),
            120,
            "TensorBoard",
        )
        seen["tensorboard"] = (tb.group(1), listening_addresses(int(tb.group(2))))
        board.kill_group()
        peak = 0.0
        while wen.proc.poll() is None:
            peak = max(peak, peak_rss_mb(wen.proc.pid) or 0.0)
            time.sleep(0.5)
        seen["code"] = wen.finish(timeout=30)
        seen["peak_mb"] = peak
    finally:
        for proc in (wen, board):
            if proc is not None and proc.proc.poll() is None:
                proc.kill_group()
    seen["run"], seen["output"] = storage / "load", wen.output
    return seen


@pytest.mark.slow
def test_fifty_short_trials_lose_no_result(load_search, capsys: pytest.CaptureFixture) -> None:
    run, output = load_search["run"], load_search["output"]
    assert load_search["code"] == 0, output[-4000:]
    frame = pd.read_csv(run / "results.csv")
    assert len(frame) == TRIALS and frame["trial_id"].is_unique
    assert (frame["status"] == "TERMINATED").all() and (frame["epochs_run"] == 1).all()
    assert_prediction_files(run, frame)  # 50, their snapshots, no temp files
    assert frame["optim.lr"].nunique() == TRIALS
    with capsys.disabled():
        print(
            f"\n[load] {TRIALS} trials on 2 cores: driver peak memory (VmHWM) "
            f"{load_search['peak_mb']:.0f} MiB"
        )
    assert load_search["peak_mb"] > 0


@pytest.mark.slow
def test_dashboards_listen_on_loopback_only(load_search) -> None:
    for name in ("ray_dashboard", "tensorboard"):
        host, addresses = load_search[name]
        assert host == LOOPBACK, (name, host)
        assert addresses == {LOOPBACK}, (name, addresses)  # not 0.0.0.0, not the node's address
