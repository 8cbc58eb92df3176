"""``check_dataset``: each kind of problem, planted in a generated tree, is reported with its
file."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest
from PIL import Image

from trainers.data.check import CheckReport, check_dataset
from trainers.data.synth import synthesize

PRELIM = "validation_data/C-NMC_test_prelim_phase_data"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("pristine")
    return {
        layout: synthesize(base / layout, layout, 4, 4, 32, seed=5)
        for layout in ("cnmc-kaggle", "all4", "imagefolder")
    }


@pytest.fixture()
def kaggle(pristine: dict[str, Path], tmp_path: Path) -> Path:
    return Path(shutil.copytree(pristine["cnmc-kaggle"], tmp_path / "kaggle"))


@pytest.fixture()
def folder(pristine: dict[str, Path], tmp_path: Path) -> Path:
    return Path(shutil.copytree(pristine["imagefolder"], tmp_path / "folder"))


def _train_files(root: Path, fold: int = 0, cls: str = "all") -> list[Path]:
    return sorted((root / "training_data" / f"fold_{fold}" / cls).glob("*.bmp"))


def _only(report: CheckReport, path: str) -> list[tuple[str, str]]:
    """(severity, problem) pairs reported for one file."""
    return [(p.severity, p.problem) for p in report.problems if p.path == path]


def _rel(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


@pytest.mark.parametrize("layout", ["cnmc-kaggle", "all4", "imagefolder"])
def test_generated_datasets_are_clean(pristine: dict[str, Path], layout: str) -> None:
    report = check_dataset(pristine[layout])
    assert report.ok and report.problems == []
    out = report.to_json()
    assert set(out) >= {"layout", "counts", "subjects", "problems"}
    assert out["layout"] == layout and out["problems"] == []


def test_counts_and_subjects_per_split_and_class(pristine: dict[str, Path]) -> None:
    report = check_dataset(pristine["cnmc-kaggle"], "cnmc-kaggle")
    assert report.counts["train"] == {"hem": 6, "all": 12}  # 3 subjects x 2 vs 3 x 4 cells
    assert report.counts["test"] == {"hem": 2, "all": 4}
    assert report.counts["final"] == {"unlabelled": 4}
    assert report.subjects["train"] == {"hem": 3, "all": 3}
    assert report.subjects["test"] == {"hem": 1, "all": 1}


def test_zero_byte_file(kaggle: Path) -> None:
    target = _train_files(kaggle)[0]
    target.write_bytes(b"")
    report = check_dataset(kaggle)
    assert not report.ok
    [(severity, text)] = _only(report, _rel(kaggle, target))
    assert severity == "error" and "0 bytes" in text
    assert _rel(kaggle, target) in report.bad_paths()


def test_truncated_image(kaggle: Path) -> None:
    target = _train_files(kaggle)[0]
    data = target.read_bytes()
    target.write_bytes(data[: len(data) * 2 // 3])
    [(severity, text)] = _only(check_dataset(kaggle), _rel(kaggle, target))
    assert severity == "error" and "truncated" in text


def test_undecodable_image(folder: Path) -> None:
    target = sorted((folder / "hem").glob("*.png"))[0]
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF  # corrupt the compressed pixel data (PNG CRC fails)
    target.write_bytes(bytes(data))
    [(severity, text)] = _only(check_dataset(folder), _rel(folder, target))
    assert severity == "error" and "undecodable" in text


def test_non_image_file_with_an_image_extension(kaggle: Path) -> None:
    target = _train_files(kaggle)[0]
    target.write_text("Patient notes, not a picture")
    [(severity, text)] = _only(check_dataset(kaggle), _rel(kaggle, target))
    assert severity == "error" and "not an image" in text


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_decompression_bomb(kaggle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    huge = kaggle / "training_data/fold_0/all/UID_1_90_1_all.bmp"
    big = kaggle / "training_data/fold_0/all/UID_1_90_2_all.bmp"
    Image.new("RGB", (400, 400)).save(huge, format="BMP")  # > 2 x limit: PIL refuses to open
    Image.new("RGB", (150, 150)).save(big, format="BMP")  # > limit: PIL only warns
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20_000)
    report = check_dataset(kaggle)
    for path in (huge, big):
        [(severity, text)] = _only(report, _rel(kaggle, path))
        assert severity == "error" and "decompression bomb" in text


def test_mode_that_will_be_converted_is_a_warning(kaggle: Path) -> None:
    target = _train_files(kaggle)[0]
    Image.open(target).convert("L").save(target, format="BMP")
    report = check_dataset(kaggle)
    [(severity, text)] = _only(report, _rel(kaggle, target))
    assert severity == "warning" and "mode L" in text and "RGB" in text
    assert report.ok


def test_size_other_than_the_splits_usual_one_is_a_warning(kaggle: Path) -> None:
    target = _train_files(kaggle)[0]
    Image.open(target).resize((40, 40)).save(target, format="BMP")
    report = check_dataset(kaggle)
    [(severity, text)] = _only(report, _rel(kaggle, target))
    assert severity == "warning" and "40x40" in text and "32x32" in text
    assert report.ok


def test_name_that_does_not_parse(kaggle: Path) -> None:
    source = _train_files(kaggle)[0]
    target = source.with_name("cell_0001.bmp")
    source.rename(target)
    [(severity, text)] = _only(check_dataset(kaggle), _rel(kaggle, target))
    assert severity == "error" and "does not parse" in text


def test_class_folder_disagrees_with_the_name(kaggle: Path) -> None:
    source = _train_files(kaggle, cls="hem")[0]
    target = kaggle / "training_data/fold_0/all" / source.name
    source.rename(target)
    [(severity, text)] = _only(check_dataset(kaggle), _rel(kaggle, target))
    assert severity == "error" and "disagrees" in text and "'hem'" in text


def test_csv_row_without_a_file(kaggle: Path) -> None:
    (kaggle / PRELIM / "3.bmp").unlink()
    [(severity, text)] = _only(check_dataset(kaggle), f"{PRELIM}/3.bmp")
    assert severity == "error" and "does not exist" in text and "labels.csv" in text


def test_file_without_a_csv_row(kaggle: Path) -> None:
    Image.new("RGB", (32, 32), (9, 9, 9)).save(kaggle / PRELIM / "77.bmp", format="BMP")
    [(severity, text)] = _only(check_dataset(kaggle), f"{PRELIM}/77.bmp")
    assert severity == "error" and "no row" in text


def test_subjects_csv_rows_and_files_must_match(folder: Path) -> None:
    lines = (folder / "subjects.csv").read_text().splitlines()
    dropped = lines.pop(3).split(",")[0]
    lines.append("hem/ghost.png,HEM01")
    (folder / "subjects.csv").write_text("\n".join(lines) + "\n")
    report = check_dataset(folder)
    [(severity, text)] = _only(report, dropped)
    assert severity == "error" and "no row in subjects.csv" in text
    [(severity, text)] = _only(report, "hem/ghost.png")
    assert severity == "error" and "does not exist" in text


def test_identical_images_in_two_splits(kaggle: Path) -> None:
    source = _train_files(kaggle, fold=0)[0]
    copy = kaggle / "training_data/fold_1/all/UID_2_80_1_all.bmp"
    shutil.copy(source, copy)
    report = check_dataset(kaggle)
    [(severity, text)] = _only(report, _rel(kaggle, copy))
    assert severity == "error" and "identical" in text and _rel(kaggle, source) in text
    assert "fold 1" in text and "fold 0" in text


def test_identical_images_in_one_split_is_a_warning(kaggle: Path) -> None:
    source = _train_files(kaggle, fold=0)[0]
    copy = source.with_name("UID_1_80_1_all.bmp")
    shutil.copy(source, copy)
    report = check_dataset(kaggle)
    [(severity, text)] = _only(report, _rel(kaggle, copy))
    assert severity == "warning" and "identical" in text


def test_subject_in_two_folds(kaggle: Path) -> None:
    source = _train_files(kaggle, fold=0)[0]  # subject 1 lives in fold 0
    stray = kaggle / "training_data/fold_2/all/UID_1_70_1_all.bmp"
    Image.open(source).rotate(90).save(stray, format="BMP")
    report = check_dataset(kaggle)
    [(severity, text)] = _only(report, _rel(kaggle, stray))
    assert severity == "error" and "subject 1" in text and "two folds" in text
    assert all(p.path == _rel(kaggle, stray) for p in report.errors)


def test_subject_in_train_and_test(kaggle: Path) -> None:
    labels = kaggle / "validation_data/C-NMC_test_prelim_phase_data_labels.csv"
    lines = labels.read_text().splitlines()
    header, first, *rest = lines
    name, new_name, label = first.split(",")
    cls = "all" if label == "1" else "hem"
    first = f"UID_{'1' if cls == 'all' else 'H1'}_99_1_{cls}.bmp,{new_name},{label}"
    labels.write_text("\n".join([header, first, *rest]) + "\n")
    [(severity, text)] = _only(check_dataset(kaggle), f"{PRELIM}/{new_name}")
    assert severity == "error" and "two splits" in text


def test_empty_class(pristine: dict[str, Path], tmp_path: Path) -> None:
    root = Path(shutil.copytree(pristine["all4"], tmp_path / "all4"))
    for p in (root / "Original" / "Pre").iterdir():
        p.unlink()
    report = check_dataset(root)
    [(severity, text)] = _only(report, "Original/Pre")
    assert severity == "error" and "no images" in text
    shutil.rmtree(root / "Original" / "Pre")  # a missing folder is the same problem
    assert _only(check_dataset(root), "Original/Pre")[0][0] == "error"


def test_json_report_lists_every_problem_with_path_and_severity(kaggle: Path) -> None:
    files = _train_files(kaggle)
    files[0].write_bytes(b"")
    Image.open(files[1]).convert("L").save(files[1], format="BMP")
    out = check_dataset(kaggle).to_json()
    assert out["ok"] is False
    assert {(p["path"], p["severity"]) for p in out["problems"]} == {
        (_rel(kaggle, files[0]), "error"),
        (_rel(kaggle, files[1]), "warning"),
    }
    assert all(set(p) == {"path", "problem", "severity"} for p in out["problems"])


def test_checking_reads_png_in_memory_not_via_extension(folder: Path) -> None:
    # a JPEG saved under .png is readable but flagged, so a mislabelled export is visible
    target = sorted((folder / "all").glob("*.png"))[0]
    buf = io.BytesIO()
    Image.open(target).save(buf, format="JPEG")
    target.write_bytes(buf.getvalue())
    [(severity, text)] = _only(check_dataset(folder), _rel(folder, target))
    assert severity == "warning" and "content is JPEG" in text


def test_subject_with_two_diagnoses(kaggle: Path) -> None:
    """Folder and name agree, but the subject's other files say another class."""
    source = _train_files(kaggle, fold=0, cls="all")[0]  # subject 1 (ALL) lives in fold 0
    stray = kaggle / "training_data/fold_0/hem/UID_1_71_1_hem.bmp"
    Image.open(source).rotate(90).save(stray, format="BMP")
    report = check_dataset(kaggle)
    problems = _only(report, _rel(kaggle, stray))
    assert ("error", next(t for s, t in problems if "two classes" in t)) in problems
    assert any("subject 1 has images of two classes" in t and "all (" in t for _, t in problems)
    # the id has no H prefix, so it names an ALL subject: a second, independent disagreement
    assert any("names an ALL subject" in t for _, t in problems)
    assert {p.path for p in report.errors} == {_rel(kaggle, stray)}


