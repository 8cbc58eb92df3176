"""Fault 5: the disk fills while a trial writes a checkpoint or its predictions.

``OSError(ENOSPC)`` is injected into the write itself (after part of the bytes went out, as a
full disk does). The trial fails with a message naming the file and the cause, nothing partial
is visible (temporary names start with ``.``), earlier files are intact, and resuming from the
last checkpoint completes with the results of an uninterrupted run.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import safetensors.torch

from fault_helpers import tiny_trial
from trainers import TrialResult, load_config, train
from trainers.checkpoint import read_checkpoint_state
from trainers.predictions import read_prediction_dir, read_predictions


def _enospc(path: object) -> OSError:
    return OSError(errno.ENOSPC, "No space left on device", str(path))


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrialResult, list[dict]]:
    """The same trial, never interrupted."""
    out = tmp_path_factory.mktemp("reference")
    reports: list[dict] = []
    return train(load_config(tiny_trial()), reports.append, out_dir=out, trial_id="ref"), reports


def _visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _same_metrics(a: dict, b: dict) -> None:
    keys = [k for k in a if k.startswith("val_") or k == "train_loss"]
    assert keys and all(a[k] == b[k] for k in keys), {k: (a[k], b[k]) for k in keys}


def test_disk_full_during_a_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reference
) -> None:
    ref, ref_reports = reference
    real_save = safetensors.torch.save_file

    def full_disk(tensors, filename, *args, **kwargs):  # type: ignore[no-untyped-def]
        if "epoch_0002" in str(filename):
            Path(filename).write_bytes(b"\0" * 100)  # some bytes got out before the disk filled
            raise _enospc(filename)
        return real_save(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    reports: list[dict] = []
    with pytest.raises(OSError) as info:
        train(load_config(tiny_trial()), reports.append, out_dir=tmp_path, trial_id="t")
    assert info.value.errno == errno.ENOSPC
    message = str(info.value)
    assert "epoch_0002 failed: the disk is full" in message and "earlier checkpoints" in message
    # epoch 1 was reported and its checkpoint is intact; nothing partial is visible
    assert [r["epoch"] for r in reports] == [1]
    checkpoints = tmp_path / "checkpoints"
    assert _visible(checkpoints) == ["epoch_0001"]
    assert read_checkpoint_state(checkpoints / "epoch_0001")["epoch"] == 1
    assert not (tmp_path / "predictions").exists()

    monkeypatch.setattr(safetensors.torch, "save_file", real_save)  # space freed
    resumed: list[dict] = []
    result = train(
        load_config(tiny_trial()),
        resumed.append,
        out_dir=tmp_path,
        trial_id="t",
        resume_from=checkpoints / "epoch_0001",
    )
    assert [r["epoch"] for r in resumed] == [2]
    _same_metrics(resumed[0], ref_reports[1])  # as if nothing had happened
    assert result.best_epoch == ref.best_epoch
    assert _visible(tmp_path / "predictions") == ["snapshots", "t.parquet"]
    assert _visible(tmp_path / "predictions" / "snapshots") == ["t@e2.parquet"]  # the trough


def test_disk_full_while_writing_predictions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reference
) -> None:
    ref, _ = reference
    predictions = tmp_path / "predictions"
    predictions.mkdir()
    earlier = predictions / "earlier.parquet"
    shutil.copy(ref.predictions_path, earlier)
    earlier_bytes = earlier.read_bytes()
    real_write = pq.write_table

    def full_disk(table, where, *args, **kwargs):  # type: ignore[no-untyped-def]
        where.write(b"PAR1" + b"\0" * 64)  # a partial Parquet file
        raise _enospc(getattr(where, "name", where))

    monkeypatch.setattr(pq, "write_table", full_disk)
    with pytest.raises(OSError) as info:
        train(
            load_config(tiny_trial()),
            out_dir=tmp_path / "work",
            trial_id="t",
            predictions_dir=predictions,
        )
    assert info.value.errno == errno.ENOSPC
    # the first prediction file of a 2-epoch trial with a 2-epoch cycle is the trough's snapshot
    snapshot = predictions / "snapshots" / "t@e2.parquet"
    assert f"writing predictions {snapshot} failed: the disk is full" in str(info.value)
    # no partial file (not even a hidden temp), the earlier file untouched, the checkpoints kept
    assert _visible(predictions) == ["earlier.parquet", "snapshots"]
    assert _visible(predictions / "snapshots") == []
    assert earlier.read_bytes() == earlier_bytes
    checkpoints = tmp_path / "work" / "checkpoints"
    assert "epoch_0002" in _visible(checkpoints)

    monkeypatch.setattr(pq, "write_table", real_write)
    again: list[dict] = []
    result = train(
        load_config(tiny_trial()),
        again.append,
        out_dir=tmp_path / "work",
        trial_id="t",
        predictions_dir=predictions,
        resume_from=checkpoints / "epoch_0002",
    )
    assert again == [] and result.best_epoch == ref.best_epoch  # no epoch was trained again
    # the trough's snapshot, lost to the full disk, is written from the checkpoint's weights
    assert _visible(predictions / "snapshots") == ["t@e2.parquet"]
    assert read_predictions(snapshot).snapshot_of == "t"
    assert sorted(s.trial_id for s in read_prediction_dir(predictions)) == ["ref", "t"]
    got, want = (
        read_predictions(result.predictions_path).frame,
        read_predictions(ref.predictions_path).frame,
    )
    assert got["sample_id"].tolist() == want["sample_id"].tolist()
    np.testing.assert_array_equal(np.stack(got["probs"]), np.stack(want["probs"]))
