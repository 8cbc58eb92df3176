"""``RUN/ensemble/diversity.csv`` and ``ambiguity.csv``: the candidates' diversity and each
method's ambiguity decomposition (``ensemble.diversity``) on the test split.

Test is the split no method was fitted on: every method's final weights (fitted on all the
validation predictions) are applied to the candidates' test probabilities. The cross-fitted
validation predictions are not used: with nested candidate selection each fold may combine
other members, and the per-fold weights are not kept.

``diversity.csv``: one row per candidate pair ``a < b`` (members' names, in the candidates'
order) with ``disagreement``, ``error_correlation`` (Pearson of the 0/1 error indicators),
``split``, ``n`` (labelled samples) and ``note`` (why a number is missing).
``ambiguity.csv``: one row per method with ``ensemble_brier``, ``member_brier`` (weighted
mean), ``ambiguity`` (weighted), ``n`` and ``note``; a method whose combiner is not a weighted
average gets no numbers. Without labelled test predictions each table holds rows that say so.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ensemble.combiners import WEIGHTED_AVERAGE
from ensemble.diversity import PairwiseDiversity, ambiguity_decomposition, pairwise_diversity
from ensemble.members import Member, SplitArrays
from ensemble.protocol import ProtocolResult
from trainers._atomic import atomic_write_text
from trainers.run_layout import RUN_LAYOUT

__all__ = [
    "AMBIGUITY_COLUMNS",
    "DIVERSITY_COLUMNS",
    "ambiguity_frame",
    "diversity_frame",
    "write_diversity_tables",
]

DIVERSITY_COLUMNS = ("a", "b", "disagreement", "error_correlation", "split", "n", "note")
AMBIGUITY_COLUMNS = ("method", "split", "ensemble_brier", "member_brier", "ambiguity", "n", "note")
SPLIT = "test"
NO_TEST = "no test predictions: diversity and ambiguity are measured on test only"
NO_LABELS = "the test predictions have no labels (every label is -1): nothing to measure"


def _missing(test: SplitArrays | None) -> str:
    """Why nothing can be measured on ``test`` ("" when something can)."""
    if test is None:
        return NO_TEST
    if not (np.asarray(test.y) >= 0).any():
        return NO_LABELS
    return ""


def _pair_notes(
    d: PairwiseDiversity, names: Sequence[str], ia: np.ndarray, ib: np.ndarray
) -> np.ndarray:
    """Each pair's note, vectorised: the reason of its first constant member, else ""."""
    reasons = np.array([d.note(i, i, names) for i in range(len(names))], dtype=object)
    const = d.constant()
    return np.where(const[ia], reasons[ia], np.where(const[ib], reasons[ib], ""))


def diversity_frame(P: np.ndarray, y: np.ndarray, names: Sequence[str]) -> pd.DataFrame:
    """``diversity.csv`` of the candidates' test probabilities ``P`` [members, samples, classes]."""
    d = pairwise_diversity(P, y)
    if d.n == 0:
        return _note_frame(DIVERSITY_COLUMNS, NO_LABELS)
    ia, ib = np.triu_indices(len(names), k=1)
    if len(ia) == 0:
        return _note_frame(DIVERSITY_COLUMNS, f"one candidate ({names[0]}): no pairs", d.n)
    frame = pd.DataFrame(
        {
            "a": np.asarray(names, dtype=object)[ia],
            "b": np.asarray(names, dtype=object)[ib],
            "disagreement": d.disagreement[ia, ib],
            "error_correlation": d.error_correlation[ia, ib],
            "split": SPLIT,
            "n": d.n,
            "note": _pair_notes(d, names, ia, ib),
        }
    )
    return frame.loc[:, list(DIVERSITY_COLUMNS)]


def _note_frame(columns: Sequence[str], note: str, n: int = 0, **fixed: Any) -> pd.DataFrame:
    """One row of ``columns`` without numbers, saying why."""
    row: dict[str, Any] = {c: np.nan for c in columns}
    row.update({"a": "", "b": "", "split": SPLIT, "n": n, "note": note, **fixed})
    return pd.DataFrame([{c: row[c] for c in columns}])


def _ambiguity_row(name: str, method: Any, P: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    kind = method.combiner().kind
    n = int((np.asarray(y) >= 0).sum())
    row: dict[str, Any] = {"method": name, "split": SPLIT, "n": n}
    if kind != WEIGHTED_AVERAGE:
        nan = {"ensemble_brier": np.nan, "member_brier": np.nan, "ambiguity": np.nan}
        return {**row, **nan, "note": f"not a weighted average ({kind}): no decomposition"}
    w = np.asarray(method.weights_, dtype=np.float64)
    a = ambiguity_decomposition(P, y, w)
    note = "one member carries all the weight: no ambiguity" if (w > 0).sum() == 1 else ""
    return {**row, "ensemble_brier": a.ensemble_brier, "member_brier": a.member_brier,
            "ambiguity": a.ambiguity, "note": note}  # fmt: skip


def ambiguity_frame(protocol: ProtocolResult, test: SplitArrays | None) -> pd.DataFrame:
    """``ambiguity.csv``: each method's final weights applied to the candidates' test ``P``."""
    missing = _missing(test)
    if missing or test is None:
        frames = [_note_frame(AMBIGUITY_COLUMNS, missing, method=n) for n in protocol.results]
        return pd.concat(frames, ignore_index=True)
    rows = [_ambiguity_row(n, r.method, test.P, test.y) for n, r in protocol.results.items()]
    return pd.DataFrame(rows).loc[:, list(AMBIGUITY_COLUMNS)]


def write_diversity_tables(
    run_dir: Path, protocol: ProtocolResult, members: Sequence[Member], test: SplitArrays | None
) -> None:
    """Write ``RUN_LAYOUT.diversity`` and ``RUN_LAYOUT.ambiguity`` (atomically) for the
    candidates ``members`` (in the order of ``test.P`` and the methods' weights)."""
    missing = _missing(test)
    if missing or test is None:
        diversity = _note_frame(DIVERSITY_COLUMNS, missing)
    else:
        diversity = diversity_frame(test.P, test.y, [m.name for m in members])
    atomic_write_text(run_dir / RUN_LAYOUT.diversity, diversity.to_csv(index=False))
    atomic_write_text(
        run_dir / RUN_LAYOUT.ambiguity, ambiguity_frame(protocol, test).to_csv(index=False)
    )
