"""Train / val / test splits that keep subjects (and identical images) on one side.

:func:`assign_splits` adds a ``split`` column (``train``, ``val``, ``test``, ``final``) to a
manifest frame, following one of three methods (``data.split.method``):

- ``official``: the dataset's own folds and labelled test set (C-NMC layouts);
- ``group_kfold``: scikit-learn's ``StratifiedGroupKFold`` over subjects, fold ``split.fold``
  is validation; the test set is the labelled official test set where there is one, else a
  grouped, stratified holdout of ``split.test_fraction``;
- ``group_holdout``: one grouped, stratified train / val / test split by fractions over every
  labelled image.

Groups are subjects; images without a subject id form a group of their own, and images with
the same ``content_hash`` are always kept in one group, so a duplicated file can never sit on
both sides of a split. :func:`audit_leakage` checks the result and raises
:class:`LeakageError` naming each subject or hash, its files and the splits it is in.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import numpy as np
import pandas as pd

from trainers.config import SplitConfig
from trainers.errors import WenError

__all__ = ["SPLITS", "LeakageError", "assign_splits", "audit_leakage", "split_groups"]

log = logging.getLogger("wen.data")

#: The values of the ``split`` column.
SPLITS: tuple[str, ...] = ("train", "val", "test", "final")
_AUDITED = ("train", "val", "test")
_MAX_SHOWN = 20


class LeakageError(WenError, ValueError):
    """A subject or an identical image is on both sides of a split; ``problems`` lists each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        shown = problems[:_MAX_SHOWN]
        more = len(problems) - len(shown)
        lines = [
            f"split leakage: {len(problems)} subject(s)/image(s) are on both sides of a split "
            "(every subject and every identical image must be in one split only):"
        ]
        lines += [f"  - {p}" for p in shown]
        if more:
            lines.append(f"  ... and {more} more")
        lines.append(
            "fix: use data.split.method=group_kfold or group_holdout (they group by subject and "
            "by content hash), or remove the duplicated files (`wen data check ROOT` lists them)"
        )
        super().__init__("\n".join(lines))


# ------------------------------------------------------------------------------------ groups


def split_groups(frame: pd.DataFrame) -> np.ndarray:
    """One group id per row: rows sharing a subject or a content hash share a group.

    Rows without a subject id are their own group unless an identical file links them to
    another row. The components are found with scipy's connected components over the
    bipartite row-subject / row-hash graph.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(frame)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    subjects = frame["subject_id"].astype(object).where(frame["subject_id"].notna(), None)
    keys: dict[str, int] = {}
    rows: list[int] = []
    cols: list[int] = []
    for i, (subject, digest) in enumerate(zip(subjects, frame["content_hash"], strict=True)):
        for key in (f"s:{subject}" if subject is not None else None, f"h:{digest}"):
            if key is None:
                continue
            rows.append(i)
            cols.append(n + keys.setdefault(key, len(keys)))
    size = n + len(keys)
    graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(size, size))
    _, labels = connected_components(graph, directed=False)
    # renumber by first appearance so group ids do not depend on scipy's internal order
    _, first = np.unique(labels[:n], return_index=True)
    order = {labels[i]: rank for rank, i in enumerate(sorted(first))}
    return np.array([order[g] for g in labels[:n]], dtype=np.int64)


def _group_labels(groups: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique groups and each group's majority label (a subject has one class in C-NMC)."""
    uniq = np.unique(groups)
    majority = np.empty(len(uniq), dtype=np.int64)
    for k, g in enumerate(uniq):
        values, counts = np.unique(labels[groups == g], return_counts=True)
        majority[k] = values[np.argmax(counts)]
    return uniq, majority


