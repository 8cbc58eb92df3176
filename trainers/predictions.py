"""The one module that owns the Parquet prediction schema: write, read, validate, align.

A prediction file holds one trial's class probabilities in long format, one row per
(trial, sample)::

    trial_id, backbone, config_hash, fold, epoch, cycle, split, sample_id, subject_id, label,
    probs (list<float32>, one per class, rows sum to 1), logits (list<float32>)

with key-value metadata ``class_names`` (JSON list), ``schema_version``, ``config`` (the
trial's config as JSON) and ``snapshot_of``. ``label`` is -1 where the truth is unknown (the
unlabelled ``final`` split). ``epoch`` is the epoch whose weights predicted; ``cycle`` the
learning-rate cycle that epoch ends or lies in (1-based; -1 for schedules without cycles).

Two kinds of file share the schema: a trial's *best-epoch* file (``snapshot_of`` empty) and a
*snapshot*, the predictions of the weights at one learning-rate trough (``trial_id`` is the
snapshot's own id ``<trial>@e<epoch>``, ``snapshot_of`` the trial's id). Version 1 files (no
``cycle``, no ``snapshot_of``) are read as best-epoch files with ``cycle`` -1. Every other stage
reads and writes predictions through these functions only.

>>> import numpy as np, tempfile, pathlib
>>> frame = prediction_frame(
...     trial_id="t0", backbone="resnet50", config_hash="abc", fold=0, epoch=3, split="val",
...     sample_ids=["a.bmp", "b.bmp"], subject_ids=["1", "2"], labels=[0, 1],
...     logits=np.array([[2.0, 0.0], [0.0, 2.0]], dtype=np.float32))
>>> path = pathlib.Path(tempfile.mkdtemp()) / "t0.parquet"
>>> _ = write_predictions(path, frame, ["hem", "all"], {"seed": 0})
>>> pset = read_predictions(path)
>>> pset.trial_id, pset.class_names, len(pset.frame)
('t0', ['hem', 'all'], 2)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from trainers._atomic import atomic_write
from trainers.errors import WenError

__all__ = [
    "COLUMNS",
    "SCHEMA",
    "SCHEMA_VERSION",
    "PredictionFileError",
    "PredictionSet",
    "prediction_frame",
    "read_prediction_dir",
    "read_predictions",
    "softmax",
    "to_arrays",
    "write_predictions",
]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
#: versions this code reads; version 1 lacks ``cycle`` and ``snapshot_of``
READABLE_VERSIONS = ("1", "2")
SUM_ATOL = 1e-4
SPLITS = ("train", "val", "test", "final")

SCHEMA = pa.schema(
    [
        pa.field("trial_id", pa.string(), nullable=False),
        pa.field("backbone", pa.string(), nullable=False),
        pa.field("config_hash", pa.string(), nullable=False),
        pa.field("fold", pa.int64(), nullable=False),
        pa.field("epoch", pa.int64(), nullable=False),
        pa.field("cycle", pa.int64(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("subject_id", pa.string(), nullable=True),
        pa.field("label", pa.int64(), nullable=False),
        pa.field("probs", pa.list_(pa.float32()), nullable=False),
        pa.field("logits", pa.list_(pa.float32()), nullable=False),
    ]
)
COLUMNS: tuple[str, ...] = tuple(SCHEMA.names)


class PredictionFileError(WenError, ValueError):
    """A prediction file (or frame) that breaks the schema; the message names file and rule."""


@dataclass
class PredictionSet:
    """One trial's predictions as read and validated from one file.

    ``frame`` has the schema's columns; ``probs``/``logits`` cells are float32 arrays (a
    ``lean`` read leaves both out: the probabilities are a matrix, see :meth:`sorted_arrays`).
    """

    frame: pd.DataFrame
    class_names: list[str]
    config: dict[str, Any]
    trial_id: str
    path: Path | None = None
    snapshot_of: str = ""
    _split_cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def split(self, split: str) -> pd.DataFrame:
        """Rows of one split (empty frame when the trial has none)."""
        if split not in self._split_cache:
            self._split_cache[split] = self.frame[self.frame["split"] == split]
        return self._split_cache[split]

    def sorted_arrays(self, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One split sorted by sample id: ids, probs [n, k] float32, labels, subjects (cached:
        the ensemble stage aligns hundreds of files by them)."""
        key = f"arrays:{split}"
        if key not in self._split_cache:
            columns = self._columns()
            mask = self._split_mask(split)
            ids = columns["sample_id"][mask]
            order = np.argsort(ids.astype(str), kind="stable")
            self._split_cache[key] = (
                ids[order],
                self._probs()[mask][order],
                columns["label"][mask][order],
                columns["subject_id"][mask][order],
            )
        return self._split_cache[key]

    def has_split(self, split: str) -> bool:
        """Whether the trial has rows of ``split`` (without building that split's frame)."""
        return bool(self._split_mask(split).any())

    def _split_mask(self, split: str) -> np.ndarray:
        key = f"mask:{split}"
        if key not in self._split_cache:
            self._split_cache[key] = (self.frame["split"] == split).to_numpy(dtype=bool)
        return self._split_cache[key]

    def _columns(self) -> dict[str, np.ndarray]:
        """The columns the ensemble aligns by, as numpy arrays (converted once per file)."""
        if "columns" not in self._split_cache:
            f = self.frame
            self._split_cache["columns"] = {
                "sample_id": f["sample_id"].to_numpy(dtype=object),
                "subject_id": f["subject_id"].to_numpy(dtype=object),
                "label": f["label"].to_numpy(dtype=np.int64),
            }
        return self._split_cache["columns"]

    def _probs(self) -> np.ndarray:
        """Every row's probabilities as one [n, k] float32 matrix (from the file when read)."""
        if "probs" not in self._split_cache:
            k = len(self.class_names)
            cells = self.frame["probs"].to_numpy()
            stacked = np.stack(cells).astype(np.float32) if len(cells) else np.empty((0, k))
            self._split_cache["probs"] = stacked
        return self._split_cache["probs"]

    @property
    def backbone(self) -> str:
        """The trial's backbone name."""
        return str(self.frame["backbone"].iloc[0]) if len(self.frame) else ""

    @property
    def is_snapshot(self) -> bool:
        """Whether the file is a snapshot (an LR trough's weights), not a best-epoch file."""
        return bool(self.snapshot_of)

    @property
    def source_trial(self) -> str:
        """The trial that produced these predictions (a snapshot's parent trial)."""
        return self.snapshot_of or self.trial_id

    @property
    def epoch(self) -> int:
        """The epoch whose weights predicted (-1 for an empty file)."""
        return int(self.frame["epoch"].iloc[0]) if len(self.frame) else -1


