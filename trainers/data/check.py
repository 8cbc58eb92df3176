"""Check a dataset folder before training: every problem, one line per file, with its reason.

:func:`check_dataset` reads the manifest (which already reports names that do not parse, class
folders that disagree with names, CSV rows without files and files without CSV rows) and then
looks inside every file: empty, truncated or undecodable images, non-image files with an image
extension, decompression bombs, images PIL will convert to RGB, sizes other than the usual one,
identical images in two splits, subjects in two folds, empty classes.

Errors make a dataset unusable as is (``prepare_data`` refuses it unless
``data.skip_bad_files``, which drops the files named by errors); warnings are informational.

>>> from trainers.data.synth import synthesize
>>> import tempfile
>>> root = synthesize(Path(tempfile.mkdtemp()) / "d", "imagefolder", 2, 3, 32, seed=0)
>>> report = check_dataset(root)
>>> report.ok, report.layout, report.counts["train"]
(True, 'imagefolder', {'all': 6, 'hem': 6})
"""

from __future__ import annotations

import io
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from PIL import Image

from trainers.data.layouts import read_manifest
from trainers.data.manifest import Manifest, Problem

__all__ = ["CheckReport", "check_dataset", "check_manifest"]

_Found = tuple[str, Literal["error", "warning"]]  # (problem, severity) for one file
_FORMATS = {
    ".bmp": {"BMP", "DIB"},
    ".jpg": {"JPEG", "MPO"},
    ".jpeg": {"JPEG", "MPO"},
    ".png": {"PNG"},
    ".tif": {"TIFF"},
    ".tiff": {"TIFF"},
}
_CLASS_FOLDERS = {
    "cnmc-tcia": "C-NMC_training_data/fold_*/{}",
    "cnmc-kaggle": "training_data/fold_*/{}",
    "all4": "Original/{}",
    "imagefolder": "{}",
}


@dataclass
class CheckReport:
    """What :func:`check_dataset` found. ``ok`` is True when there are no errors."""

    root: str
    layout: str
    counts: dict[str, dict[str, int]]
    subjects: dict[str, dict[str, int]]
    subject_source: str
    class_names: list[str]
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def bad_paths(self) -> set[str]:
        """Paths (relative to the root, as ``sample_id``) named by at least one error."""
        return {p.path for p in self.errors}

    def to_json(self) -> dict[str, Any]:
        """``{"layout", "counts", "subjects", "problems": [{"path", "problem", "severity"}]}``."""
        return {
            "root": self.root,
            "notes": self.notes,
            "layout": self.layout,
            "ok": self.ok,
            "class_names": self.class_names,
            "counts": self.counts,
            "subjects": self.subjects,
            "subject_source": self.subject_source,
            "problems": [p.to_dict() for p in self.problems],
        }

    def format_table(self) -> str:
        """A human-readable summary: counts per split and class, then every problem."""
        lines = [f"note: {n}" for n in self.notes]
        lines += [
            f"dataset {self.root}",
            f"layout  {self.layout} (subjects: {self.subject_source})",
        ]
        columns = list(self.class_names)
        if any("unlabelled" in per_class for per_class in self.counts.values()):
            columns.append("unlabelled")
        header = ["split", *columns, "total", "subjects"]
        rows = []
        for split, per_class in self.counts.items():
            n_subjects = sum(self.subjects.get(split, {}).values())
            rows.append(
                [
                    split,
                    *(str(per_class.get(c, 0)) for c in columns),
                    str(sum(per_class.values())),
                    str(n_subjects) if n_subjects else "-",
                ]
            )
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        lines += ["", fmt.format(*header), *[fmt.format(*r) for r in rows], ""]
        for p in sorted(self.problems, key=lambda p: (p.severity != "error", p.path)):
            lines.append(f"{p.severity.upper():<7}  {p.path}: {p.problem}")
        n_err, n_warn = len(self.errors), len(self.warnings)
        verdict = "OK" if self.ok else "NOT OK"
        lines.append(f"{verdict}: {n_err} error(s), {n_warn} warning(s)")
        return "\n".join(lines)


