"""The manifest: one row per image of a dataset, its schema, and its Parquet file.

A layout reader (``trainers.data.layouts``) finds images and what their names, folders and CSV
files say (:class:`ManifestEntry`); :func:`manifest_from_entries` reads each file's pixel size
(header only) and content hash and builds the table with the columns :data:`COLUMNS`.
:func:`write_manifest` / :func:`load_manifest_file` store it with its layout, class names,
subjects and problems in the Parquet metadata; :func:`manifest_hash` identifies its content.

>>> import pandas as pd
>>> normalise_frame(pd.DataFrame({c: [] for c in COLUMNS})).columns.tolist() == COLUMNS
True
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from trainers._atomic import atomic_write
from trainers.data.errors import LayoutError

__all__ = [
    "COLUMNS",
    "Manifest",
    "ManifestEntry",
    "Problem",
    "load_manifest_file",
    "manifest_from_entries",
    "manifest_hash",
    "normalise_frame",
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
class ManifestEntry:
    """An image a reader found, before its header and bytes are read."""

    rel: str
    label: int
    class_name: str | None
    subject_id: str | None
    source_split: str
    fold: int = -1


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
        return (
            -1,
            -1,
            digest,
            (
                f"not an image: PIL cannot identify the content of this {path.suffix} file "
                "(a non-image file with an image extension?)"
            ),
        )
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a reportable problem
        return -1, -1, digest, f"unreadable image header: {type(exc).__name__}: {exc}"
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and width * height > limit:
        return (
            -1,
            -1,
            digest,
            (
                f"decompression bomb: {width}x{height} = {width * height} pixels exceeds PIL's "
                f"Image.MAX_IMAGE_PIXELS={limit}"
            ),
        )
    return width, height, digest, None


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _empty_frame() -> pd.DataFrame:
    return normalise_frame(pd.DataFrame({c: [] for c in COLUMNS}))


def normalise_frame(frame: pd.DataFrame) -> pd.DataFrame:
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


def manifest_from_entries(
    root: Path,
    layout: str,
    entries: list[ManifestEntry],
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
    frame = normalise_frame(pd.DataFrame(rows, columns=COLUMNS)) if rows else _empty_frame()
    return Manifest(frame, layout, list(class_names), subjects, problems, str(root.resolve()))


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
    frame = normalise_frame(manifest.frame)
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
    frame = normalise_frame(table.to_pandas())
    problems = [Problem(**p) for p in json.loads(meta.get(b"problems", b"[]").decode())]
    return Manifest(
        frame,
        meta[b"layout"].decode(),
        json.loads(meta[b"class_names"].decode()),
        meta.get(b"subjects", b"none").decode(),
        problems,
        meta.get(b"root", b"").decode(),
    )
