"""Layout readers: subjects, labels, folds, the prelim CSV, detection, manifest files."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from trainers._registry import UnknownNameError
from trainers.data.layouts import (
    COLUMNS,
    LAYOUTS,
    LayoutError,
    detect_layout,
    load_manifest_file,
    manifest_hash,
    read_manifest,
    write_manifest,
)
from trainers.data.synth import synthesize

PRELIM = "C-NMC_test_prelim_phase_data"


def _bmp(path: Path, value: int = 0, size: int = 24) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), (value, value // 2, 255 - value)).save(path, format="BMP")


@pytest.fixture()
def handmade_kaggle(tmp_path: Path) -> Path:
    """A tiny hand-written cnmc-kaggle tree with known subjects, incl. a lower-case h."""
    root = tmp_path / "kaggle"
    train = root / "training_data"
    _bmp(train / "fold_0/all/UID_11_10_1_all.bmp", 10)
    _bmp(train / "fold_0/all/UID_11_10_2_all.bmp", 11)
    _bmp(train / "fold_0/hem/UID_H22_1_1_hem.bmp", 12)
    _bmp(train / "fold_1/hem/UID_h7_3_2_hem.bmp", 13)  # lower-case h, as in some real files
    _bmp(train / "fold_2/all/UID_5_1_1_all.bmp", 14)
    prelim = root / "validation_data" / PRELIM
    _bmp(prelim / "1.bmp", 20)
    _bmp(prelim / "2.bmp", 21)
    with (root / "validation_data" / f"{PRELIM}_labels.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["Patient_ID", "new_names", "labels"])
        w.writerow(["UID_H10_43_1_hem.bmp", "1.bmp", 0])
        w.writerow(["UID_54_33_4_all.bmp", "2.bmp", 1])
    _bmp(root / "testing_data/C-NMC_test_final_phase_data/1.bmp", 30, size=32)
    return root


def test_cnmc_kaggle_reader_parses_subjects_labels_folds_and_the_prelim_csv(
    handmade_kaggle: Path,
) -> None:
    m = read_manifest(handmade_kaggle, "cnmc-kaggle")
    assert m.problems == []
    assert (m.layout, m.class_names, m.subjects) == ("cnmc-kaggle", ["hem", "all"], "filename")
    f = m.frame.set_index("sample_id")
    assert list(m.frame.columns) == COLUMNS
    row = f.loc["training_data/fold_0/all/UID_11_10_1_all.bmp"]
    assert (row.subject_id, row.label, row.class_name, row.source_split, row.fold) == (
        "11",
        1,
        "all",
        "train",
        0,
    )
    assert f.loc["training_data/fold_1/hem/UID_h7_3_2_hem.bmp"].subject_id == "H7"
    assert f.loc["training_data/fold_0/hem/UID_H22_1_1_hem.bmp"].label == 0
    prelim1 = f.loc[f"validation_data/{PRELIM}/1.bmp"]
    prelim2 = f.loc[f"validation_data/{PRELIM}/2.bmp"]
    assert (prelim1.subject_id, prelim1.label, prelim1.source_split, prelim1.fold) == (
        "H10",
        0,
        "test",
        -1,
    )
    assert (prelim2.subject_id, prelim2.label, prelim2.class_name) == ("54", 1, "all")
    final = f.loc["testing_data/C-NMC_test_final_phase_data/1.bmp"]
    assert final.label == -1 and final.class_name is None and final.subject_id is None
    assert final.source_split == "final" and (final.width, final.height) == (32, 32)
    assert row.width == 24 and len(row.content_hash) == 40
    assert Path(row.path).is_absolute() and Path(row.path).is_file()
    assert m.frame["label"].dtype == np.int64 and m.frame["fold"].dtype == np.int64


def test_cnmc_tcia_reader_finds_nested_prelim_images_and_csv(tmp_path: Path) -> None:
    root = tmp_path / "tcia"
    _bmp(root / "C-NMC_training_data/fold_0/all/UID_3_1_1_all.bmp", 1)
    _bmp(root / "C-NMC_training_data/fold_1/hem/UID_H4_1_1_hem.bmp", 2)
    _bmp(root / PRELIM / PRELIM / "1.bmp", 3)  # nested folder of the same name
    with (root / PRELIM / f"{PRELIM}_labels.csv").open("w", newline="") as fh:
        fh.write("Patient_ID,new_names,labels\nUID_h9_2_1_hem.bmp,1.bmp,0\n")
    _bmp(root / "C-NMC_test_final_phase_data/C-NMC_test_final_phase_data/1.bmp", 4)
    assert detect_layout(root) == "cnmc-tcia"
    m = read_manifest(root)
    assert m.problems == []
    f = m.frame.set_index("sample_id")
    test = f.loc[f"{PRELIM}/{PRELIM}/1.bmp"]
    assert (test.subject_id, test.label, test.source_split) == ("H9", 0, "test")
    assert f.loc["C-NMC_training_data/fold_1/hem/UID_H4_1_1_hem.bmp"].fold == 1
    assert (f["source_split"] == "final").sum() == 1


def test_prelim_label_column_wins_over_a_disagreeing_name_with_a_warning(
    handmade_kaggle: Path,
) -> None:
    csv_path = handmade_kaggle / "validation_data" / f"{PRELIM}_labels.csv"
    csv_path.write_text(
        "Patient_ID,new_names,labels\nUID_H10_43_1_hem.bmp,1.bmp,1\nUID_54_33_4_all.bmp,2.bmp,1\n"
    )
    m = read_manifest(handmade_kaggle)
    (problem,) = m.problems
    assert problem.path.endswith(f"{PRELIM}/1.bmp") and problem.severity == "warning"
    assert "disagrees" in problem.problem
    assert m.frame.set_index("sample_id").loc[f"validation_data/{PRELIM}/1.bmp"].label == 1


def test_all4_reads_original_only_and_has_no_subjects(tmp_path: Path) -> None:
    root = synthesize(tmp_path / "all4", "all4", 1, 3, 32, seed=0)
    shutil.copytree(root / "Original", root / "Segmented")
    m = read_manifest(root)
    assert m.layout == "all4" and m.subjects == "none"
    assert len(m.frame) == 12 and m.frame["sample_id"].str.startswith("Original/").all()
    assert m.frame["subject_id"].isna().all()
    assert m.frame.groupby("class_name").size().to_dict() == {c: 3 for c in m.class_names}
    assert sorted(m.frame["label"].unique()) == [0, 1, 2, 3]


def test_imagefolder_reads_classes_and_subjects_csv(tmp_path: Path) -> None:
    root = tmp_path / "folder"
    _bmp(root / "benign/a.bmp", 1)
    _bmp(root / "malignant/b.bmp", 2)
    _bmp(root / "malignant/deeper/c.bmp", 3)
    (root / "subjects.csv").write_text(
        "path,subject_id\nbenign/a.bmp,p1\nmalignant/b.bmp,P2\nmalignant/deeper/c.bmp,p2\n"
    )
    assert detect_layout(root) == "imagefolder"
    m = read_manifest(root)
    assert m.problems == [] and m.subjects == "csv" and m.class_names == ["benign", "malignant"]
    assert dict(zip(m.frame["sample_id"], m.frame["subject_id"])) == {
        "benign/a.bmp": "P1",
        "malignant/b.bmp": "P2",
        "malignant/deeper/c.bmp": "P2",
    }
    assert dict(zip(m.frame["sample_id"], m.frame["label"])) == {
        "benign/a.bmp": 0,
        "malignant/b.bmp": 1,
        "malignant/deeper/c.bmp": 1,
    }


def test_imagefolder_without_csv_has_no_subjects(tmp_path: Path) -> None:
    root = tmp_path / "folder"
    _bmp(root / "x/a.bmp", 1)
    _bmp(root / "y/b.bmp", 2)
    m = read_manifest(root, "imagefolder")
    assert m.subjects == "none" and m.frame["subject_id"].isna().all()


@pytest.mark.parametrize("bad", ["../outside.bmp", "x/../../outside.bmp", "/etc/passwd"])
def test_imagefolder_refuses_csv_paths_that_escape_the_root(tmp_path: Path, bad: str) -> None:
    root = tmp_path / "folder"
    _bmp(root / "x/a.bmp", 1)
    _bmp(root / "y/b.bmp", 2)
    (root / "subjects.csv").write_text(f"path,subject_id\nx/a.bmp,s1\n{bad},s2\n")
    with pytest.raises(LayoutError, match="escapes the dataset root") as info:
        read_manifest(root)
    assert "line 3" in str(info.value) and bad in str(info.value)


@pytest.mark.parametrize("layout", ["cnmc-kaggle", "cnmc-tcia", "all4", "imagefolder"])
def test_detect_layout_on_each_synthetic_layout(tmp_path: Path, layout: str) -> None:
    root = synthesize(tmp_path / layout, layout, 4, 2, 24, seed=3)
    assert detect_layout(root) == layout
    assert read_manifest(root).layout == layout


def test_detect_layout_error_lists_every_layout_and_suggests_one_level_down(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(LayoutError) as info:
        detect_layout(tmp_path / "empty")
    text = str(info.value)
    for name in LAYOUTS.names():
        assert name in text
    wrapper = tmp_path / "wrapper"
    synthesize(wrapper / "C-NMC_Leukemia", "cnmc-kaggle", 4, 1, 24, seed=0)
    with pytest.raises(LayoutError, match="one level down"):
        detect_layout(wrapper)
    with pytest.raises(LayoutError, match="not a folder"):
        read_manifest(tmp_path / "missing")


def test_unknown_layout_name_lists_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError, match="valid names: all4, cnmc-kaggle"):
        read_manifest(tmp_path, "cnmc")


def test_explicit_layout_on_the_wrong_folder_says_what_it_expects(tmp_path: Path) -> None:
    root = synthesize(tmp_path / "a", "all4", 1, 1, 24, seed=0)
    with pytest.raises(LayoutError, match="training_data"):
        read_manifest(root, "cnmc-kaggle")


def test_manifest_parquet_round_trip_and_hash(handmade_kaggle: Path, tmp_path: Path) -> None:
    m = read_manifest(handmade_kaggle)
    path = write_manifest(m, tmp_path / "out" / "manifest.parquet")
    back = load_manifest_file(path)
    assert (back.layout, back.class_names, back.subjects) == (m.layout, m.class_names, m.subjects)
    pd.testing.assert_frame_equal(back.frame, m.frame)
    assert back.frame["subject_id"].map(lambda v: v is None).sum() == 1  # None, not NaN
    assert manifest_hash(back.frame) == manifest_hash(m.frame)
    # the hash follows content, labels and subjects...
    changed = m.frame.copy()
    changed.loc[0, "label"] = 1 - changed.loc[0, "label"]
    assert manifest_hash(changed) != manifest_hash(m.frame)
    changed = m.frame.copy()
    changed.loc[1, "content_hash"] = "0" * 40
    assert manifest_hash(changed) != manifest_hash(m.frame)
    # ...but not the absolute paths (the same dataset copied elsewhere keeps its hash)
    copy = tmp_path / "copy"
    shutil.copytree(handmade_kaggle, copy)
    assert manifest_hash(read_manifest(copy).frame) == manifest_hash(m.frame)


def test_load_manifest_file_refuses_a_foreign_parquet(tmp_path: Path) -> None:
    path = tmp_path / "x.parquet"
    pd.DataFrame({"a": [1]}).to_parquet(path)
    with pytest.raises(LayoutError, match="not a wen manifest"):
        load_manifest_file(path)
    with pytest.raises(FileNotFoundError, match="wen data manifest"):
        load_manifest_file(tmp_path / "missing.parquet")


def test_prelim_csv_listing_a_file_twice_keeps_one_row(handmade_kaggle: Path) -> None:
    csv_path = handmade_kaggle / "validation_data" / f"{PRELIM}_labels.csv"
    with csv_path.open("a", newline="") as fh:
        fh.write("UID_54_33_5_all.bmp,2.bmp,1\n")
    m = read_manifest(handmade_kaggle)
    assert m.frame["sample_id"].is_unique
    (problem,) = m.problems
    assert problem.path == f"validation_data/{PRELIM}/2.bmp" and "second time" in problem.problem