def _inspect(path: str, suffix: str) -> list[_Found]:
    """Decode one image fully; returns (problem, severity) pairs (empty when fine)."""
    found: list[_Found] = []
    try:
        data = Path(path).read_bytes()
        with Image.open(io.BytesIO(data)) as im:
            fmt, mode = im.format, im.mode
            im.verify()  # structure and checksums (PNG CRCs) without decoding pixels
        with Image.open(io.BytesIO(data)) as im:
            im.load()  # decodes every pixel: catches truncated files verify() misses
    except Image.DecompressionBombError as exc:
        return [(f"decompression bomb refused by PIL ({exc})", "error")]
    except (OSError, SyntaxError, ValueError) as exc:
        text = str(exc)
        if "truncated" in text.lower() or "broken data stream" in text.lower():
            return [(f"truncated image: {text}; re-copy the file", "error")]
        return [(f"undecodable image: {type(exc).__name__}: {text}", "error")]
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a reportable problem
        return [(f"undecodable image: {type(exc).__name__}: {exc}", "error")]
    expected = _FORMATS.get(suffix.lower())
    if expected is not None and fmt not in expected:
        found.append((f"content is {fmt} but the extension says {suffix}", "warning"))
    if mode != "RGB":
        found.append((f"image mode {mode} will be converted to RGB when loaded", "warning"))
    return found


def _split_key(row: pd.Series) -> str:
    return row.source_split if row.fold < 0 else f"{row.source_split} fold {row.fold}"