def test_healthy_subject_id_on_an_all_cell(kaggle: Path) -> None:
    """Folder and name suffix agree (all), but the subject id says healthy (H prefix)."""
    source = _train_files(kaggle, fold=1, cls="all")[0]
    stray = kaggle / "training_data/fold_1/all/UID_H77_1_1_all.bmp"
    Image.open(source).rotate(90).save(stray, format="BMP")
    [(severity, text)] = _only(check_dataset(kaggle), _rel(kaggle, stray))
    assert severity == "error" and "healthy subject (H prefix)" in text and "'all'" in text


def test_prelim_csv_label_against_the_subjects_other_files(kaggle: Path) -> None:
    """A CSV row whose label disagrees with its subject's other test images."""
    labels = kaggle / "validation_data/C-NMC_test_prelim_phase_data_labels.csv"
    header, *rows = labels.read_text().splitlines()
    patient, new_name, label = rows[0].split(",")
    flipped = "0" if label == "1" else "1"
    siblings = [r for r in rows[1:] if r.split(",")[0].split("_")[1] == patient.split("_")[1]]
    assert siblings, "the synthetic test set has several cells per subject"
    rows[0] = f"{patient},{new_name},{flipped}"
    labels.write_text("\n".join([header, *rows]) + "\n")
    problems = _only(check_dataset(kaggle), f"{PRELIM}/{new_name}")
    texts = " | ".join(t for _, t in problems)
    assert "has images of two classes" in texts, texts


