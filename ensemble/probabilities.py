"""Each ensemble method's class probabilities, as ``wen ensemble`` computed them.

``RUN/ensemble/probabilities.parquet`` holds one row per (method, split, sample)::

    method, split (val | val_crossfit | test), sample_id, subject_id, label,
    probs (list<float64>, one per class), pred (the method's decision: argmax or its threshold)

with key-value metadata ``class_names`` (JSON list) and ``schema_version``. ``val`` rows are the
method fitted on validation and scored on it (optimistic), ``val_crossfit`` rows come from the
fold of the method fitted without them, ``test`` rows were never fitted on. The report reads
this file, so it shows exactly what the comparison tables scored and never refits a method.

>>> import numpy as np, tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "probabilities.parquet"
>>> rows = [method_rows("sap", "test", ["a", "b"], ["1", "2"], np.array([0, 1]),
...                     np.array([[.8, .2], [.3, .7]]), np.array([0, 1]))]
>>> _ = write_method_probabilities(path, rows, ["hem", "all"])
>>> table = read_method_probabilities(path)
>>> table.methods(), table.probs("sap", "test", ["b", "a"]).tolist()
(['sap'], [[0.3, 0.7], [0.8, 0.2]])
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from trainers._atomic import atomic_write
from trainers.errors import WenError

__all__ = [
    "SCHEMA_VERSION",
    "MethodProbabilities",
    "MethodProbabilitiesError",
    "method_rows",
    "read_method_probabilities",
    "write_method_probabilities",
]

SCHEMA_VERSION = 1
SPLITS = ("val", "val_crossfit", "test")
SCHEMA = pa.schema(
    [
        pa.field("method", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("subject_id", pa.string(), nullable=True),
        pa.field("label", pa.int64(), nullable=False),
        pa.field("probs", pa.list_(pa.float64()), nullable=False),
        pa.field("pred", pa.int64(), nullable=False),
    ]
)


class MethodProbabilitiesError(WenError, ValueError):
    """The methods' probability table is missing, unreadable or lacks a method or split."""


def method_rows(
    method: str,
    split: str,
    sample_ids: Sequence[str],
    subject_ids: Sequence[str | None],
    labels: np.ndarray,
    probs: np.ndarray,
    pred: np.ndarray,
) -> pd.DataFrame:
    """One method's rows on one split, in the table's columns."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    n = len(sample_ids)
    if not (len(subject_ids) == len(labels) == len(probs) == len(pred) == n):
        raise ValueError(f"{method}/{split}: ids, labels, probs and pred must have {n} rows")
    return pd.DataFrame(
        {
            "method": method,
            "split": split,
            "sample_id": [str(s) for s in sample_ids],
            "subject_id": [None if s is None else str(s) for s in subject_ids],
            "label": np.asarray(labels, dtype=np.int64),
            "probs": list(np.asarray(probs, dtype=np.float64)),
            "pred": np.asarray(pred, dtype=np.int64),
        }
    )


def write_method_probabilities(
    path: str | Path, rows: Sequence[pd.DataFrame], class_names: Sequence[str]
) -> Path:
    """Write every method's rows to ``path`` atomically (``trainers._atomic``)."""
    frame = pd.concat(list(rows), ignore_index=True)
    table = pa.Table.from_pandas(frame, schema=SCHEMA, preserve_index=False)
    table = table.replace_schema_metadata(
        {
            "class_names": json.dumps(list(class_names)),
            "schema_version": str(SCHEMA_VERSION),
        }
    )
    return atomic_write(
        Path(path),
        lambda fh: pq.write_table(table, fh, compression="zstd"),
        what="ensemble probabilities",
        then="run `wen ensemble` again",
    )


@dataclass
class MethodProbabilities:
    """The table ``read_method_probabilities`` returns, with aligned look-ups."""

    path: Path
    frame: pd.DataFrame
    class_names: list[str]

    def methods(self) -> list[str]:
        """The methods the table holds, in the order they were written."""
        return list(dict.fromkeys(self.frame["method"]))

    def _rows(self, method: str, split: str, sample_ids: Sequence[str]) -> pd.DataFrame:
        rows = self.frame[(self.frame["method"] == method) & (self.frame["split"] == split)]
        if rows.empty:
            raise MethodProbabilitiesError(
                f"{self.path} has no {split!r} rows for method {method!r}; re-run `wen ensemble`"
            )
        indexed = rows.set_index("sample_id")
        missing = [s for s in sample_ids if s not in indexed.index]
        if missing:
            raise MethodProbabilitiesError(
                f"{self.path}: method {method!r} has no {split!r} row for {len(missing)} "
                f"sample(s) (e.g. {missing[0]!r}); the predictions changed since `wen ensemble` "
                "ran: re-run it"
            )
        return indexed.loc[list(sample_ids)]

    def probs(self, method: str, split: str, sample_ids: Sequence[str]) -> np.ndarray:
        """``method``'s probabilities on ``split``, one row per id of ``sample_ids``."""
        rows = self._rows(method, split, sample_ids)
        return np.stack(rows["probs"].to_numpy()).astype(np.float64)

    def pred(self, method: str, split: str, sample_ids: Sequence[str]) -> np.ndarray:
        """``method``'s decisions on ``split`` (argmax or its tuned threshold)."""
        return self._rows(method, split, sample_ids)["pred"].to_numpy(dtype=np.int64)


def read_method_probabilities(path: str | Path) -> MethodProbabilities:
    """Read the table, checked against its schema; errors name the file and the fix."""
    path = Path(path)
    if not path.is_file():
        raise MethodProbabilitiesError(
            f"{path} does not exist; run `wen ensemble RUN` (it writes each method's "
            "probabilities there)"
        )
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise MethodProbabilitiesError(
            f"{path} is not a readable Parquet file ({exc}); re-run `wen ensemble`"
        ) from None
    meta = table.schema.metadata or {}
    version = meta.get(b"schema_version", b"?").decode()
    if version != str(SCHEMA_VERSION) or not set(SCHEMA.names) <= set(table.column_names):
        raise MethodProbabilitiesError(
            f"{path}: schema version {version} with columns {table.column_names}; this wen "
            f"reads version {SCHEMA_VERSION} with {SCHEMA.names}: re-run `wen ensemble`"
        )
    class_names = json.loads(meta[b"class_names"].decode())
    return MethodProbabilities(path, table.to_pandas(), list(class_names))