# ------------------------------------------------------------------------------ building


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64, returned as float32 (stable for large logits)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def prediction_frame(
    *,
    trial_id: str,
    backbone: str,
    config_hash: str,
    fold: int,
    epoch: int,
    split: str,
    sample_ids: Sequence[str],
    subject_ids: Sequence[str | None] | None,
    labels: Sequence[int] | np.ndarray,
    logits: np.ndarray,
    probs: np.ndarray | None = None,
    cycle: int = -1,
) -> pd.DataFrame:
    """Rows for one split of one trial, in the schema's column order.

    ``probs`` defaults to the softmax of ``logits``; pass both when they come from elsewhere
    (an ensemble writes probabilities and log-probabilities as logits). ``cycle`` is the
    learning-rate cycle of ``epoch`` (-1: the schedule has none).
    """
    logits = np.asarray(logits, dtype=np.float32)
    if logits.ndim != 2:
        raise PredictionFileError(
            f"logits must be a 2-D array [samples, classes], got shape {logits.shape}"
        )
    probs = softmax(logits) if probs is None else np.asarray(probs, dtype=np.float32)
    n = len(sample_ids)
    if probs.shape != logits.shape or len(logits) != n or len(labels) != n:
        raise PredictionFileError(
            f"prediction_frame: lengths differ: {n} sample_ids, {len(labels)} labels, "
            f"logits {logits.shape}, probs {probs.shape}; pass one row per sample"
        )
    subjects = list(subject_ids) if subject_ids is not None else [None] * n
    return pd.DataFrame(
        {
            "trial_id": [trial_id] * n,
            "backbone": [backbone] * n,
            "config_hash": [config_hash] * n,
            "fold": np.full(n, int(fold), dtype=np.int64),
            "epoch": np.full(n, int(epoch), dtype=np.int64),
            "cycle": np.full(n, int(cycle), dtype=np.int64),
            "split": [split] * n,
            "sample_id": [str(s) for s in sample_ids],
            "subject_id": [None if s is None else str(s) for s in subjects],
            "label": np.asarray(labels, dtype=np.int64),
            "probs": list(probs),
            "logits": list(logits),
        },
        columns=list(COLUMNS),
    )


