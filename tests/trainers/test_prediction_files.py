"""The prediction Parquet schema: write, re-read, validate, reject bad files, align members."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trainers.predictions import (
    COLUMNS,
    SCHEMA_VERSION,
    PredictionFileError,
    prediction_frame,
    read_prediction_dir,
    read_predictions,
    to_arrays,
    write_predictions,
)

CLASSES = ["hem", "all"]


def make_frame(
    trial: str = "t0", n: int = 6, seed: int = 0, split: str = "val", k: int = 2
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return prediction_frame(
        trial_id=trial,
        backbone="test_resnet",
        config_hash="cafe",
        fold=0,
        epoch=2,
        split=split,
        sample_ids=[f"img_{i:03d}.bmp" for i in range(n)],
        subject_ids=[f"S{i % 3}" for i in range(n)],
        labels=rng.integers(0, k, n),
        logits=rng.normal(size=(n, k)).astype(np.float32),
    )


def test_round_trip_keeps_rows_types_and_metadata(tmp_path: Path) -> None:
    frame = pd.concat(
        [make_frame(split="val"), make_frame(split="test", seed=1)], ignore_index=True
    )
    frame.loc[frame["split"] == "test", "subject_id"] = None
    path = write_predictions(tmp_path / "t0.parquet", frame, CLASSES, {"seed": 3, "lr": 1e-4})
    pset = read_predictions(path)
    assert list(pset.frame.columns) == list(COLUMNS)
    assert pset.class_names == CLASSES and pset.trial_id == "t0" and pset.path == path
    assert pset.config == {"seed": 3, "lr": 1e-4}
    assert len(pset.frame) == 12
    probs = np.stack(pset.frame["probs"].to_numpy())
    assert probs.dtype == np.float32 and probs.shape == (12, 2)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(probs, np.stack(frame["probs"].to_numpy()))
    meta = pq.read_schema(path).metadata
    assert json.loads(meta[b"class_names"]) == CLASSES
    assert int(meta[b"schema_version"]) == SCHEMA_VERSION
    assert pset.split("test")["subject_id"].isna().all()
    assert pq.read_schema(path).field("probs").type == pa.list_(pa.float32())


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "t0.parquet"
    write_predictions(path, make_frame(), CLASSES, "{}")
    write_predictions(path, make_frame(n=3), CLASSES, "{}")  # replaces the old file
    assert sorted(p.name for p in path.parent.iterdir()) == ["t0.parquet"]
    assert len(read_predictions(path).frame) == 3


def test_final_split_label_minus_one_is_valid(tmp_path: Path) -> None:
    frame = make_frame(split="final")
    frame["label"] = -1
    pset = read_predictions(write_predictions(tmp_path / "t.parquet", frame, CLASSES, {}))
    assert (pset.frame["label"] == -1).all()


def test_truncated_file_is_rejected_with_clear_error(tmp_path: Path) -> None:
    path = write_predictions(tmp_path / "t0.parquet", make_frame(), CLASSES, {})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(PredictionFileError, match=r"t0\.parquet.*truncated"):
        read_predictions(path)


def _write_raw(path: Path, table: pa.Table, class_names: list[str]) -> Path:
    meta = {
        b"class_names": json.dumps(class_names).encode(),
        b"schema_version": str(SCHEMA_VERSION).encode(),
        b"config": b"{}",
    }
    pq.write_table(table.replace_schema_metadata(meta), path)
    return path


def test_misshaped_probs_are_rejected(tmp_path: Path) -> None:
    # three probabilities per row while class_names has two
    frame = make_frame(k=3)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.set_column(
        COLUMNS.index("probs"),
        "probs",
        pa.array([np.asarray(p, np.float32) for p in frame["probs"]], pa.list_(pa.float32())),
    ).set_column(
        COLUMNS.index("logits"),
        "logits",
        pa.array([np.asarray(p, np.float32) for p in frame["logits"]], pa.list_(pa.float32())),
    )
    path = _write_raw(tmp_path / "bad.parquet", table, CLASSES)
    with pytest.raises(PredictionFileError, match=r"bad\.parquet.*one value per class \(2"):
        read_predictions(path)


def test_rows_not_summing_to_one_and_missing_columns_are_rejected(tmp_path: Path) -> None:
    frame = make_frame()
    frame["probs"] = [np.array([0.7, 0.7], np.float32)] * len(frame)
    with pytest.raises(PredictionFileError, match="sum to 1"):
        write_predictions(tmp_path / "a.parquet", frame, CLASSES, {})
    table = pa.Table.from_pandas(make_frame().drop(columns=["subject_id"]), preserve_index=False)
    path = _write_raw(tmp_path / "b.parquet", table, CLASSES)
    with pytest.raises(PredictionFileError, match=r"missing column.*subject_id"):
        read_predictions(path)


def test_wrong_column_type_missing_metadata_and_bad_labels_are_rejected(tmp_path: Path) -> None:
    frame = make_frame()
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.set_column(COLUMNS.index("epoch"), "epoch", pa.array(frame["epoch"].astype(str)))
    with pytest.raises(PredictionFileError, match="column 'epoch' must be int64"):
        read_predictions(_write_raw(tmp_path / "a.parquet", table, CLASSES))
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp_path / "b.parquet")
    with pytest.raises(PredictionFileError, match="metadata key 'class_names' is missing"):
        read_predictions(tmp_path / "b.parquet")
    frame["label"] = 5
    with pytest.raises(PredictionFileError, match="label must be -1"):
        write_predictions(tmp_path / "c.parquet", frame, CLASSES, {})


def test_duplicate_samples_and_two_trials_in_one_file_are_rejected(tmp_path: Path) -> None:
    twice = pd.concat([make_frame(), make_frame()], ignore_index=True)
    with pytest.raises(PredictionFileError, match="appears twice"):
        write_predictions(tmp_path / "a.parquet", twice, CLASSES, {})
    mixed = pd.concat([make_frame("t0"), make_frame("t1", split="test")], ignore_index=True)
    with pytest.raises(PredictionFileError, match="one file holds one trial"):
        write_predictions(tmp_path / "b.parquet", mixed, CLASSES, {})


def test_read_dir_skips_hidden_and_bad_files_on_request(tmp_path: Path) -> None:
    write_predictions(tmp_path / "t0.parquet", make_frame("t0"), CLASSES, {})
    write_predictions(tmp_path / "t1.parquet", make_frame("t1"), CLASSES, {})
    (tmp_path / ".t2.parquet.tmp.parquet").write_bytes(b"junk")
    (tmp_path / "_partial.parquet").write_bytes(b"junk")
    (tmp_path / "zz_bad.parquet").write_bytes(b"junk")
    with pytest.raises(PredictionFileError, match="zz_bad"):
        read_prediction_dir(tmp_path)
    sets = read_prediction_dir(tmp_path, on_error="skip")
    assert [s.trial_id for s in sets] == ["t0", "t1"]


def test_to_arrays_aligns_members_by_sample_id(tmp_path: Path) -> None:
    a = make_frame("a", seed=1)
    b = make_frame("b", seed=2).iloc[::-1].reset_index(drop=True)  # same samples, other order
    b["label"] = a["label"].to_numpy()[::-1]
    sa = read_predictions(write_predictions(tmp_path / "a.parquet", a, CLASSES, {}))
    sb = read_predictions(write_predictions(tmp_path / "b.parquet", b, CLASSES, {}))
    P, y, ids, subjects = to_arrays([sa, sb], "val")
    assert P.shape == (2, 6, 2) and P.dtype == np.float32
    assert list(ids) == sorted(ids)
    for m, frame in enumerate([a, b]):
        by_id = dict(zip(frame["sample_id"], frame["probs"]))
        np.testing.assert_array_equal(P[m], np.stack([by_id[i] for i in ids]))
    np.testing.assert_array_equal(y, a.set_index("sample_id").loc[ids, "label"].to_numpy())
    assert list(subjects) == list(a.set_index("sample_id").loc[ids, "subject_id"])


def test_to_arrays_names_trial_and_file_when_samples_differ(tmp_path: Path) -> None:
    sa = read_predictions(write_predictions(tmp_path / "a.parquet", make_frame("a"), CLASSES, {}))
    short = make_frame("b").iloc[:4]
    sb = read_predictions(write_predictions(tmp_path / "b.parquet", short, CLASSES, {}))
    with pytest.raises(PredictionFileError, match=r"trial b \(.*b\.parquet\).*missing 2"):
        to_arrays([sa, sb], "val")
    with pytest.raises(PredictionFileError, match="no rows for split 'test'"):
        to_arrays([sa], "test")


def test_version_1_files_read_as_best_epoch_files_without_cycle(tmp_path: Path) -> None:
    # a file written before snapshots existed: no `cycle` column, no `snapshot_of` key
    table = pa.Table.from_pandas(make_frame().drop(columns=["cycle"]), preserve_index=False)
    meta = {b"class_names": json.dumps(CLASSES).encode(), b"schema_version": b"1", b"config": b"{}"}
    pq.write_table(table.replace_schema_metadata(meta), tmp_path / "old.parquet")
    pset = read_predictions(tmp_path / "old.parquet")
    assert list(pset.frame.columns) == list(COLUMNS)
    assert (pset.frame["cycle"] == -1).all() and not pset.is_snapshot
    assert pset.source_trial == "t0" and pset.epoch == 2


def test_a_snapshot_records_its_trial_epoch_and_cycle(tmp_path: Path) -> None:
    frame = make_frame(trial="t0@e4")
    frame["epoch"], frame["cycle"] = 4, 2
    path = write_predictions(tmp_path / "t0@e4.parquet", frame, CLASSES, {}, snapshot_of="t0")
    pset = read_predictions(path)
    assert pset.is_snapshot and pset.source_trial == "t0" and pset.trial_id == "t0@e4"
    assert pset.epoch == 4 and set(pset.frame["cycle"]) == {2}
