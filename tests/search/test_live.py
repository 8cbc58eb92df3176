"""``search.live.LiveFeed``: the driver's live records, as Tune's callback calls it."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from search.live import LiveFeed
from search.presets import config_path
from search.run import load_search_config
from search.storage import RunStorage
from trainers.run_layout import RUN_LAYOUT


def _config(*overrides: str):
    return load_search_config(str(config_path(Path("smoke"))[0]), list(overrides))


def test_records_follow_the_trial_and_mark_where_the_scheduler_stopped_it(tmp_path: Path) -> None:
    config = _config("search.folds=null", "search.scheduler.name=asha", "train.epochs=4")
    feed = LiveFeed(config, RunStorage.open(str(tmp_path), "run"), "http://127.0.0.1:8265")
    feed.setup()
    trial = SimpleNamespace(trial_id="t1", config={"optim.lr": 3e-4})
    feed.on_trial_start(0, [], trial)
    for epoch, value in ((1, 0.5), (2, 0.6), (2, 0.65)):  # a restored trial repeats epoch 2
        feed.on_trial_result(0, [], trial, {"epoch": epoch, "val_wfs": value, "pid": 7,
                                            "val_auc": float("nan"), "node_ip": "127.0.0.1"})  # fmt: skip
    feed.on_trial_complete(0, [], trial)
    record = json.loads((tmp_path / "run" / RUN_LAYOUT.live_trial("t1")).read_text())
    assert [e["epoch"] for e in record["epochs"]] == [1, 2]
    assert record["epochs"][1]["val_wfs"] == 0.65 and record["epochs"][0]["val_auc"] is None
    assert "pid" not in record["epochs"][0]  # Tune's bookkeeping is left out
    assert record["status"] == "TERMINATED" and record["stopped_at"] == 2  # 2 of 4 epochs
    assert record["params"] == {"optim.lr": 3e-4} and record["node_ip"] == "127.0.0.1"
    state = json.loads((tmp_path / "run" / RUN_LAYOUT.live_search).read_text())
    assert state["rungs"] and state["status"] == "running"
    feed.on_experiment_end([])
    assert (
        json.loads((tmp_path / "run" / RUN_LAYOUT.live_search).read_text())["status"] == "finished"
    )
    # a driver restarted with --resume continues the record it finds
    again = LiveFeed(config, RunStorage.open(str(tmp_path), "run"), None)
    again.on_trial_result(0, [], trial, {"epoch": 3, "val_wfs": 0.7})
    record = json.loads((tmp_path / "run" / RUN_LAYOUT.live_trial("t1")).read_text())
    assert [e["epoch"] for e in record["epochs"]] == [1, 2, 3]


def test_a_failed_write_never_stops_the_search(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    run = RunStorage.open(str(tmp_path), "run")
    feed = LiveFeed(_config("search.folds=null"), run, None)

    def full_disk(rel: str, text: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(RunStorage, "write_text", lambda self, rel, text: full_disk(rel, text))
    trial = SimpleNamespace(trial_id="t1", config={})
    feed.on_trial_start(0, [], trial)
    feed.on_trial_result(0, [], trial, {"epoch": 1, "val_wfs": 0.5})
    assert "not written" in caplog.text and caplog.text.count("live/trials/t1.json") == 1
