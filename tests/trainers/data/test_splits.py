"""Splits: subject-disjoint, seeded, official semantics; the leakage audit catches planted leaks."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from trainers.config import SplitConfig
from trainers.data.splits import LeakageError, assign_splits, audit_leakage, split_groups


def make_frame(
    subjects_per_class: int = 6,
    cells: int = 5,
    folds: int = 0,
    test_subjects: int = 0,
    final: int = 0,
    with_subjects: bool = True,
) -> pd.DataFrame:
    """A manifest-like frame: two classes, ``cells`` images per subject, optional folds/test."""
    rows = []
    for label in (0, 1):
        for s in range(subjects_per_class + test_subjects):
            subject = f"{'H' if label == 0 else ''}{s + 1}"
            source = "test" if s >= subjects_per_class else "train"
            fold = s % folds if (folds and source == "train") else -1
            for c in range(cells):
                sid = f"{source}/{subject}_{c}.bmp"
                rows.append(
                    {
                        "sample_id": sid,
                        "path": f"/data/{sid}",
                        "label": label,
                        "class_name": ["hem", "all"][label],
                        "subject_id": subject if with_subjects else None,
                        "source_split": source,
                        "fold": fold,
                        "width": 64,
                        "height": 64,
                        "content_hash": f"{label}-{s}-{c}",
                    }
                )
    for k in range(final):
        rows.append(
            {
                "sample_id": f"final/{k}.bmp",
                "path": f"/data/final/{k}.bmp",
                "label": -1,
                "class_name": None,
                "subject_id": None,
                "source_split": "final",
                "fold": -1,
                "width": 64,
                "height": 64,
                "content_hash": f"final-{k}",
            }
        )
    return pd.DataFrame(rows)


def subjects_of(out: pd.DataFrame, split: str) -> set[str]:
    return set(out.loc[out["split"] == split, "subject_id"])


def assert_subject_disjoint(out: pd.DataFrame) -> None:
    names = ["train", "val", "test"]
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not subjects_of(out, a) & subjects_of(out, b), (a, b)


# ----------------------------------------------------------------------------- official


def test_official_semantics() -> None:
    frame = make_frame(subjects_per_class=6, folds=3, test_subjects=2, final=4)
    out = assign_splits(frame, SplitConfig(method="official", fold=1))
    src = frame["source_split"]
    assert (out.loc[src == "test", "split"] == "test").all()
    assert (out.loc[src == "final", "split"] == "final").all()
    train_rows = src == "train"
    assert (out.loc[train_rows & (frame["fold"] == 1), "split"] == "val").all()
    assert (out.loc[train_rows & (frame["fold"] != 1), "split"] == "train").all()
    assert frame.columns.tolist() + ["split"] == out.columns.tolist()
    assert "split" not in frame.columns  # a copy, the input is unchanged
    audit_leakage(out)


def test_official_without_folds_says_what_to_use() -> None:
    frame = make_frame(folds=0, test_subjects=2)
    with pytest.raises(ValueError, match="group_kfold or group_holdout"):
        assign_splits(frame, SplitConfig(method="official"))


def test_official_unknown_fold_lists_folds() -> None:
    frame = make_frame(folds=3, test_subjects=2)
    with pytest.raises(ValueError, match=r"fold=5 is not one of the dataset's folds \[0, 1, 2\]"):
        assign_splits(frame, SplitConfig(method="official", fold=5))


# ---------------------------------------------------------------------------- group_kfold


def test_group_kfold_uses_official_test_and_is_subject_disjoint() -> None:
    frame = make_frame(subjects_per_class=6, test_subjects=2, final=3)
    out = assign_splits(frame, SplitConfig(method="group_kfold", n_folds=3, fold=2, seed=4))
    assert (out.loc[frame["source_split"] == "test", "split"] == "test").all()
    assert set(out["split"]) == {"train", "val", "test", "final"}
    assert_subject_disjoint(out)
    # both classes in validation: the folds are stratified
    assert set(out.loc[out["split"] == "val", "label"]) == {0, 1}
    audit_leakage(out)


def test_group_kfold_folds_partition_the_pool() -> None:
    frame = make_frame(subjects_per_class=6, test_subjects=1)
    vals = [
        set(
            assign_splits(frame, SplitConfig(method="group_kfold", n_folds=3, fold=k)).query(
                "split == 'val'"
            )["sample_id"]
        )
        for k in range(3)
    ]
    assert not (vals[0] & vals[1]) and not (vals[1] & vals[2]) and not (vals[0] & vals[2])
    pool = set(frame.loc[frame["source_split"] == "train", "sample_id"])
    assert vals[0] | vals[1] | vals[2] == pool


def test_group_kfold_holds_out_test_when_none_is_labelled() -> None:
    frame = make_frame(subjects_per_class=8, test_subjects=0)
    out = assign_splits(
        frame, SplitConfig(method="group_kfold", n_folds=3, test_fraction=0.25, seed=1)
    )
    assert set(out["split"]) == {"train", "val", "test"}
    assert_subject_disjoint(out)
    test_subjects = subjects_of(out, "test")
    assert len(test_subjects) == 4  # 25% of 16 subjects, two of each class (stratified)
    assert set(out.loc[out["split"] == "test", "label"]) == {0, 1}


def test_splits_identical_for_a_seed_and_differ_across_seeds() -> None:
    frame = make_frame(subjects_per_class=10)
    cfg = SplitConfig(method="group_kfold", n_folds=4, seed=7)
    a = assign_splits(frame, cfg)["split"].tolist()
    b = assign_splits(frame, cfg)["split"].tolist()
    c = assign_splits(frame, cfg.model_copy(update={"seed": 8}))["split"].tolist()
    assert a == b
    assert a != c


def test_group_kfold_too_few_subjects_is_a_clear_error() -> None:
    frame = make_frame(subjects_per_class=1, test_subjects=1)
    with pytest.raises(ValueError, match="at least n_folds=3 groups"):
        assign_splits(frame, SplitConfig(method="group_kfold", n_folds=3))


# -------------------------------------------------------------------------- group_holdout


def test_group_holdout_fractions_and_disjoint() -> None:
    frame = make_frame(subjects_per_class=10, cells=3)
    out = assign_splits(
        frame, SplitConfig(method="group_holdout", val_fraction=0.2, test_fraction=0.2, seed=3)
    )
    counts = out.groupby("split")["subject_id"].nunique()
    assert counts["test"] == 4 and counts["val"] == 4 and counts["train"] == 12
    assert_subject_disjoint(out)
    audit_leakage(out)


def test_no_subjects_splits_by_image_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    frame = make_frame(subjects_per_class=5, cells=10, with_subjects=False)
    with caplog.at_level(logging.INFO, logger="wen.data"):
        out = assign_splits(frame, SplitConfig(method="group_holdout", seed=0))
    assert "no subject ids" in caplog.text
    share = out["split"].value_counts(normalize=True)
    assert share["test"] == pytest.approx(0.2) and share["val"] == pytest.approx(0.2)
    # stratified by image: each split keeps the 50/50 class balance
    for split in ("train", "val", "test"):
        assert out.loc[out["split"] == split, "label"].mean() == pytest.approx(0.5)


def test_identical_files_stay_together() -> None:
    frame = make_frame(subjects_per_class=5, cells=10, with_subjects=False)
    # ten copies of one image across two "subjects": they must land in one split
    frame.loc[[0, 7, 13, 21, 33, 48, 55, 61, 72, 90], "content_hash"] = "dup"
    groups = split_groups(frame)
    assert len(set(groups[[0, 7, 13, 21, 33, 48, 55, 61, 72, 90]])) == 1
    for seed in range(5):
        out = assign_splits(frame, SplitConfig(method="group_holdout", seed=seed))
        assert out.loc[frame["content_hash"] == "dup", "split"].nunique() == 1
        audit_leakage(out)


# ---------------------------------------------------------------------------------- audit


def test_audit_catches_a_planted_subject_leak() -> None:
    frame = make_frame(subjects_per_class=6, folds=3, test_subjects=2)
    out = assign_splits(frame, SplitConfig(method="official", fold=0))
    victim = out.index[(out["split"] == "val")][0]
    subject = out.at[victim, "subject_id"]
    out.at[out.index[out["split"] == "train"][0], "subject_id"] = subject
    with pytest.raises(LeakageError) as info:
        audit_leakage(out)
    msg = str(info.value)
    assert f"subject {subject!r} is in train and val" in msg
    assert out.at[victim, "sample_id"] in msg
    assert len(info.value.problems) == 1


def test_audit_catches_an_identical_image_in_train_and_test() -> None:
    frame = make_frame(subjects_per_class=6, folds=3, test_subjects=2)
    out = assign_splits(frame, SplitConfig(method="official", fold=0))
    train_row = out.index[out["split"] == "train"][3]
    test_row = out.index[out["split"] == "test"][2]
    out.at[test_row, "content_hash"] = out.at[train_row, "content_hash"]
    with pytest.raises(LeakageError) as info:
        audit_leakage(out)
    msg = str(info.value)
    digest = out.at[train_row, "content_hash"]
    assert f"identical image hash {digest!r} is in train and test" in msg
    assert out.at[train_row, "sample_id"] in msg and out.at[test_row, "sample_id"] in msg


def test_audit_ignores_final_and_needs_split_column() -> None:
    frame = make_frame(subjects_per_class=6, folds=3, test_subjects=2, final=2)
    out = assign_splits(frame, SplitConfig(method="official"))
    out.loc[out["split"] == "final", "content_hash"] = out["content_hash"].iat[0]
    audit_leakage(out)  # final is never trained or scored on
    with pytest.raises(ValueError, match="assign_splits first"):
        audit_leakage(frame)


def test_unlabelled_rows_go_to_final() -> None:
    frame = make_frame(subjects_per_class=6, test_subjects=2)
    frame.loc[frame["source_split"] == "test", "label"] = -1
    out = assign_splits(frame, SplitConfig(method="group_kfold", n_folds=3))
    assert (out.loc[frame["label"] < 0, "split"] == "final").all()
    assert (out["split"] == "test").any()  # a holdout replaces the missing labelled test set
    assert np.all(out.loc[out["split"] != "final", "label"].to_numpy() >= 0)