def _holdout(
    groups: np.ndarray, labels: np.ndarray, fraction: float, seed: int, what: str
) -> np.ndarray:
    """Boolean mask of rows in a grouped holdout holding ``fraction`` of the groups.

    The groups are split with scikit-learn's ``train_test_split`` stratified by each group's
    majority class; when a class has too few groups to stratify, it falls back to an
    unstratified grouped split (``GroupShuffleSplit``) and says so.
    """
    from sklearn.model_selection import GroupShuffleSplit, train_test_split

    uniq, majority = _group_labels(groups, labels)
    if len(uniq) < 2:
        raise ValueError(
            f"a grouped {what} split needs at least 2 groups (subjects), got {len(uniq)}: "
            "add subjects or use data.split.method=official"
        )
    try:
        _, held = train_test_split(uniq, test_size=fraction, stratify=majority, random_state=seed)
        return np.isin(groups, held)
    except ValueError as exc:
        log.info("%s split is not stratified (%s); using GroupShuffleSplit", what, exc)
    splitter = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
    _, held_rows = next(splitter.split(np.zeros(len(groups)), groups=groups))
    mask = np.zeros(len(groups), dtype=bool)
    mask[held_rows] = True
    return mask


# ---------------------------------------------------------------------------------- methods


def _official(frame: pd.DataFrame, split: SplitConfig, out: np.ndarray) -> None:
    train = (frame["source_split"] == "train").to_numpy() & (out == "")
    test = (frame["source_split"] == "test").to_numpy() & (out == "")
    folds = sorted(int(f) for f in frame.loc[train, "fold"].unique() if int(f) >= 0)
    if not folds or not test.any():
        missing = "folds" if not folds else "a labelled test set"
        raise ValueError(
            f"data.split.method=official needs the dataset's own folds and labelled test set; "
            f"this dataset has no {missing}: set data.split.method=group_kfold or group_holdout"
        )
    if split.fold not in folds:
        raise ValueError(
            f"data.split.fold={split.fold} is not one of the dataset's folds {folds}: "
            "pick one of them"
        )
    fold = frame["fold"].to_numpy()
    out[test] = "test"
    out[train & (fold == split.fold)] = "val"
    out[train & (fold != split.fold)] = "train"


def _group_kfold(
    frame: pd.DataFrame, split: SplitConfig, out: np.ndarray, groups: np.ndarray
) -> None:
    from sklearn.model_selection import StratifiedGroupKFold

    labels = frame["label"].to_numpy()
    test = (frame["source_split"] == "test").to_numpy() & (out == "")
    pool = (frame["source_split"] == "train").to_numpy() & (out == "")
    if test.any():
        out[test] = "test"
    elif split.test_fraction > 0:
        held = _holdout(groups[pool], labels[pool], split.test_fraction, split.seed, "test")
        rows = np.flatnonzero(pool)
        out[rows[held]] = "test"
        pool[rows[held]] = False
    rows = np.flatnonzero(pool)
    n_groups = len(np.unique(groups[rows]))
    if n_groups < split.n_folds:
        raise ValueError(
            f"group_kfold needs at least n_folds={split.n_folds} groups (subjects) outside the "
            f"test set, got {n_groups}: lower data.split.n_folds or add subjects"
        )
    kfold = StratifiedGroupKFold(n_splits=split.n_folds, shuffle=True, random_state=split.seed)
    for k, (_, val_idx) in enumerate(kfold.split(rows, labels[rows], groups=groups[rows])):
        if k == split.fold:
            out[rows] = "train"
            out[rows[val_idx]] = "val"
            return


def _group_holdout(
    frame: pd.DataFrame, split: SplitConfig, out: np.ndarray, groups: np.ndarray
) -> None:
    labels = frame["label"].to_numpy()
    pool = out == ""
    rows = np.flatnonzero(pool)
    if split.test_fraction > 0:
        held = _holdout(groups[rows], labels[rows], split.test_fraction, split.seed, "test")
        out[rows[held]] = "test"
        rows = rows[~held]
    # val_fraction is a share of all labelled images, so scale it to what is left
    val_share = split.val_fraction / (1.0 - split.test_fraction)
    held = _holdout(groups[rows], labels[rows], val_share, split.seed + 1, "validation")
    out[rows] = "train"
    out[rows[held]] = "val"


