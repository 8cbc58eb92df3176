"""What a finished search leaves under RUN/predictions, checked one way by every search test.

Each trial has exactly one best-epoch file, and one snapshot per learning-rate trough it
reached (``RUN/predictions/snapshots/<trial>@e<epoch>.parquet``, weights in
``RUN/models/<trial>@e<epoch>/``); no temporary file is left in either folder.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from search.config import WenConfig
from trainers.config import load_config
from trainers.optim import trough_epochs
from trainers.predictions import read_prediction_dir

KEPT_ASIDE = {"_orphaned", "snapshots"}


def expected_snapshots(run: Path, frame: pd.DataFrame, finished: pd.Series | None = None) -> set:
    """``<trial>@e<epoch>`` for every trough each trial of ``frame`` reached (its
    ``epochs_run``), by the run's saved config; ``finished`` limits it to some trials."""
    config = load_config(run / "config.yaml", model=WenConfig)
    if not config.train.snapshots:
        return set()
    rows = frame if finished is None else frame[finished]
    return {
        f"{trial}@e{epoch}"
        for trial, epochs in zip(rows["trial_id"], rows["epochs_run"])
        for epoch in trough_epochs(config.schedule, int(epochs))
    }


def assert_prediction_files(run: Path, frame: pd.DataFrame, best_files: bool = True) -> None:
    """One best-epoch file per trial (``best_files``), one snapshot per trough reached, every
    snapshot's weights published, and no temporary file."""
    folder = run / "predictions"
    names = sorted(p.name for p in folder.iterdir() if p.name not in KEPT_ASIDE)
    if best_files:
        assert names == sorted(f"{t}.parquet" for t in frame["trial_id"]), names
        sets = read_prediction_dir(folder)
        assert sorted(s.trial_id for s in sets) == sorted(frame["trial_id"])
    snapshots = folder / "snapshots"
    found = sorted(p.name for p in snapshots.iterdir()) if snapshots.is_dir() else []
    want = expected_snapshots(run, frame)
    assert found == sorted(f"{s}.parquet" for s in want), (found, sorted(want))
    for sid in want:
        assert (run / "models" / sid / "model.safetensors").stat().st_size > 0, sid
        assert (run / "models" / sid / "config.json").is_file(), sid
