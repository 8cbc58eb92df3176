"""Members from prediction files: grouping by fold, alignment checks, clear rejections."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ensemble.members import (
    EnsembleInputError,
    build_members,
    load_prediction_sets,
    select_candidates,
)
from trainers.predictions import read_predictions, write_predictions


def _members(run: Path, skip: bool = False, said: list | None = None):
    say = said.append if said is not None else lambda s: None
    sets = load_prediction_sets(run / "predictions", skip, say)
    return build_members(sets, skip, say)


def test_folds_of_one_configuration_form_one_member(synthetic_run: Path) -> None:
    members = _members(synthetic_run)
    assert len(members) == 6  # 3 backbones x 2 learning rates, each trained on 2 folds
    m = members[0]
    assert len(m.trial_ids) == 2 and m.name == "+".join(m.trial_ids)
    # validation = union of both folds' (disjoint) validation cells: 12 subjects x 8 cells
    assert m.val.P.shape == (1, 96, 2)
    assert len(set(m.val.sample_ids)) == 96
    assert list(m.val.sample_ids) == sorted(m.val.sample_ids)
    # test = mean over the folds' test predictions
    a = read_predictions(synthetic_run / "predictions" / f"{m.trial_ids[0]}.parquet")
    b = read_predictions(synthetic_run / "predictions" / f"{m.trial_ids[1]}.parquet")
    ta = a.split("test").sort_values("sample_id")
    tb = b.split("test").sort_values("sample_id")
    mean = (np.stack(ta["probs"].to_numpy()) + np.stack(tb["probs"].to_numpy())) / 2
    assert np.allclose(m.test.P[0], mean)
    assert set(m.val_scores) >= {"wfs", "auc", "kappa"}


def test_candidates(synthetic_run: Path) -> None:
    members = _members(synthetic_run)
    best = select_candidates(members, "best-per-backbone")
    assert sorted(m.backbone for m in best) == ["mobilenet", "resnet18", "vgg16"]
    for m in best:
        same = [o for o in members if o.backbone == m.backbone]
        assert m.val_scores["wfs"] == max(o.val_scores["wfs"] for o in same)
    top = select_candidates(members, "top-2")
    assert len(top) == 2 and top[0].val_scores["wfs"] >= top[1].val_scores["wfs"]
    picked = select_candidates(members, f"{members[0].trial_ids[1]},{members[3].trial_ids[0]}")
    assert [m.name for m in picked] == [members[0].name, members[3].name]
    with pytest.raises(ValueError, match="unknown trial id"):
        select_candidates(members, "t999")


def test_snapshot_members_one_per_trough_and_no_repeats(synthetic_run: Path) -> None:
    from tests.ensemble.conftest import write_snapshots

    write_snapshots(synthetic_run, epochs=(2, 3))
    said: list[str] = []
    assert len(_members(synthetic_run)) == 6  # without the prefix: best-epoch files only
    sets = load_prediction_sets(synthetic_run / "predictions", say=said.append, snapshots=True)
    members = build_members(sets, say=said.append)
    # 6 configurations x 2 troughs; each best-epoch member repeats its epoch-3 snapshot
    assert len(members) == 12 and all(m.snapshot_epoch in (2, 3) for m in members)
    assert sum("kept once" in line for line in said) == 6
    m = next(m for m in members if m.snapshot_epoch == 2)
    # a snapshot member unites the folds' snapshots of one epoch; its origin is the trials
    assert [t.rpartition("@e")[2] for t in m.trial_ids] == ["2", "2"]
    assert m.origin == "+".join(t.rpartition("@e")[0] for t in m.trial_ids)
    assert m.val.P.shape == (1, 96, 2)


def test_snapshot_candidate_rules(synthetic_run: Path) -> None:
    from tests.ensemble.conftest import write_snapshots

    write_snapshots(synthetic_run, epochs=(1, 2, 3))
    sets = load_prediction_sets(synthetic_run / "predictions", snapshots=True)
    members = build_members(sets, say=lambda s: None)
    best = max(members, key=lambda m: m.val_scores["wfs"])
    of_best = select_candidates(members, "snapshots:of-best")
    assert of_best[0] is best and {m.origin for m in of_best} == {best.origin}
    assert sorted(m.snapshot_epoch for m in of_best) == [1, 2, 3]
    top = select_candidates(members, "snapshots:top-4")
    assert [m.val_scores["wfs"] for m in top] == sorted(
        (m.val_scores["wfs"] for m in members), reverse=True
    )[:4]
    picked = select_candidates(members, f"snapshots:{of_best[1].trial_ids[0]}")
    assert picked == [of_best[1]]
    with pytest.raises(ValueError, match="snapshots:of-best"):
        select_candidates(members, "of-best")


def test_snapshot_rule_without_snapshots_says_how_to_get_them(synthetic_run: Path) -> None:
    with pytest.raises(EnsembleInputError, match="train.snapshots=true"):
        load_prediction_sets(synthetic_run / "predictions", snapshots=True)


def _rewrite(path: Path, edit) -> None:
    """Rewrite a prediction file through write_predictions after editing its frame."""
    pset = read_predictions(path)
    frame, names, config = edit(pset.frame.copy(), list(pset.class_names), dict(pset.config))
    write_predictions(path, frame, names, config)


def test_misaligned_test_samples_name_trial_and_file(synthetic_run: Path) -> None:
    path = synthetic_run / "predictions" / "t004.parquet"
    dropped = read_predictions(path).split("test")["sample_id"].iloc[0]
    _rewrite(path, lambda f, n, c: (f[f["sample_id"] != dropped], n, c))
    with pytest.raises(EnsembleInputError) as err:
        _members(synthetic_run)
    assert "trial t004" in str(err.value) and str(path) in str(err.value)
    assert "test samples" in str(err.value) and "--skip-bad-files" in str(err.value)
    said: list[str] = []
    members = _members(synthetic_run, skip=True, said=said)
    assert any("skipping" in s and "t004" in s for s in said)
    # t004 gone: its configuration keeps only its other fold, whose validation cells differ
    assert all("t004" not in m.trial_ids for m in members)
    assert any("t005" in s for s in said)
    assert len(members) == 5


def test_differing_class_names_are_rejected(synthetic_run: Path) -> None:
    path = synthetic_run / "predictions" / "t002.parquet"
    _rewrite(path, lambda f, n, c: (f, ["normal", "all"], c))
    with pytest.raises(EnsembleInputError, match=r"trial t002 .*class names \['normal', 'all'\]"):
        _members(synthetic_run)


def test_overlapping_folds_are_rejected(synthetic_run: Path) -> None:
    """Two trials of one configuration that claim the same fold cannot be out-of-fold."""
    path = synthetic_run / "predictions" / "t001.parquet"
    twin = read_predictions(synthetic_run / "predictions" / "t000.parquet")

    def same_as_t000(f, n, c):
        frame = twin.frame.copy()
        frame["trial_id"] = "t001"
        return frame, n, twin.config

    _rewrite(path, same_as_t000)
    with pytest.raises(EnsembleInputError, match="repeat a fold"):
        _members(synthetic_run)


def test_folds_predicting_one_validation_sample_twice_are_rejected(synthetic_run: Path) -> None:
    """The other fold of a configuration claims one of this fold's validation cells."""
    val = read_predictions(synthetic_run / "predictions" / "t000.parquet").split("val")
    taken = val["sample_id"].iloc[3]

    def claim_it(f, n, c):
        rows = f.index[f["split"] == "val"]
        f.loc[rows[0], ["sample_id", "subject_id"]] = [taken, val["subject_id"].iloc[3]]
        return f, n, c

    _rewrite(synthetic_run / "predictions" / "t001.parquet", claim_it)
    with pytest.raises(
        EnsembleInputError, match=f"both predict validation sample '{taken}'"
    ) as err:
        _members(synthetic_run)
    assert "trial t000" in str(err.value) and "trial t001" in str(err.value)