def assign_splits(frame: pd.DataFrame, split: SplitConfig) -> pd.DataFrame:
    """A copy of ``frame`` with a ``split`` column in ``train``, ``val``, ``test``, ``final``.

    Unlabelled images (``label == -1``) and the ``final`` source split always go to ``final``.
    The same frame and config give the same splits.

    >>> from trainers.config import SplitConfig
    >>> frame = pd.DataFrame({
    ...     "sample_id": [f"s{i}.bmp" for i in range(8)], "label": [0, 0, 1, 1, 0, 1, 0, 1],
    ...     "subject_id": ["a", "a", "b", "b", "c", "d", "e", "f"],
    ...     "source_split": ["train"] * 8, "fold": [-1] * 8,
    ...     "content_hash": [str(i) for i in range(8)]})
    >>> out = assign_splits(frame, SplitConfig(method="group_holdout", seed=1))
    >>> sorted(out["split"].unique())
    ['test', 'train', 'val']
    """
    out = np.full(len(frame), "", dtype=object)
    final = (frame["source_split"] == "final").to_numpy() | (frame["label"].to_numpy() < 0)
    out[final] = "final"
    unlabelled = final & (frame["source_split"] != "final").to_numpy()
    if unlabelled.any():
        log.info(
            "%d unlabelled image(s) outside the final set go to the final split",
            int(unlabelled.sum()),
        )
    if split.method == "official":
        _official(frame, split, out)
    else:
        if frame["subject_id"].isna().all():
            log.info(
                "the dataset has no subject ids: splitting by image (stratified), grouping "
                "identical files"
            )
        elif frame["subject_id"].isna().any():
            log.info(
                "%d image(s) have no subject id: each is its own group",
                int(frame["subject_id"].isna().sum()),
            )
        groups = split_groups(frame)
        if split.method == "group_kfold":
            _group_kfold(frame, split, out, groups)
        elif split.method == "group_holdout":
            _group_holdout(frame, split, out, groups)
        else:  # SplitConfig's Literal makes this unreachable from a validated config
            raise ValueError(
                f"unknown data.split.method {split.method!r}; valid names: "
                "group_holdout, group_kfold, official"
            )
    left = out == ""
    if left.any():
        out[left] = "final"
    result = frame.copy()
    result["split"] = pd.Series(out, index=frame.index, dtype=object).astype(str)
    return result


# ------------------------------------------------------------------------------------ audit


def _files(frame: pd.DataFrame, rows: list[int], limit: int = 3) -> str:
    names = [str(frame["sample_id"].iat[r]) for r in rows[:limit]]
    more = f", +{len(rows) - limit} more" if len(rows) > limit else ""
    return f"{len(rows)} file(s): {', '.join(names)}{more}"


def audit_leakage(frame: pd.DataFrame) -> None:
    """Raise :class:`LeakageError` when a subject or an identical image spans two splits.

    Only ``train``, ``val`` and ``test`` are audited (``final`` is never trained or scored on).
    Each problem names the subject id or content hash, the splits and example files of each.
    """
    if "split" not in frame.columns:
        raise ValueError("audit_leakage needs a `split` column: call assign_splits first")
    splits = frame["split"].to_numpy()
    problems: list[str] = []
    for column, what in (("subject_id", "subject"), ("content_hash", "identical image hash")):
        where: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        for i, (value, s) in enumerate(zip(frame[column], splits, strict=True)):
            if s in _AUDITED and value is not None and not pd.isna(value):
                where[str(value)][s].append(i)
        for value in sorted(where):
            sides = where[value]
            if len(sides) > 1:
                parts = "; ".join(f"{s}: {_files(frame, sides[s])}" for s in _AUDITED if s in sides)
                problems.append(
                    f"{what} {value!r} is in {' and '.join(s for s in _AUDITED if s in sides)} "
                    f"({parts})"
                )
    if problems:
        raise LeakageError(problems)
