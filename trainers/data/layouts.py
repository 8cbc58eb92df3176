"""Dataset layouts: find every image of a dataset on disk and describe it in one manifest.

Each layout is a reader ``(root: Path) -> Manifest`` registered in :data:`LAYOUTS`. A reader
walks the folders the layout defines, parses labels, subjects and folds from names, folders and
CSV files; ``trainers.data.manifest`` (the table's schema and file) reads each file's pixel size
(header only) and content hash. Problems it meets
with individual files (a name that does not parse, a class folder that disagrees with the
name, a CSV row without a file...) are collected in :attr:`Manifest.problems` instead of
stopping the read, so ``wen data check`` can list all of them at once. A folder that does not
look like the layout at all raises :class:`LayoutError`.

>>> from trainers.data.synth import synthesize
>>> import tempfile
>>> root = synthesize(Path(tempfile.mkdtemp()) / "d", "all4", 1, 2, 32, seed=0)
>>> m = read_manifest(root)
>>> m.layout, m.class_names, len(m.frame)
('all4', ['Benign', 'Early', 'Pre', 'Pro'], 8)
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from trainers._registry import Registry
from trainers.data.errors import LayoutError
from trainers.data.manifest import (
    COLUMNS,
    Manifest,
    Problem,
    load_manifest_file,
    manifest_from_entries,
    manifest_hash,
    write_manifest,
)
from trainers.data.manifest import ManifestEntry as _Entry

__all__ = [
    "COLUMNS",
    "IMAGE_EXTENSIONS",
    "LAYOUTS",
    "LayoutError",
    "Manifest",
    "Problem",
    "detect_layout",
    "load_manifest_file",
    "manifest_hash",
    "read_manifest",
    "write_manifest",
]

IMAGE_EXTENSIONS = frozenset({".bmp", ".jpg", ".jpeg", ".png", ".tif", ".tiff"})

CNMC_CLASSES = ["hem", "all"]  # hem = 0, all = 1, matching the prelim CSV's 1 = ALL
ALL4_CLASSES = ["Benign", "Early", "Pre", "Pro"]
PRELIM_DIR = "C-NMC_test_prelim_phase_data"
PRELIM_CSV = "C-NMC_test_prelim_phase_data_labels.csv"
FINAL_DIR = "C-NMC_test_final_phase_data"
SUBJECTS_CSV = "subjects.csv"

# UID_<subject>_<image>_<cell>_<all|hem>; healthy subjects carry an H (some files a lower-case h)
_CNMC_NAME = re.compile(
    r"^UID_(?P<subject>H?\d+)_(?P<image>\d+)_(?P<cell>\d+)_(?P<cls>all|hem)$", re.IGNORECASE
)
_FOLD_DIR = re.compile(r"^fold_(\d+)$")


LAYOUTS: Registry[Callable[[Path], Manifest]] = Registry("dataset layout", key="data.layout")

_EXPECTS = {
    "cnmc-tcia": "C-NMC_training_data/fold_<k>/{all,hem}/*.bmp (+ C-NMC_test_prelim_phase_data/ "
    "with its labels CSV, C-NMC_test_final_phase_data/)",
    "cnmc-kaggle": "training_data/fold_<k>/{all,hem}/*.bmp (+ validation_data/, testing_data/)",
    "all4": "Original/{Benign,Early,Pre,Pro}/*.jpg",
    "imagefolder": "one folder per class with images inside (optional subjects.csv with "
    "columns path,subject_id)",
}


# ------------------------------------------------------------------------------- helpers


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _is_hidden(path: Path) -> bool:
    return path.name.startswith(".")


def _walk_images(
    folder: Path,
    root: Path,
    problems: list[Problem],
    recursive: bool,
    expected: frozenset[str] = frozenset(),
) -> list[Path]:
    """Image files under ``folder`` (sorted); other files become warnings, except hidden ones
    and the ``expected`` names (a labels CSV that lives beside the images)."""
    found: list[Path] = []
    if recursive:
        candidates: Iterable[Path] = (
            Path(d) / f
            for d, dirs, files in os.walk(folder)
            for f in files
            if not any(part.startswith(".") for part in Path(d).relative_to(folder).parts)
        )
    else:
        candidates = folder.iterdir()
    for path in sorted(candidates):
        if _is_hidden(path) or path.name in expected:
            continue
        if path.is_dir():
            problems.append(
                Problem(_rel(path, root), "unexpected sub-folder; its files are ignored", "warning")
            )
        elif path.suffix.lower() in IMAGE_EXTENSIONS:
            found.append(path)
        else:
            problems.append(
                Problem(
                    _rel(path, root),
                    f"not an image extension ({path.suffix or 'none'}); the file is ignored",
                    "warning",
                )
            )
    return found


def _parse_cnmc_name(name: str) -> tuple[str, str] | None:
    """``UID_h10_43_1_hem.bmp`` -> ``("H10", "hem")``; None when it does not parse."""
    stem = PurePosixPath(name.strip()).stem
    match = _CNMC_NAME.match(stem)
    if match is None:
        return None
    return match["subject"].upper(), match["cls"].lower()


_NAME_RULE = "expected UID_<subject>_<image>_<cell>_<all|hem>.bmp, e.g. UID_H10_43_1_hem.bmp"


# ------------------------------------------------------------------------------ C-NMC


def _require_dir(path: Path, layout: str) -> None:
    if not path.is_dir():
        raise LayoutError(
            f"{layout} layout: folder {str(path)!r} is missing; this layout expects "
            f"{_EXPECTS[layout]} (pick another layout with --layout, or fix the root)"
        )


def _read_cnmc_training(train_dir: Path, root: Path, problems: list[Problem]) -> list[_Entry]:
    entries: list[_Entry] = []
    folds = []
    for child in sorted(train_dir.iterdir()):
        if _is_hidden(child):
            continue
        match = _FOLD_DIR.match(child.name)
        if match is None or not child.is_dir():
            problems.append(Problem(_rel(child, root), "not a fold_<k> folder; ignored", "warning"))
            continue
        folds.append((int(match.group(1)), child))
    if not folds:
        problems.append(
            Problem(_rel(train_dir, root), "no fold_<k> folders with training images", "error")
        )
    for fold, fold_dir in folds:
        for class_dir in sorted(fold_dir.iterdir()):
            if _is_hidden(class_dir):
                continue
            cls = class_dir.name.lower()
            if cls not in CNMC_CLASSES or not class_dir.is_dir():
                problems.append(
                    Problem(
                        _rel(class_dir, root), "not a class folder (all, hem); ignored", "warning"
                    )
                )
                continue
            for path in _walk_images(class_dir, root, problems, recursive=False):
                rel = _rel(path, root)
                parsed = _parse_cnmc_name(path.name)
                if parsed is None:
                    problems.append(Problem(rel, f"file name does not parse: {_NAME_RULE}"))
                    continue
                subject, name_cls = parsed
                if name_cls != cls:
                    problems.append(
                        Problem(
                            rel,
                            f"class folder {class_dir.name!r} disagrees with the name's class "
                            f"suffix {name_cls!r}: move the file or fix its name",
                        )
                    )
                    continue
                entries.append(_Entry(rel, CNMC_CLASSES.index(cls), cls, subject, "train", fold))
    return entries


def _find_prelim_csv(candidates: list[Path], prelim_dir: Path) -> Path | None:
    for path in candidates:
        if path.is_file():
            return path
    if prelim_dir.is_dir():
        for path in sorted(prelim_dir.rglob(PRELIM_CSV)):
            return path
    return None


def _read_cnmc_prelim(
    prelim_dir: Path, csv_path: Path | None, root: Path, problems: list[Problem]
) -> list[_Entry]:
    """The labelled preliminary test set: images ``1.bmp...`` and the CSV that labels them."""
    if not prelim_dir.is_dir():
        if csv_path is not None:
            problems.append(
                Problem(_rel(csv_path, root), f"labels CSV without its image folder {PRELIM_DIR}/")
            )
        return []
    beside = frozenset({PRELIM_CSV})  # the TCIA copy keeps its labels CSV inside the folder
    files = _walk_images(prelim_dir, root, problems, recursive=True, expected=beside)
    if csv_path is None:
        problems.append(
            Problem(
                _rel(prelim_dir, root) + "/" + PRELIM_CSV,
                f"the preliminary test images have no labels file {PRELIM_CSV}; "
                f"its {len(files)} images are left out: put the CSV next to the folder",
            )
        )
        return []
    by_name = _prelim_files_by_name(files, root, problems)
    table = _read_prelim_csv(csv_path, root, problems)
    if table is None:
        return []
    entries: list[_Entry] = []
    listed: set[str] = set()
    csv_rel = _rel(csv_path, root)
    for i, row in enumerate(table.itertuples(index=False), start=2):  # row 1 is the header
        entry = _prelim_row(row, f"{csv_rel} line {i}", prelim_dir, by_name, listed, root, problems)
        if entry is not None:
            entries.append(entry)
    for name, path in by_name.items():
        if name not in listed:
            problems.append(
                Problem(_rel(path, root), f"file has no row in {csv_rel}; it is left out")
            )
    return entries


def _prelim_files_by_name(
    files: list[Path], root: Path, problems: list[Problem]
) -> dict[str, Path]:
    """The preliminary test images by file name (the CSV names them); repeats are warned."""
    by_name: dict[str, Path] = {}
    for path in files:
        if path.name in by_name:
            problems.append(
                Problem(
                    _rel(path, root),
                    f"second file named {path.name!r} in the preliminary test folder (first: "
                    f"{_rel(by_name[path.name], root)}); ignored",
                    "warning",
                )
            )
            continue
        by_name[path.name] = path
    return by_name


def _read_prelim_csv(csv_path: Path, root: Path, problems: list[Problem]) -> pd.DataFrame | None:
    """The labels CSV with its three columns, or None (and a problem) when it cannot be used."""
    csv_rel = _rel(csv_path, root)
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except Exception as exc:  # noqa: BLE001 - a broken CSV is a reportable problem
        problems.append(Problem(csv_rel, f"cannot read the labels CSV: {exc}"))
        return None
    table.columns = [c.strip() for c in table.columns]
    need = {"Patient_ID", "new_names", "labels"}
    if not need <= set(table.columns):
        problems.append(
            Problem(
                csv_rel,
                f"labels CSV needs the columns Patient_ID,new_names,labels; has "
                f"{','.join(table.columns)}",
            )
        )
        return None
    return table


def _prelim_row(
    row: Any,
    where: str,
    prelim_dir: Path,
    by_name: dict[str, Path],
    listed: set[str],
    root: Path,
    problems: list[Problem],
) -> _Entry | None:
    """One CSV row as an entry, or None with the reason in ``problems``; adds it to ``listed``."""
    new_name = str(row.new_names).strip()
    original = str(row.Patient_ID).strip()
    if new_name in listed:
        problems.append(
            Problem(
                _rel(prelim_dir, root) + "/" + new_name,
                f"{where}: {new_name!r} is listed a second time; the row is ignored",
            )
        )
        return None
    listed.add(new_name)
    path = by_name.get(new_name)
    if path is None:
        problems.append(
            Problem(
                _rel(prelim_dir, root) + "/" + new_name,
                f"listed in {where} but the file does not exist",
            )
        )
        return None
    rel = _rel(path, root)
    label_text = str(row.labels).strip()
    if label_text not in {"0", "1"}:
        problems.append(Problem(rel, f"{where}: label {label_text!r} is not 0 (hem) or 1 (ALL)"))
        return None
    label = int(label_text)
    parsed = _parse_cnmc_name(original)
    if parsed is None:
        problems.append(
            Problem(rel, f"{where}: Patient_ID {original!r} does not parse: {_NAME_RULE}")
        )
        return None
    subject, name_cls = parsed
    if CNMC_CLASSES.index(name_cls) != label:
        problems.append(
            Problem(
                rel,
                f"{where}: label {label} ({CNMC_CLASSES[label]}) disagrees with the class "
                f"suffix of Patient_ID {original!r}; the label column is used",
                "warning",
            )
        )
    return _Entry(rel, label, CNMC_CLASSES[label], subject, "test")


def _read_cnmc_final(final_dir: Path, root: Path, problems: list[Problem]) -> list[_Entry]:
    if not final_dir.is_dir():
        return []
    return [
        _Entry(_rel(p, root), -1, None, None, "final")
        for p in _walk_images(final_dir, root, problems, recursive=True)
    ]


def _read_cnmc(
    root: Path, layout: str, train: str, prelim: str, prelim_csvs: list[str], final: str
) -> Manifest:
    root = Path(root)
    _require_dir(root / train, layout)
    problems: list[Problem] = []
    entries = _read_cnmc_training(root / train, root, problems)
    csv_path = _find_prelim_csv([root / c for c in prelim_csvs], root / prelim)
    entries += _read_cnmc_prelim(root / prelim, csv_path, root, problems)
    entries += _read_cnmc_final(root / final, root, problems)
    return manifest_from_entries(root, layout, entries, CNMC_CLASSES, "filename", problems)


@LAYOUTS.register("cnmc-tcia")
def read_cnmc_tcia(root: Path) -> Manifest:
    """C-NMC-2019 as published on TCIA: ``C-NMC_training_data/``, prelim and final folders."""
    return _read_cnmc(
        root,
        "cnmc-tcia",
        train="C-NMC_training_data",
        prelim=PRELIM_DIR,
        prelim_csvs=[f"{PRELIM_DIR}/{PRELIM_CSV}", PRELIM_CSV],
        final=FINAL_DIR,
    )


@LAYOUTS.register("cnmc-kaggle")
def read_cnmc_kaggle(root: Path) -> Manifest:
    """C-NMC-2019 as on Kaggle: ``training_data/``, ``validation_data/``, ``testing_data/``."""
    return _read_cnmc(
        root,
        "cnmc-kaggle",
        train="training_data",
        prelim=f"validation_data/{PRELIM_DIR}",
        prelim_csvs=[f"validation_data/{PRELIM_CSV}", f"validation_data/{PRELIM_DIR}/{PRELIM_CSV}"],
        final=f"testing_data/{FINAL_DIR}",
    )


# ------------------------------------------------------------------------------- all4


def _all4_name_class(name: str) -> str | None:
    """The class a four-class file name states (``WBC-Malignant-Pre-010.jpg`` -> ``Pre``;
    ``WBC-Benign-001.jpg`` -> ``Benign``), None when the name states none."""
    tokens = {t.lower() for t in re.split(r"[-_. ]+", PurePosixPath(name).stem)}
    named = [c for c in ALL4_CLASSES if c.lower() in tokens]
    if len(named) == 1:
        return named[0]
    return None


@LAYOUTS.register("all4")
def read_all4(root: Path) -> Manifest:
    """Four B-ALL classes: ``Original/{Benign,Early,Pre,Pro}/``; ``Segmented/`` is not read.

    The segmented copies show the same cells; reading them would count each cell twice and
    put copies of one cell on both sides of a split.
    """
    root = Path(root)
    original = root / "Original"
    _require_dir(original, "all4")
    problems: list[Problem] = []
    entries: list[_Entry] = []
    for child in sorted(original.iterdir()):
        if _is_hidden(child):
            continue
        if child.name not in ALL4_CLASSES or not child.is_dir():
            problems.append(
                Problem(
                    _rel(child, root),
                    f"not one of the class folders {', '.join(ALL4_CLASSES)}; ignored",
                    "warning",
                )
            )
            continue
        label = ALL4_CLASSES.index(child.name)
        for path in _walk_images(child, root, problems, recursive=True):
            named = _all4_name_class(path.name)
            if named is not None and named != child.name:
                problems.append(Problem(
                    _rel(path, root),
                    f"class folder {child.name!r} disagrees with the class {named!r} in the file "
                    "name (WBC-Benign-NNN, WBC-Malignant-<Early|Pre|Pro>-NNN): move the file or "
                    "fix its name",
                ))  # fmt: skip
                continue
            entries.append(_Entry(_rel(path, root), label, child.name, None, "train"))
    return manifest_from_entries(root, "all4", entries, ALL4_CLASSES, "none", problems)


# ------------------------------------------------------------------------ imagefolder


def _safe_relative(text: str, root: Path, where: str) -> str:
    """A CSV path as a POSIX path inside ``root``; refuses absolute paths and ``..``."""
    posix = PurePosixPath(text.strip().replace("\\", "/"))
    if posix.is_absolute() or re.match(r"^[A-Za-z]:", str(posix)) or ".." in posix.parts:
        raise LayoutError(
            f"{where}: path {text!r} escapes the dataset root {str(root)!r}; paths in "
            f"{SUBJECTS_CSV} must be relative to the root and stay inside it (no leading '/', "
            "no '..'), e.g. hem/cell_001.png"
        )
    return posix.as_posix()


def _read_subjects_csv(path: Path, root: Path, problems: list[Problem]) -> dict[str, str]:
    csv_rel = _rel(path, root)
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        fields = [f.strip() for f in (reader.fieldnames or [])]
        if not {"path", "subject_id"} <= set(fields):
            raise LayoutError(
                f"{csv_rel}: needs the columns path,subject_id; has {','.join(fields) or 'none'}: "
                "fix the header line"
            )
        mapping: dict[str, str] = {}
        for i, raw in enumerate(reader, start=2):
            row = {(k or "").strip(): (v or "") for k, v in raw.items()}
            rel = _safe_relative(row["path"], root, f"{csv_rel} line {i}")
            subject = row["subject_id"].strip().upper()
            if not subject:
                problems.append(Problem(rel, f"{csv_rel} line {i}: empty subject_id"))
                continue
            if rel in mapping and mapping[rel] != subject:
                problems.append(
                    Problem(
                        rel,
                        f"{csv_rel} line {i}: subject {subject!r} contradicts an earlier row "
                        f"({mapping[rel]!r})",
                    )
                )
                continue
            mapping[rel] = subject
    return mapping


@LAYOUTS.register("imagefolder")
def read_imagefolder(root: Path) -> Manifest:
    """One folder per class (sorted names are the classes); optional ``subjects.csv``."""
    root = Path(root)
    if not root.is_dir():
        raise LayoutError(f"imagefolder layout: {str(root)!r} is not a folder")
    problems: list[Problem] = []
    class_dirs = [c for c in sorted(root.iterdir()) if c.is_dir() and not _is_hidden(c)]
    if not class_dirs:
        raise LayoutError(
            f"imagefolder layout: {str(root)!r} has no class folders; it expects "
            f"{_EXPECTS['imagefolder']}"
        )
    for child in sorted(root.iterdir()):
        if child.is_file() and not _is_hidden(child) and child.name != SUBJECTS_CSV:
            problems.append(
                Problem(_rel(child, root), "file outside any class folder; ignored", "warning")
            )
    class_names = [c.name for c in class_dirs]
    subjects_path = root / SUBJECTS_CSV
    mapping = _read_subjects_csv(subjects_path, root, problems) if subjects_path.is_file() else None
    entries: list[_Entry] = []
    for label, class_dir in enumerate(class_dirs):
        for path in _walk_images(class_dir, root, problems, recursive=True):
            rel = _rel(path, root)
            subject = None
            if mapping is not None:
                subject = mapping.get(rel)
                if subject is None:
                    problems.append(
                        Problem(rel, f"file has no row in {SUBJECTS_CSV}; it is left out")
                    )
                    continue
            entries.append(_Entry(rel, label, class_dir.name, subject, "train"))
    if mapping is not None:
        found = {e.rel for e in entries} | {p.path for p in problems}
        for rel in sorted(set(mapping) - found):
            if not (root / rel).is_file():
                problems.append(
                    Problem(rel, f"listed in {SUBJECTS_CSV} but the file does not exist")
                )
    return manifest_from_entries(
        root,
        "imagefolder",
        entries,
        class_names,
        "csv" if mapping is not None else "none",
        problems,
    )


# ------------------------------------------------------------------------ entry points


def _looks_like(root: Path) -> list[str]:
    hits = []
    if (root / "C-NMC_training_data").is_dir():
        hits.append("cnmc-tcia")
    if (root / "training_data").is_dir() and any(
        _FOLD_DIR.match(p.name) for p in (root / "training_data").iterdir()
    ):
        hits.append("cnmc-kaggle")
    if (root / "Original").is_dir() and any((root / "Original" / c).is_dir() for c in ALL4_CLASSES):
        hits.append("all4")
    return hits


def detect_layout(root: Path) -> str:
    """The layout a folder has; a :class:`LayoutError` lists every layout and what it expects."""
    root = Path(root)
    if not root.is_dir():
        raise LayoutError(f"dataset root {str(root)!r} is not a folder; point it at the dataset")
    hits = _looks_like(root)
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        raise LayoutError(
            f"{str(root)!r} looks like several layouts ({', '.join(hits)}); pick one with --layout"
        )
    class_dirs = [
        c
        for c in root.iterdir()
        if c.is_dir()
        and not _is_hidden(c)
        and any(p.suffix.lower() in IMAGE_EXTENSIONS for p in c.rglob("*"))
    ]
    if len(class_dirs) >= 2:
        return "imagefolder"
    expects = "; ".join(f"{name}: {_EXPECTS[name]}" for name in LAYOUTS.names())
    hint = ""
    subdirs = [c for c in root.iterdir() if c.is_dir() and not _is_hidden(c)]
    if len(subdirs) == 1 and _looks_like(subdirs[0]):
        hint = f" It looks like the dataset is one level down: use {str(subdirs[0])!r} as root."
    raise LayoutError(
        f"cannot tell the layout of {str(root)!r}. Known layouts: {expects}.{hint} "
        "Pass the layout explicitly with --layout / data.layout once the folder matches one."
    )


#: The folder each layout has at its root (imagefolder has none: any folder of classes).
_MARKERS = {"cnmc-tcia": "C-NMC_training_data", "cnmc-kaggle": "training_data", "all4": "Original"}
#: Folders an unzipped archive brings along that are not data (macOS resource forks).
_ARCHIVE_NOISE = {"__MACOSX"}


def _is_dataset(folder: Path, layout: str) -> bool:
    if layout == "auto":
        return bool(_looks_like(folder))
    marker = _MARKERS.get(layout)
    return marker is not None and (folder / marker).is_dir()


def find_dataset_root(root: Path, layout: str = "auto") -> tuple[Path, str | None]:
    """The dataset folder at ``root``, or one level down, and a note when it moved down.

    An unzipped archive often holds one folder (Kaggle's C-NMC zip unpacks to
    ``C-NMC_Leukemia/``); pointed at the folder that holds it, the dataset is that single
    folder. ``__MACOSX`` and hidden folders do not count.

    >>> find_dataset_root(Path("/nonexistent"))[1] is None
    True
    """
    root = Path(root)
    if not root.is_dir() or _is_dataset(root, layout):
        return root, None
    subdirs = [
        c
        for c in root.iterdir()
        if c.is_dir() and not _is_hidden(c) and c.name not in _ARCHIVE_NOISE
    ]
    if len(subdirs) == 1 and _is_dataset(subdirs[0], layout):
        inner = subdirs[0]
        return inner, (
            f"{str(root)!r} holds a single dataset folder; using {str(inner)!r} (set data.root "
            "to it to silence this note)"
        )
    return root, None


def read_manifest(root: Path, layout: str = "auto") -> Manifest:
    """Read a dataset folder into a :class:`Manifest` (``layout="auto"`` detects it).

    A folder that holds a single dataset folder is read as that folder, and the manifest's
    ``notes`` say so (:func:`find_dataset_root`).
    """
    root = Path(root)
    if not root.is_dir():
        raise LayoutError(f"dataset root {str(root)!r} is not a folder; point it at the dataset")
    root, note = find_dataset_root(root, layout)
    name = detect_layout(root) if layout == "auto" else layout
    manifest = LAYOUTS.get(name)(root)
    if note:
        manifest.notes.append(note)
    return manifest
