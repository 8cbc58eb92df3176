"""Dataset layouts: find every image of a dataset on disk and describe it in one manifest.

Each layout is a reader ``(root: Path) -> Manifest`` registered in :data:`LAYOUTS`. A reader
walks the folders the layout defines, parses labels, subjects and folds from names, folders and
CSV files, and reads each file's pixel size (header only) and content hash. Problems it meets
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
import hashlib
import io
import json
import os
import re
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from trainers._atomic import atomic_write
from trainers._registry import Registry
from trainers.data.errors import DataError

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

COLUMNS = [
    "sample_id",
    "path",
    "label",
    "class_name",
    "subject_id",
    "source_split",
    "fold",
    "width",
    "height",
    "content_hash",
]
_INT_COLUMNS = ("label", "fold", "width", "height")

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


class LayoutError(DataError):
    """A folder does not have the structure of the requested (or any known) layout."""


@dataclass
class Problem:
    """One problem with one file (``path`` relative to the dataset root, POSIX separators)."""

    path: str
    problem: str
    severity: Literal["error", "warning"] = "error"

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "problem": self.problem, "severity": self.severity}


@dataclass
class Manifest:
    """Every image of a dataset, one row each (columns :data:`COLUMNS`), plus what went wrong.

    ``subjects`` says where subject ids come from: ``filename``, ``csv`` or ``none``.
    """

    frame: pd.DataFrame
    layout: str
    class_names: list[str]
    subjects: str
    problems: list[Problem] = field(default_factory=list)
    root: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass
class _Entry:
    """An image a reader found, before its header and bytes are read."""

    rel: str
    label: int
    class_name: str | None
    subject_id: str | None
    source_split: str
    fold: int = -1


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


def _probe(path: Path) -> tuple[int, int, str, str | None]:
    """Pixel size (from the header), sha1 of the bytes, and why the header is unreadable."""
    data = path.read_bytes()
    digest = hashlib.sha1(data).hexdigest()
    if not data:
        return -1, -1, digest, "empty file (0 bytes): re-copy or delete it"
    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
    except Image.DecompressionBombError as exc:
        return -1, -1, digest, f"decompression bomb refused by PIL ({exc})"
    except UnidentifiedImageError:
        return -1, -1, digest, (
            f"not an image: PIL cannot identify the content of this {path.suffix} file "
            "(a non-image file with an image extension?)"
        )
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a reportable problem
        return -1, -1, digest, f"unreadable image header: {type(exc).__name__}: {exc}"
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and width * height > limit:
        return -1, -1, digest, (
            f"decompression bomb: {width}x{height} = {width * height} pixels exceeds PIL's "
            f"Image.MAX_IMAGE_PIXELS={limit}"
        )
    return width, height, digest, None


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _empty_frame() -> pd.DataFrame:
    return _normalise_frame(pd.DataFrame({c: [] for c in COLUMNS}))


def _normalise_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Fix column order and dtypes: int64 numbers, object strings with None (not NaN) missing."""
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise LayoutError(
            f"a manifest needs the columns {COLUMNS}; missing {missing}: rebuild it with "
            "`wen data manifest`"
        )
    out = pd.DataFrame(index=range(len(frame)))
    for col in COLUMNS:
        values = frame[col].tolist()
        if col in _INT_COLUMNS:
            out[col] = np.asarray(values, dtype=np.int64)
        else:
            out[col] = pd.Series([None if _missing(v) else str(v) for v in values], dtype=object)
    return out