def _counts(frame: pd.DataFrame, class_names: list[str]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for split in ("train", "test", "final"):
        part = frame[frame["source_split"] == split]
        if part.empty:
            continue
        if split == "final":
            counts[split] = {"unlabelled": int(len(part))}
            continue
        counts[split] = {c: int((part["class_name"] == c).sum()) for c in class_names}
    return counts


def _subject_counts(frame: pd.DataFrame, class_names: list[str]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    known = frame[frame["subject_id"].notna() & (frame["label"] >= 0)]
    for split, part in known.groupby("source_split", sort=True):
        out[str(split)] = {
            c: int(part.loc[part["class_name"] == c, "subject_id"].nunique()) for c in class_names
        }
    return out


def _size_problems(frame: pd.DataFrame) -> list[Problem]:
    """Sizes other than the split's usual one (the mode): warnings."""
    problems = []
    valid = frame[frame["width"] > 0]
    for split, part in valid.groupby("source_split", sort=True):
        sizes = Counter(zip(part["width"], part["height"]))
        (mw, mh), _ = sizes.most_common(1)[0]
        for row in part.itertuples():
            if (row.width, row.height) != (mw, mh):
                problems.append(
                    Problem(
                        row.sample_id,
                        f"size {row.width}x{row.height} differs from the {split} split's usual "
                        f"{mw}x{mh}; it will be cropped/resized like the others",
                        "warning",
                    )
                )
    return problems


def _duplicate_problems(frame: pd.DataFrame) -> list[Problem]:
    """Identical bytes: in two splits/folds an error (leakage), within one a warning."""
    problems = []
    valid = frame[frame["width"] > 0]
    for _, group in valid.groupby("content_hash", sort=False):
        if len(group) < 2:
            continue
        rows = list(group.sort_values("sample_id").itertuples())
        first = rows[0]
        for row in rows[1:]:
            a, b = _split_key(first), _split_key(row)
            if a != b:
                problems.append(
                    Problem(
                        row.sample_id,
                        f"identical image to {first.sample_id} in another split ({b} vs {a}): "
                        "the same image on both sides leaks; delete one copy",
                        "error",
                    )
                )
            else:
                problems.append(
                    Problem(row.sample_id, f"identical image to {first.sample_id} ({a})", "warning")
                )
    return problems


def _subject_problems(frame: pd.DataFrame) -> list[Problem]:
    """A subject's cells in two folds or splits: error on every file outside its main one."""
    problems = []
    known = frame[frame["subject_id"].notna() & (frame["label"] >= 0)].copy()
    if known.empty:
        return problems
    known["where"] = [_split_key(r) for r in known.itertuples()]
    for subject, group in known.groupby("subject_id", sort=True):
        places = group["where"].value_counts()
        if len(places) < 2:
            continue
        # the place with most of the subject's cells is its home; ties go to the first name
        ranked = sorted(places.items(), key=lambda kv: (-kv[1], kv[0]))
        home = ranked[0][0]
        summary = ", ".join(f"{w} ({n} images)" for w, n in ranked)
        kind = "folds" if all(w.startswith("train fold") for w in places.index) else "splits"
        for row in group[group["where"] != home].sort_values("sample_id").itertuples():
            problems.append(
                Problem(
                    row.sample_id,
                    f"subject {subject} is in two {kind}: {summary}; every subject must sit in "
                    "exactly one fold/split (move or drop the files outside its main one)",
                    "error",
                )
            )
    return problems


def _diagnosis_problems(frame: pd.DataFrame, layout: str) -> list[Problem]:
    """A subject has one diagnosis: every labelled file of a subject must carry one class, and
    in C-NMC the subject id must agree with it (``H<n>`` names a healthy subject, ``hem``).

    The class comes from the file's folder (or the labels CSV), the subject from its name (or
    the CSV), so a disagreement means one of them is wrong; training would learn from it and
    the subject-level statistics would count one person under two diagnoses.
    """
    problems: list[Problem] = []
    known = frame[frame["subject_id"].notna() & (frame["label"] >= 0)]
    for subject, group in known.groupby("subject_id", sort=True):
        classes = group["class_name"].value_counts()
        if len(classes) > 1:
            ranked = sorted(classes.items(), key=lambda kv: (-kv[1], kv[0]))
            summary = ", ".join(f"{c} ({n} images)" for c, n in ranked)
            for row in (
                group[group["class_name"] != ranked[0][0]].sort_values("sample_id").itertuples()
            ):
                problems.append(Problem(
                    row.sample_id,
                    f"subject {subject} has images of two classes: {summary}; a subject has one "
                    f"diagnosis: fix this file's class ({row.class_name}) or its subject",
                ))  # fmt: skip
    if layout.startswith("cnmc"):
        for row in known.sort_values("sample_id").itertuples():
            healthy = str(row.subject_id).upper().startswith("H")
            if healthy != (row.class_name == "hem"):
                says = "a healthy subject (H prefix)" if healthy else "an ALL subject (no H prefix)"
                problems.append(Problem(
                    row.sample_id,
                    f"subject id {row.subject_id} names {says}, but the file is labelled "
                    f"{row.class_name!r}: C-NMC-2019 names healthy subjects H<n> and their cells "
                    "hem; fix the file's class or its subject id",
                ))  # fmt: skip
    return problems


def _empty_class_problems(manifest: Manifest) -> list[Problem]:
    problems = []
    labelled = manifest.frame[manifest.frame["label"] >= 0]
    folder = _CLASS_FOLDERS.get(manifest.layout, "{}")
    for cls in manifest.class_names:
        n = int((labelled["class_name"] == cls).sum())
        if n == 0:
            problems.append(
                Problem(
                    folder.format(cls),
                    f"class {cls!r} has no images: add its images or remove the class",
                    "error",
                )
            )
    for split, part in labelled.groupby("source_split", sort=True):
        for cls in manifest.class_names:
            if (labelled["class_name"] == cls).any() and not (part["class_name"] == cls).any():
                problems.append(
                    Problem(
                        folder.format(cls) if split == "train" else str(split),
                        f"class {cls!r} has no images in the {split} split",
                        "warning",
                    )
                )
    return problems


def check_manifest(manifest: Manifest) -> CheckReport:
    """Check the files of a manifest already read (see :func:`check_dataset`)."""
    frame = manifest.frame
    problems = list(manifest.problems)
    already = {p.path for p in problems if p.severity == "error"}
    todo = [
        (row.sample_id, row.path, Path(row.path).suffix)
        for row in frame.itertuples()
        if row.width > 0 and row.sample_id not in already
    ]
    workers = max(1, min(8, 2 * (os.cpu_count() or 1)))
    if len(todo) > 64:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(lambda t: _inspect(t[1], t[2]), todo, chunksize=16))
    else:
        results = [_inspect(t[1], t[2]) for t in todo]
    for (sample_id, _, _), found in zip(todo, results):
        problems += [Problem(sample_id, text, severity) for text, severity in found]
    problems += _size_problems(frame)
    problems += _duplicate_problems(frame)
    problems += _subject_problems(frame)
    problems += _diagnosis_problems(frame, manifest.layout)
    problems += _empty_class_problems(manifest)
    problems = _dedupe(problems)
    return CheckReport(
        root=manifest.root,
        layout=manifest.layout,
        counts=_counts(frame, manifest.class_names),
        subjects=_subject_counts(frame, manifest.class_names),
        subject_source=manifest.subjects,
        class_names=list(manifest.class_names),
        problems=problems,
        notes=list(manifest.notes),
    )


def _dedupe(problems: list[Problem]) -> list[Problem]:
    seen: set[tuple[str, str]] = set()
    out = []
    for p in problems:
        key = (p.path, p.problem)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def check_dataset(root: Path, layout: str = "auto") -> CheckReport:
    """Read the dataset at ``root`` and report every problem (see the module docstring)."""
    return check_manifest(read_manifest(Path(root), layout))