# ------------------------------------------------------------------------------ validation


def _list_matrix(
    column: pa.ChunkedArray | pa.Array, n_classes: int, name: str, where: str
) -> np.ndarray:
    """A list<float32> column as an [n, n_classes] array; every row must have n_classes values."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if arr.null_count:
        raise PredictionFileError(f"{where}: column {name!r} has {arr.null_count} null row(s)")
    lengths = arr.value_lengths().to_numpy(zero_copy_only=False)
    bad = np.flatnonzero(lengths != n_classes)
    if bad.size:
        raise PredictionFileError(
            f"{where}: every {name!r} row must hold one value per class ({n_classes}: "
            f"class_names), row {int(bad[0])} holds {int(lengths[bad[0]])}; "
            "the file is mis-shaped, re-write it with write_predictions"
        )
    values = arr.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return values.reshape(len(arr), n_classes)


def _same_kind(actual: pa.DataType, expected: pa.DataType) -> bool:
    """string ~ large_string and list ~ large_list: pandas 3 writes the large variants."""
    if actual == expected:
        return True
    if pa.types.is_string(expected):
        return pa.types.is_large_string(actual) or pa.types.is_string_view(actual)
    if pa.types.is_list(expected) and pa.types.is_large_list(actual):
        return actual.value_type == expected.value_type
    return False


def _validate_table(
    table: pa.Table, class_names: list[str], where: str, logits: bool = True
) -> np.ndarray:
    """Raise PredictionFileError unless ``table`` is a valid prediction table; return its
    probabilities as an [n, k] matrix. ``logits=False``: the table was read without them."""
    expected = [c for c in COLUMNS if logits or c != "logits"]
    missing = [c for c in expected if c not in table.column_names]
    if missing:
        raise PredictionFileError(
            f"{where}: missing column(s) {missing}; a prediction file has columns {list(COLUMNS)}"
        )
    for fld in (SCHEMA.field(c) for c in expected):
        actual = table.schema.field(fld.name).type
        if not _same_kind(actual, fld.type):
            raise PredictionFileError(
                f"{where}: column {fld.name!r} must be {fld.type}, got {actual}"
            )
        if not fld.nullable and table.column(fld.name).null_count:
            raise PredictionFileError(f"{where}: column {fld.name!r} must not contain nulls")
    if not class_names or len(set(class_names)) != len(class_names):
        raise PredictionFileError(
            f"{where}: class_names must be a non-empty list of distinct names, got {class_names}"
        )
    k = len(class_names)
    probs = _validate_probs(table, k, where, logits)
    _validate_rows(table, k, where)
    return probs


def _validate_probs(table: pa.Table, k: int, where: str, logits: bool = True) -> np.ndarray:
    """``probs`` (and ``logits``) hold ``k`` values a row; probs are finite, >= 0, sum to 1.
    Returns the probabilities as an [n, k] float32 matrix."""
    probs = _list_matrix(table.column("probs"), k, "probs", where)
    if logits:
        _list_matrix(table.column("logits"), k, "logits", where)
    if not np.isfinite(probs).all():
        raise PredictionFileError(f"{where}: probs must be finite, found NaN or inf")
    if (probs < 0).any():
        raise PredictionFileError(f"{where}: probs must be >= 0, found {float(probs.min())}")
    sums = probs.astype(np.float64).sum(axis=1)
    off = np.flatnonzero(np.abs(sums - 1.0) > SUM_ATOL)
    if off.size:
        raise PredictionFileError(
            f"{where}: each probs row must sum to 1 (atol {SUM_ATOL}), row {int(off[0])} sums "
            f"to {sums[off[0]]:.6f}; normalise the probabilities before writing"
        )
    return probs


def _validate_rows(table: pa.Table, k: int, where: str) -> None:
    """Labels, splits, one trial, and each (split, sample_id) once."""
    labels = table.column("label").to_numpy()
    bad = (labels < -1) | (labels >= k)
    if bad.any():
        raise PredictionFileError(
            f"{where}: label must be -1 (unknown) or a class index 0..{k - 1}, "
            f"got {int(labels[bad][0])}"
        )
    splits = set(table.column("split").unique().to_pylist())
    if not splits <= set(SPLITS):
        raise PredictionFileError(
            f"{where}: split must be one of {list(SPLITS)}, got {sorted(splits - set(SPLITS))}"
        )
    trials = table.column("trial_id").unique().to_pylist()
    if len(trials) > 1:
        raise PredictionFileError(
            f"{where}: one file holds one trial, found trial_ids {trials[:5]}; write one file "
            "per trial"
        )
    # each (split, sample_id) once: compare distinct joined keys with rows (pyarrow, no Python
    # loop), and find the first repeat only when there is one
    text = [table.column(c).cast(pa.large_string()) for c in ("split", "sample_id")]
    keys = pc.binary_join_element_wise(*text, pa.scalar("\x00", pa.large_string()))
    if pc.count_distinct(keys).as_py() != table.num_rows:
        frame = pd.DataFrame(
            {
                "split": table.column("split").to_pylist(),
                "sample": table.column("sample_id").to_pylist(),
            }
        )
        first = frame[frame.duplicated()].iloc[0]
        raise PredictionFileError(
            f"{where}: sample {first['sample']!r} appears twice in split {first['split']!r}; "
            "each (split, sample_id) must be unique"
        )


def _frame_to_table(frame: pd.DataFrame, where: str) -> pa.Table:
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise PredictionFileError(
            f"{where}: frame lacks column(s) {missing}; build it with prediction_frame()"
        )
    data = {}
    for fld in SCHEMA:
        values = frame[fld.name]
        try:
            if pa.types.is_list(fld.type):
                cells = [np.asarray(v, dtype=np.float32) for v in values]
                data[fld.name] = pa.array(cells, type=fld.type)
            else:
                # from_pandas: NaN/None in a pandas column is a null, not a float
                data[fld.name] = pa.array(values, type=fld.type, from_pandas=True)
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise PredictionFileError(
                f"{where}: column {fld.name!r} cannot be stored as {fld.type}: {exc}"
            ) from None
    return pa.table(data, schema=SCHEMA)


# ------------------------------------------------------------------------------ writing


def _atomic_write_table(table: pa.Table, path: Path) -> None:
    """Write ``table`` atomically (``trainers._atomic``): a reader sees the old file or the
    complete new one, and a full disk raises the one message naming ``path``."""
    atomic_write(
        path,
        lambda fh: pq.write_table(table, fh, compression="zstd"),
        what="predictions",
        then="resume the trial from its last checkpoint",
    )


def write_predictions(
    path: str | Path,
    frame: pd.DataFrame,
    class_names: Sequence[str],
    config_json: str | dict[str, Any] | None,
    snapshot_of: str = "",
) -> Path:
    """Validate ``frame`` and write it atomically to ``path`` with the schema's metadata.

    ``config_json`` is the trial's config as a JSON string or a JSON-able dict;
    ``snapshot_of`` the parent trial's id when the file is a snapshot.
    """
    path = Path(path)
    where = f"predictions for {path}"
    class_names = [str(c) for c in class_names]
    table = _frame_to_table(frame, where)
    _validate_table(table, class_names, where)
    if isinstance(config_json, str):
        try:
            json.loads(config_json)
        except json.JSONDecodeError as exc:
            raise PredictionFileError(f"{where}: config_json is not valid JSON ({exc})") from None
        config_text = config_json
    else:
        config_text = json.dumps(config_json or {}, sort_keys=True, default=str)
    meta = {
        b"class_names": json.dumps(class_names).encode(),
        b"schema_version": str(SCHEMA_VERSION).encode(),
        b"config": config_text.encode(),
        b"snapshot_of": str(snapshot_of).encode(),
    }
    _atomic_write_table(table.replace_schema_metadata(meta), path)
    return path


# ------------------------------------------------------------------------------ reading


def _read_metadata(
    meta: dict[bytes, bytes] | None, where: str
) -> tuple[list[str], dict[str, Any], str]:
    """class_names, config and snapshot_of (empty for best-epoch and version 1 files)."""
    meta = meta or {}
    for key in (b"class_names", b"schema_version", b"config"):
        if key not in meta:
            raise PredictionFileError(
                f"{where}: metadata key {key.decode()!r} is missing; this is not a prediction "
                "file written by trainers.predictions.write_predictions"
            )
    version = meta[b"schema_version"].decode()
    if version not in READABLE_VERSIONS:
        raise PredictionFileError(
            f"{where}: schema_version {version} is not supported (this code reads versions "
            f"{', '.join(READABLE_VERSIONS)}); re-create the predictions with this version"
        )
    try:
        class_names = json.loads(meta[b"class_names"])
        config = json.loads(meta[b"config"])
    except json.JSONDecodeError as exc:
        raise PredictionFileError(f"{where}: metadata is not valid JSON ({exc})") from None
    if not isinstance(class_names, list) or not all(isinstance(c, str) for c in class_names):
        raise PredictionFileError(f"{where}: metadata class_names must be a JSON list of names")
    if not isinstance(config, dict):
        raise PredictionFileError(f"{where}: metadata config must be a JSON object")
    return class_names, config, meta.get(b"snapshot_of", b"").decode()


def _upgrade(table: pa.Table) -> pa.Table:
    """A version 1 table with the ``cycle`` column (-1: not recorded) added after ``epoch``."""
    if "cycle" in table.column_names:
        return table
    cycle = pa.array(np.full(table.num_rows, -1, dtype=np.int64))
    return table.add_column(table.column_names.index("epoch") + 1, "cycle", cycle)


def read_predictions(path: str | Path, *, lean: bool = False) -> PredictionSet:
    """Read and validate one prediction file; raise :class:`PredictionFileError` if it is bad.

    ``lean`` reads what aligning and ensembling need: the frame without its list columns
    (``probs`` stays the validated matrix behind :meth:`PredictionSet.sorted_arrays`;
    ``logits`` is neither read nor checked). The ensemble stage reads hundreds of files this
    way, each about three times faster.
    """
    path = Path(path)
    where = f"prediction file {path}"
    if not path.is_file():
        raise PredictionFileError(f"{where} does not exist")
    try:
        columns = None
        if lean:
            columns = [c for c in pq.read_schema(path).names if c != "logits"]
        table = pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as exc:
        raise PredictionFileError(
            f"{where} is not a readable Parquet file (truncated or corrupt?): {exc}; "
            "delete it and re-run the trial's prediction step"
        ) from None
    class_names, config, snapshot_of = _read_metadata(table.schema.metadata, where)
    table = _upgrade(table)
    probs = _validate_table(table, class_names, where, logits=not lean)
    kept = [c for c in COLUMNS if not lean or c not in ("probs", "logits")]
    schema = pa.schema([SCHEMA.field(c) for c in kept])
    frame = table.select(kept).cast(schema).to_pandas()
    trial_id = str(frame["trial_id"].iloc[0]) if len(frame) else path.stem
    pset = PredictionSet(frame, class_names, config, trial_id, path, snapshot_of)
    pset._split_cache["probs"] = probs  # the validated matrix: aligning needs no np.stack
    return pset


def read_prediction_dir(
    directory: str | Path, on_error: Literal["raise", "skip"] = "raise"
) -> list[PredictionSet]:
    """Every ``*.parquet`` file in ``directory`` (names starting with ``.`` or ``_`` ignored).

    ``on_error="skip"`` logs and skips bad files instead of raising.
    """
    directory = Path(directory)
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if not directory.is_dir():
        raise PredictionFileError(f"prediction folder {directory} does not exist")
    sets = []
    for p in sorted(directory.glob("*.parquet")):
        if p.name.startswith((".", "_")):
            continue
        try:
            sets.append(read_predictions(p))
        except PredictionFileError as exc:
            if on_error == "raise":
                raise
            log.warning("skipping %s: %s", p, exc)
    return sets


def _describe(ids: set[str]) -> str:
    shown = sorted(ids)[:3]
    return f"{len(ids)} ({', '.join(map(repr, shown))}{', ...' if len(ids) > 3 else ''})"


def to_arrays(
    sets: Sequence[PredictionSet], split: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Stack members' probabilities for one split, aligned by ``sample_id``.

    Returns ``P`` [n_members, n_samples, n_classes] float32, ``y`` [n_samples] int64 (-1 where
    unknown), ``sample_ids`` and ``subject_ids`` (object arrays), in the first member's sample
    order sorted by id. Raises :class:`PredictionFileError` naming the trial and file when the
    members' sample ids or class names differ.
    """
    if not sets:
        raise PredictionFileError(f"to_arrays: no prediction sets given for split {split!r}")
    ref = sets[0]
    ids, _, y, subjects = ref.sorted_arrays(split)
    if not len(ids):
        raise PredictionFileError(
            f"trial {ref.trial_id} ({ref.path}) has no rows for split {split!r}"
        )
    P = np.empty((len(sets), len(ids), len(ref.class_names)), dtype=np.float32)
    for m, s in enumerate(sets):
        if s.class_names != ref.class_names:
            raise PredictionFileError(
                f"trial {s.trial_id} ({s.path}) has class_names {s.class_names}, trial "
                f"{ref.trial_id} has {ref.class_names}; ensemble members must share classes"
            )
        theirs, probs, labels, _ = s.sorted_arrays(split)
        if len(theirs) != len(ids) or not np.array_equal(theirs, ids):
            mine, other = set(ids), set(theirs)
            raise PredictionFileError(
                f"trial {s.trial_id} ({s.path}) predicts different {split!r} samples than trial "
                f"{ref.trial_id} ({ref.path}): missing {_describe(mine - other)}, extra "
                f"{_describe(other - mine)}; ensemble only trials of the same data split"
            )
        P[m] = probs
        if not np.array_equal(labels, y):
            i = int(np.flatnonzero(labels != y)[0])
            raise PredictionFileError(
                f"trial {s.trial_id} ({s.path}) labels sample {ids[i]!r} as {labels[i]}, trial "
                f"{ref.trial_id} as {y[i]}; the trials used different label maps"
            )
    return P, y, ids, subjects