def _finish(
    root: Path,
    layout: str,
    entries: list[_Entry],
    class_names: list[str],
    subjects: str,
    problems: list[Problem],
) -> Manifest:
    """Read each entry's header and bytes (threads: hashing and I/O release the GIL)."""
    entries = sorted(entries, key=lambda e: e.rel)
    paths = [root / e.rel for e in entries]
    workers = max(1, min(8, 2 * (os.cpu_count() or 1)))
    if len(paths) > 64:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            probes = list(pool.map(_probe, paths, chunksize=16))
    else:
        probes = [_probe(p) for p in paths]
    rows = []
    for entry, path, (width, height, digest, why) in zip(entries, paths, probes):
        if why is not None:
            problems.append(Problem(entry.rel, why, "error"))
        rows.append(
            {
                "sample_id": entry.rel,
                "path": str(path.resolve()),
                "label": entry.label,
                "class_name": entry.class_name,
                "subject_id": entry.subject_id,
                "source_split": entry.source_split,
                "fold": entry.fold,
                "width": width,
                "height": height,
                "content_hash": digest,
            }
        )
    frame = _normalise_frame(pd.DataFrame(rows, columns=COLUMNS)) if rows else _empty_frame()
    return Manifest(frame, layout, list(class_names), subjects, problems, str(root.resolve()))


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
            problems.append(
                Problem(_rel(child, root), "not a fold_<k> folder; ignored", "warning")
            )
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
                    Problem(_rel(class_dir, root), "not a class folder (all, hem); ignored",
                            "warning")
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
    csv_rel = _rel(csv_path, root)
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except Exception as exc:  # noqa: BLE001 - a broken CSV is a reportable problem
        problems.append(Problem(csv_rel, f"cannot read the labels CSV: {exc}"))
        return []
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
        return []
    entries: list[_Entry] = []
    listed: set[str] = set()
    for i, row in enumerate(table.itertuples(index=False), start=2):  # row 1 is the header
        new_name = str(row.new_names).strip()
        original = str(row.Patient_ID).strip()
        where = f"{csv_rel} line {i}"
        if new_name in listed:
            problems.append(
                Problem(_rel(prelim_dir, root) + "/" + new_name,
                        f"{where}: {new_name!r} is listed a second time; the row is ignored")
            )
            continue
        listed.add(new_name)
        path = by_name.get(new_name)
        if path is None:
            problems.append(
                Problem(
                    _rel(prelim_dir, root) + "/" + new_name,
                    f"listed in {where} but the file does not exist",
                )
            )
            continue
        rel = _rel(path, root)
        label_text = str(row.labels).strip()
        if label_text not in {"0", "1"}:
            problems.append(
                Problem(rel, f"{where}: label {label_text!r} is not 0 (hem) or 1 (ALL)")
            )
            continue
        label = int(label_text)
        parsed = _parse_cnmc_name(original)
        if parsed is None:
            problems.append(
                Problem(rel, f"{where}: Patient_ID {original!r} does not parse: {_NAME_RULE}")
            )
            continue
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
        entries.append(_Entry(rel, label, CNMC_CLASSES[label], subject, "test"))
    for name, path in by_name.items():
        if name not in listed:
            problems.append(
                Problem(_rel(path, root), f"file has no row in {csv_rel}; it is left out")
            )
    return entries


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
    return _finish(root, layout, entries, CNMC_CLASSES, "filename", problems)


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
    return _finish(root, "all4", entries, ALL4_CLASSES, "none", problems)


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
    return _finish(
        root, "imagefolder", entries, class_names, "csv" if mapping is not None else "none",
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
    if (root / "Original").is_dir() and any(
        (root / "Original" / c).is_dir() for c in ALL4_CLASSES
    ):
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
        if c.is_dir() and not _is_hidden(c)
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
        c for c in root.iterdir() if c.is_dir() and not _is_hidden(c) and c.name not in _ARCHIVE_NOISE
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


def manifest_hash(frame: pd.DataFrame) -> str:
    """Short stable hash of (sample_id, content_hash, label, subject_id), in row order.

    Row order is part of the hash on purpose: the decoded-image cache stores images by row
    position, so a reordered manifest must not reuse it.
    """
    h = hashlib.sha256()
    for sample_id, digest, label, subject in zip(
        frame["sample_id"], frame["content_hash"], frame["label"], frame["subject_id"]
    ):
        subject_text = "" if _missing(subject) else str(subject)
        h.update(f"{sample_id}\x1f{digest}\x1f{int(label)}\x1f{subject_text}\x1e".encode())
    return h.hexdigest()[:16]


def write_manifest(manifest: Manifest, path: Path) -> Path:
    """Write a manifest as Parquet; layout, root, class names and subjects go in the metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = _normalise_frame(manifest.frame)
    schema = pa.schema(
        [(c, pa.int64()) if c in _INT_COLUMNS else (c, pa.string()) for c in COLUMNS]
    )
    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    meta = {
        b"layout": manifest.layout.encode(),
        b"root": manifest.root.encode(),
        b"class_names": json.dumps(manifest.class_names).encode(),
        b"subjects": manifest.subjects.encode(),
        b"problems": json.dumps([p.to_dict() for p in manifest.problems]).encode(),
    }
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
    atomic_write(path, lambda fh: pq.write_table(table, fh), what="manifest")
    return path


def load_manifest_file(path: Path) -> Manifest:
    """Read a manifest written by :func:`write_manifest`."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"manifest file {str(path)!r} does not exist; write one with `wen data manifest`"
        )
    table = pq.read_table(path)
    meta = table.schema.metadata or {}
    if b"layout" not in meta or b"class_names" not in meta:
        raise LayoutError(
            f"{str(path)!r} is not a wen manifest (no layout/class_names metadata); "
            "write one with `wen data manifest ROOT --out FILE.parquet`"
        )
    frame = _normalise_frame(table.to_pandas())
    problems = [Problem(**p) for p in json.loads(meta.get(b"problems", b"[]").decode())]
    return Manifest(
        frame,
        meta[b"layout"].decode(),
        json.loads(meta[b"class_names"].decode()),
        meta.get(b"subjects", b"none").decode(),
        problems,
        meta.get(b"root", b"").decode(),
    )