def test_truncated_file_is_rejected_or_skipped(synthetic_run: Path) -> None:
    path = synthetic_run / "predictions" / "t003.parquet"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(EnsembleInputError, match=r"t003\.parquet.*(truncated|not a readable)"):
        _members(synthetic_run)
    said: list[str] = []
    _members(synthetic_run, skip=True, said=said)
    assert any("skipping bad prediction file" in s and "t003" in s for s in said)


def test_probabilities_not_summing_to_one_are_rejected(synthetic_run: Path) -> None:
    """A file written by other means with rows that do not sum to 1 is refused on read."""
    path = synthetic_run / "predictions" / "t006.parquet"
    table = pq.read_table(path)
    probs = table.column("probs").combine_chunks()
    values = probs.flatten().to_numpy(zero_copy_only=False).copy()
    values[0] = values[0] + 0.3
    bad = pa.ListArray.from_arrays(probs.offsets, pa.array(values, pa.float32()))
    table = table.set_column(table.schema.get_field_index("probs"), "probs", bad)
    pq.write_table(table.replace_schema_metadata(pq.read_schema(path).metadata), path)
    with pytest.raises(EnsembleInputError, match=r"t006\.parquet.*sum to 1"):
        _members(synthetic_run)


def test_empty_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EnsembleInputError, match="does not exist"):
        load_prediction_sets(tmp_path / "nope")
    (tmp_path / "predictions").mkdir()
    with pytest.raises(EnsembleInputError, match="no usable prediction files"):
        load_prediction_sets(tmp_path / "predictions")