def test_a_folder_holding_one_dataset_folder_is_read_as_that_folder(
    pristine: dict[str, Path], tmp_path: Path
) -> None:
    """The Kaggle archive unzips to C-NMC_Leukemia/ (macOS zips add __MACOSX/ beside it)."""
    download = tmp_path / "download"
    inner = Path(shutil.copytree(pristine["cnmc-kaggle"], download / "C-NMC_Leukemia"))
    (download / "__MACOSX").mkdir()
    for layout in ("auto", "cnmc-kaggle"):
        report = check_dataset(download, layout)
        assert report.ok and report.layout == "cnmc-kaggle"
        assert report.root == str(inner.resolve())
        [note] = report.notes
        assert "single dataset folder" in note and str(inner) in note
        assert report.format_table().startswith(f"note: {note}")
    (download / "second").mkdir()  # two candidates: no guessing
    with pytest.raises(Exception, match="cannot tell the layout"):
        check_dataset(download)


def test_all4_class_folder_disagrees_with_the_name(
    pristine: dict[str, Path], tmp_path: Path
) -> None:
    root = Path(shutil.copytree(pristine["all4"], tmp_path / "all4"))
    source = sorted((root / "Original" / "Pre").glob("*.jpg"))[0]
    stray = root / "Original" / "Early" / "WBC-Malignant-Pre-901.jpg"
    shutil.copy(source, stray)
    report = check_dataset(root, "all4")
    [(severity, text)] = _only(report, _rel(root, stray))
    assert severity == "error" and "'Early' disagrees with the class 'Pre'" in text
    assert {p.path for p in report.errors} == {_rel(root, stray)}
