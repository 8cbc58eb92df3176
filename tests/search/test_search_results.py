"""Results tables dedupe Tune's at-least-once reports; storage writes atomically; pre-flight checks."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pyarrow.fs as pafs
import pytest

from search.checks import load_wen_config
from search.config import ResourcesConfig
from search.raycluster import free_port, resource_problems, unseen_storage_message
from search.results import history_frame, results_table, write_results
from search.run import _remove_partial_predictions, resume_differences
from search.storage import RunStorage, StorageError
from search.trainable import (
    _BEST_FILE,
    TrialSpec,
    SnapshotPublisher,
    TuneReporter,
    _finished,
    _own_checkpoint,
    _restore,
    _restore_best,
    fault_epoch_from_env,
    trial_config,
)
from trainers.config import TrainConfig
from trainers.run_layout import RUN_LAYOUT

CONFIG = load_wen_config(
    {
        "data": {"synthetic": {"size": 48}, "split": {"method": "group_kfold"}},
        "train": {"epochs": 3},
        "search": {
            "space": {"optim.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2}},
            "folds": [0, 1],
        },
    },
    check_registries=False,
)


def _history(rows: list[tuple[int, float, str]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "epoch": e,
                "val_wfs": w,
                "val_loss": 1 - w,
                "node_ip": "127.0.0.1",
                "node_id": n,
                "time_total_s": 10.0 * e,
                "trial_id": "t",
                "resumed_from_epoch": -1 if i < 2 else 1,
            }
            for i, (e, w, n) in enumerate(rows)
        ]
    )


def test_history_keeps_the_last_report_of_each_epoch() -> None:
    # a trial retried from epoch 1 repeats epoch 2; the last report of an epoch wins
    frame = _history([(1, 0.5, "a"), (2, 0.9, "a"), (2, 0.6, "b"), (3, 0.7, "b")])
    history = history_frame(frame)
    assert history["epoch"].tolist() == [1, 2, 3]
    assert history.loc[history["epoch"] == 2, "val_wfs"].item() == 0.6


def test_results_table_one_row_per_trial(tmp_path: Path) -> None:
    run = RunStorage.open(str(tmp_path), "run")
    run.write_text("predictions/t1.parquet", "x")
    results = [
        SimpleNamespace(
            metrics={"trial_id": "t1"},
            metrics_dataframe=_history(
                [(1, 0.5, "a"), (2, 0.8, "a"), (2, 0.8, "a"), (3, 0.7, "b")]
            ),
            config={"optim.lr": 0.01, "data.split.fold": 1},
            error=None,
        ),
        SimpleNamespace(
            metrics={"trial_id": "t0"},
            metrics_dataframe=_history([(1, 0.4, "a")]),
            config={"optim.lr": 0.001, "data.split.fold": 0},
            error=RuntimeError("boom\nValueError: bad thing"),
        ),
    ]
    frame = results_table(results, CONFIG, run)
    assert frame["trial_id"].tolist() == ["t0", "t1"]
    t0, t1 = frame.iloc[0], frame.iloc[1]
    assert t1["status"] == "TERMINATED" and t1["best_epoch"] == 2 and t1["val_wfs"] == 0.8
    assert t1["epochs_run"] == 3 and not t1["stopped_early"] and t1["resumes"] == 1
    assert t1["node_id"] == "b" and t1["fold"] == 1 and t1["optim.lr"] == 0.01
    assert t1["predictions"].endswith("predictions/t1.parquet")
    assert (
        t0["status"] == "ERROR"
        and t0["error"] == "ValueError: bad thing"
        and not t0["stopped_early"]
    )
    assert pd.isna(t0["predictions"])
    write_results(frame, run)
    back = pd.read_parquet(tmp_path / "run" / "results.parquet")
    assert back["trial_id"].tolist() == ["t0", "t1"]
    assert (tmp_path / "run" / "results.csv").read_text().startswith("trial_id,status")


def test_storage_writes_atomically_and_checks_names(tmp_path: Path) -> None:
    run = RunStorage.open(str(tmp_path / "store"), "r1")
    assert run.local and run.uri == str(tmp_path / "store" / "r1")
    run.write_text("a/b.txt", "one\n")
    run.append_text("a/b.txt", "two\n")
    assert run.read_text("a/b.txt") == "one\ntwo\n"
    assert run.list("a") == ["b.txt"]  # no temp file left behind
    run.delete_file("a/b.txt")
    assert not run.exists("a/b.txt")
    with pytest.raises(StorageError, match="plain folder name"):
        RunStorage.open(str(tmp_path), "a/b")
    with pytest.raises(StorageError, match="not a usable URI"):
        RunStorage.open("nosuchscheme://bucket/x", "r")


def test_resource_checks_before_any_trial() -> None:
    cpu_node = {"NodeID": "n1", "Resources": {"CPU": 2.0, "memory": 8 * 1024**3}}
    train = TrainConfig()
    (msg,) = resource_problems(ResourcesConfig(gpus=1), train, [cpu_node])
    assert "gpus=1 but the Ray cluster has no GPU" in msg and "--address" in msg
    (msg,) = resource_problems(ResourcesConfig(cpus=4), train, [cpu_node])
    assert "no node can hold one trial" in msg and "CPU=2" in msg
    (msg,) = resource_problems(ResourcesConfig(memory_gb=16), train, [cpu_node])
    assert "memory_gb=8.0" in msg
    assert resource_problems(ResourcesConfig(cpus=2), train, [cpu_node]) == []
    gpu_node = {"NodeID": "n2", "Resources": {"CPU": 8.0, "GPU": 1.0}}
    assert resource_problems(ResourcesConfig(gpus=0.5), train, [cpu_node, gpu_node]) == []
    (msg,) = resource_problems(ResourcesConfig(), TrainConfig(device="cuda"), [gpu_node])
    assert "search.resources.gpus=0" in msg
    for gpus in (1.5, 2):  # one GPU per trial: the trainer uses one device, no data parallel
        with pytest.raises(ValueError, match=r"`gpus <= 1` must hold.*no data-parallel"):
            ResourcesConfig(gpus=gpus)
    assert ResourcesConfig(gpus=1).gpus == 1
    assert "s3://" in unseen_storage_message("/data/runs/x", ["10.0.0.2 (abcd)"])


def test_free_port_skips_a_taken_port() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        taken = sock.getsockname()[1]
        assert free_port(taken) != taken


def test_trial_config_threads_fold_and_fault_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = TrialSpec(base=CONFIG.trial_part().model_dump(mode="json"), storage="/tmp", name="r",
                     metric="val_wfs", mode="max", folds=[0, 2], cpus=2.0)  # fmt: skip
    trial = trial_config(spec, {"optim.lr": 0.005, "__trial_index__": 1})
    assert trial.optim.lr == 0.005 and trial.data.split.fold == 2 and trial.train.threads == 2
    monkeypatch.setenv("WEN_FAULT_INJECT", "2")
    assert fault_epoch_from_env() == 2
    monkeypatch.setenv("WEN_FAULT_INJECT", "soon")
    with pytest.raises(ValueError, match="epoch number"):
        fault_epoch_from_env()


def test_resumed_trial_gets_its_best_checkpoint_back(tmp_path: Path) -> None:
    # Tune's persisted checkpoints of one trial: epochs 2 (the best) and 4 (the latest)
    trial_dir = tmp_path / "run" / "trial_x"
    for epoch in (2, 4):
        ckpt = trial_dir / f"checkpoint_00000{epoch}"
        ckpt.mkdir(parents=True)
        (ckpt / "model.safetensors").write_text(f"weights {epoch}")
        (ckpt / _BEST_FILE).write_text(json.dumps({"epoch": epoch, "trainer_best_epoch": 2}))
    latest = SimpleNamespace(
        filesystem=pafs.LocalFileSystem(), path=str(trial_dir / "checkpoint_000004")
    )
    work = tmp_path / "fresh_node" / "work"
    _restore_best(latest, {"epoch": 4, "trainer_best_epoch": 2}, work)
    assert (work / "checkpoints" / "epoch_0002" / "model.safetensors").read_text() == "weights 2"


def _trainer_checkpoint(work: Path, epoch: int, wfs: list[float]) -> Path:
    """A real trainer checkpoint of ``epoch`` whose history holds one val_wfs per epoch."""
    import torch

    from trainers.checkpoint import save_checkpoint

    history = [{"epoch": e + 1, "val_wfs": v} for e, v in enumerate(wfs[:epoch])]
    best = max(range(epoch), key=lambda e: wfs[e]) + 1
    progress = {"history": history, "best_epoch": best, "best_value": wfs[best - 1],
                "best_metrics": {}}  # fmt: skip
    path = work / "checkpoints" / f"epoch_{epoch:04d}"
    return save_checkpoint(path, torch.nn.Linear(2, 2), None, None, epoch, history[-1],
                           extra={"progress": progress})  # fmt: skip


def test_tune_checkpoint_by_reference_names_the_trainers_checkpoint(tmp_path: Path) -> None:
    # local storage: Tune gets a folder with the best-epoch record alone, naming the
    # trainer's checkpoint in RUN
    run = RunStorage.open(str(tmp_path), "run")
    work = run.local_path("trial_x", "work")
    trainer_ckpt = _trainer_checkpoint(work, 3, [0.5, 0.7, 0.6])
    reporter = SimpleNamespace(best=0.7, run_root=run.local_path(), scratch=tmp_path / "scratch")
    folder = TuneReporter._tune_checkpoint(reporter, trainer_ckpt, {"epoch": 3, "best_epoch": 2})
    assert sorted(p.name for p in folder.iterdir()) == [_BEST_FILE]  # no weights copied
    record = json.loads((folder / _BEST_FILE).read_text())
    assert record == {"epoch": 3, "best": 0.7, "trainer_best_epoch": 2,
                      "trainer_checkpoint": "trial_x/work/checkpoints/epoch_0003"}  # fmt: skip


def test_resume_by_reference_continues_from_the_trainers_newest_checkpoint(
    tmp_path: Path,
) -> None:
    # Tune restored from an older experiment snapshot knows epoch 2 (or nothing); the trainer
    # went on to epoch 4: the trial continues from 4, and epochs 3-4 are reported again
    spec = TrialSpec(base={}, storage=str(tmp_path), name="run", metric="val_wfs", mode="max")
    work = tmp_path / "run" / "trial_x" / "work"
    wfs = [0.5, 0.7, 0.6, 0.65]
    for epoch in (2, 3, 4):
        _trainer_checkpoint(work, epoch, wfs)
    path, record, unseen = _own_checkpoint(spec, work, {"epoch": 2})
    assert path == work / "checkpoints" / "epoch_0004"
    assert record == {"epoch": 4, "best": 0.7, "trainer_best_epoch": 2}
    assert [m["epoch"] for m in unseen] == [3, 4]
    assert [m["epoch"] for m in _own_checkpoint(spec, work, None)[2]] == [1, 2, 3, 4]
    assert _own_checkpoint(spec, tmp_path / "fresh", None) == (None, None, [])
    # a finished trial (last epoch, predictions and weights published) is not trained again
    run = RunStorage.open(str(tmp_path), "run")
    assert not _finished(run, "x", record, epochs=4)
    for rel in (RUN_LAYOUT.prediction("x"), RUN_LAYOUT.model_config("x")):
        run.local_path(rel).parent.mkdir(parents=True, exist_ok=True)
        run.local_path(rel).write_text("x")
    assert _finished(run, "x", record, epochs=4) and not _finished(run, "x", record, epochs=5)


def test_whole_checkpoint_without_reference_carries_the_record(tmp_path: Path) -> None:
    # remote storage or PBT: Tune copies the trainer's checkpoint, the record beside it
    ckpt = tmp_path / "epoch_0002"
    ckpt.mkdir()
    reporter = SimpleNamespace(best=0.5, run_root=None, scratch=tmp_path / "scratch")
    assert TuneReporter._tune_checkpoint(reporter, ckpt, {"epoch": 2, "best_epoch": 2}) == ckpt
    tune_ckpt = SimpleNamespace(filesystem=pafs.LocalFileSystem(), path=str(ckpt))
    resume_from, record = _restore(tune_ckpt, tmp_path / "s")
    assert resume_from == ckpt and record["epoch"] == 2 and "trainer_checkpoint" not in record


def test_files_left_by_killed_trials_and_drivers_are_removed(tmp_path: Path) -> None:
    run = RunStorage.open(str(tmp_path), "run")
    root = run.local_path()
    (root / "predictions" / "snapshots").mkdir(parents=True)
    left = [
        "predictions/.t1.parquet.x1y2.tmp",  # a trial killed while writing its predictions
        "predictions/snapshots/.t1@e2.parquet.ab.tmp",
        # Tune's searcher state, the driver killed between write and rename
        ".5160acce-8c6c-4bec-bb7b-b6756dc8a2c0-tmp-searcher-state-2026-12-02_17-17-09.pkl",
    ]
    kept = ["predictions/t1.parquet", ".validate_storage_marker",
            "searcher-state-2026-12-02_17-17-09.pkl", "experiment_state-2026-12-02.json"]  # fmt: skip
    for rel in left + kept:
        (root / rel).write_text("x")
    assert sorted(_remove_partial_predictions(run)) == sorted(left)
    assert all((root / rel).exists() for rel in kept)
    assert not any((root / rel).exists() for rel in left)


def test_resume_differences_name_the_keys() -> None:
    a = {"train": {"epochs": 2}, "search": {"seed": 0}}
    b = {"train": {"epochs": 3}, "search": {"seed": 0}}
    assert resume_differences(a, b) == ["train.epochs"]


def test_a_snapshot_a_killed_attempt_left_unpublished_is_published_on_resume(
    tmp_path: Path,
) -> None:
    """The trainer writes a trough's snapshot, then reports it; a worker killed in between
    leaves the snapshot's weights in WORK/snapshots. The next attempt resumes from that
    epoch's checkpoint (the snapshot is written, nothing is trained again) and publishes it
    with that epoch's metrics before reporting anything."""
    from trainers import load_config, train
    from trainers.config import TrialConfig

    raw = {
        "seed": 3,
        "data": {"synthetic": {"layout": "cnmc-kaggle", "subjects_per_class": 4,
                               "cells_per_subject": 4, "size": 40},
                 "input_size": 32, "batch_size": 8},
        "model": {"backbone": "test_resnet"},
        # a whole cycle per epoch: a trough, so a snapshot, at the end of every epoch
        "schedule": {"name": "cyclic", "half_cycle_epochs": 0.5},
        "train": {"epochs": 3, "threads": 2},
    }  # fmt: skip
    config = load_config(raw, model=TrialConfig)
    run = RunStorage.open(str(tmp_path), "run")
    work, predictions = run.local_path("trial_t", "work"), run.local_path("predictions")
    publisher = SnapshotPublisher(run, config, work, predictions)

    class Killed(Exception):
        pass

    def first_attempt(metrics: dict) -> None:
        if metrics["epoch"] == 2:  # epoch 2's snapshot is on disk, its report never sent
            raise Killed
        publisher(metrics["snapshot"], metrics)

    with pytest.raises(Killed):
        train(config, first_attempt, out_dir=work, trial_id="t", predictions_dir=predictions)
    models = run.local_path(RUN_LAYOUT.models)
    assert (models / "t@e1" / "model.safetensors").stat().st_size > 0
    assert not (models / "t@e2").exists() and (work / "snapshots" / "t@e2").is_dir()
    assert not (work / "snapshots" / "t@e1").exists()  # published: one copy, not two

    # weights whose predictions were never written stay for the trainer to write again
    (work / "snapshots" / "t@e3").mkdir()
    (work / "snapshots" / "t@e3" / "model.safetensors").write_bytes(b"partial")
    assert publisher.publish_pending() == ["t@e2"]
    assert (work / "snapshots" / "t@e3" / "model.safetensors").is_file()
    assert not (models / "t@e3").exists()
    meta = json.loads((models / "t@e2" / "config.json").read_text())
    assert meta["snapshot_of"] == "t" and meta["epoch"] == 2 and meta["cycle"] == 2
    history = _own_checkpoint(TrialSpec({}, "", "run", "val_wfs", "max"), work, None)[2]
    assert meta["metrics"]["val_wfs"] == next(h["val_wfs"] for h in history if h["epoch"] == 2)
    assert publisher.publish_pending() == []  # nothing twice
    (work / "snapshots" / "t@e3" / "model.safetensors").unlink()

    # the resumed attempt: epoch 3 and its snapshot, every trough's weights published once
    resumed = train(config, lambda m: publisher(m["snapshot"], m), out_dir=work, trial_id="t",
                    predictions_dir=predictions, resume_from=work / "checkpoints" / "epoch_0002")  # fmt: skip
    assert [s.epoch for s in resumed.snapshots] == [3]
    assert sorted(p.name for p in models.iterdir()) == ["t@e1", "t@e2", "t@e3"]
    assert sorted(p.name for p in (predictions / "snapshots").iterdir()) == [
        f"t@e{e}.parquet" for e in (1, 2, 3)
    ]
