"""From a run's prediction files to ensemble members, checked and aligned.

A *member* is one configuration: the trials whose stored config differs only in
``data.split.fold``. Its validation predictions are the union of its folds' validation
predictions (out-of-fold), its test predictions the mean of its folds' test predictions.
A *snapshot member* is the same for one learning-rate trough: the folds' snapshots at one
epoch (``RUN/predictions/snapshots/``), read only when the candidate rule asks for them
(``snapshots:...``). Every file is read through ``trainers.predictions`` (the one owner of
the schema).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import posixpath
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ensemble._metrics import member_score_table
from trainers.errors import WenError
from trainers.predictions import PredictionFileError, PredictionSet, read_predictions, to_arrays
from trainers.run_layout import RUN_LAYOUT

__all__ = [
    "EnsembleInputError",
    "Member",
    "SplitArrays",
    "build_members",
    "load_prediction_sets",
    "member_table",
    "select_candidates",
    "CandidateRule",
    "SNAPSHOT_PREFIX",
    "stack_members",
    "wants_snapshots",
]

#: ``--candidates snapshots:<rule>`` draws candidates from every trial's snapshots too
SNAPSHOT_PREFIX = "snapshots:"


def wants_snapshots(spec: str) -> bool:
    """Whether the candidate rule ``spec`` draws from snapshots (``snapshots:<rule>``)."""
    return spec.strip().startswith(SNAPSHOT_PREFIX)


class EnsembleInputError(WenError, ValueError):
    """Prediction files that cannot be ensembled; the message names the trial and file."""


@dataclass
class SplitArrays:
    """One split of all members, aligned: P [members, samples, classes], y, ids, subjects."""

    P: np.ndarray
    y: np.ndarray
    sample_ids: np.ndarray
    subject_ids: np.ndarray


@dataclass
class Member:
    """One configuration of the search: its fold trials and their combined predictions."""

    trial_ids: list[str]
    backbone: str
    config: dict[str, Any]
    paths: list[Path]
    val: SplitArrays  # P is [1, n, k]
    test: SplitArrays | None
    val_scores: dict[str, float] = field(default_factory=dict)
    snapshot_epoch: int | None = None  # the trough's epoch for a snapshot member
    source: str = ""  # the trials that trained it, '+'-joined (a snapshot's parent trials)

    @property
    def name(self) -> str:
        """The member's label: its trial ids joined by '+'."""
        return "+".join(self.trial_ids)

    @property
    def origin(self) -> str:
        """The training runs behind the member: its parent trials for a snapshot."""
        return self.source or self.name


def _where(s: PredictionSet) -> str:
    return f"trial {s.trial_id} ({s.path})"


def load_prediction_sets(
    directory: Path,
    skip_bad: bool = False,
    say: Callable[[str], None] = print,
    snapshots: bool = False,
) -> list[PredictionSet]:
    """Read every prediction file (``.``/``_`` names ignored); bad files raise or are skipped.

    ``snapshots`` adds the files of the ``snapshots/`` folder inside ``directory``.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise EnsembleInputError(
            f"prediction folder {directory} does not exist; run `wen search` (or `wen train`) "
            "first, which writes RUN/predictions/<trial>.parquet"
        )
    paths = sorted(directory.glob("*.parquet"))
    if snapshots:
        folder = directory / posixpath.basename(RUN_LAYOUT.snapshots)
        found = sorted(folder.glob("*.parquet"))
        if not found:
            raise EnsembleInputError(
                f"--candidates {SNAPSHOT_PREFIX}... needs snapshots, and {folder} holds none: "
                "snapshots are written at the learning-rate troughs of cyclic schedules with "
                "train.snapshots=true; re-run the search, or drop the snapshots: prefix"
            )
        paths += found
    paths = [p for p in paths if not p.name.startswith((".", "_"))]
    sets = []
    for path, read in zip(paths, _read_all(paths)):
        if isinstance(read, PredictionFileError):
            if not skip_bad:
                raise EnsembleInputError(
                    f"{read}\n(pass --skip-bad-files to leave such files out)"
                ) from None
            say(f"skipping bad prediction file {path}: {read}")
        else:
            sets.append(read)
    if not sets:
        raise EnsembleInputError(f"no usable prediction files (*.parquet) in {directory}")
    return sets


def _read_all(paths: Sequence[Path]) -> list[PredictionSet | PredictionFileError]:
    """Every file read (or its error), in order; a few threads, as Parquet decoding releases the
    GIL (snapshots give hundreds of files)."""
    from concurrent.futures import ThreadPoolExecutor

    def read(path: Path) -> PredictionSet | PredictionFileError:
        try:
            return read_predictions(path, lean=True)  # logits are not ensembled
        except PredictionFileError as exc:
            return exc

    if len(paths) < 8:
        return [read(p) for p in paths]
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        return list(pool.map(read, paths))


def _fold_free_key(config: dict[str, Any]) -> str:
    """The config without ``data.split.fold``, as canonical JSON (the member's identity)."""
    c = copy.deepcopy(config)
    split = c.get("data", {}).get("split") if isinstance(c.get("data"), dict) else None
    if isinstance(split, dict):
        split.pop("fold", None)
    return json.dumps(c, sort_keys=True, default=str)


def _majority(values: Sequence[Any]) -> Any:
    """The most common value (the first seen among equals)."""
    counts = Counter(values)
    best = max(counts.values())
    return next(v for v in values if counts[v] == best)


def _reject(
    bad: list[tuple[list[PredictionSet], str]], skip_bad: bool, say: Callable[[str], None]
) -> set[int]:
    """Raise for the first bad group, or say which are skipped; return ids of skipped sets."""
    dropped: set[int] = set()
    for sets, why in bad:
        names = ", ".join(_where(s) for s in sets)
        if not skip_bad:
            raise EnsembleInputError(f"{names}: {why}\n(pass --skip-bad-files to leave it out)")
        say(f"skipping {names}: {why}")
        dropped |= {id(s) for s in sets}
    return dropped


def _group(sets: list[PredictionSet]) -> list[list[PredictionSet]]:
    """The sets grouped by configuration (fold aside), snapshots by configuration and epoch."""
    groups: dict[tuple[str, int | None], list[PredictionSet]] = {}
    for s in sets:
        key = (_fold_free_key(s.config), s.epoch if s.is_snapshot else None)
        groups.setdefault(key, []).append(s)
    return [sorted(g, key=lambda s: s.trial_id) for g in groups.values()]


def _fold_of(s: PredictionSet) -> int:
    folds = s.frame["fold"].unique()
    return int(folds[0]) if len(folds) else -1


def _member_val(group: list[PredictionSet]) -> SplitArrays:
    """Union of the folds' validation predictions, sorted by sample id; overlaps are errors."""
    parts = [to_arrays([s], "val") for s in group]
    if len(group) == 1:  # one fold: to_arrays already sorted it by sample id
        return SplitArrays(*parts[0])
    ids = np.concatenate([p[2] for p in parts])
    order = np.argsort(ids.astype(str), kind="stable")
    _check_disjoint_folds(group, [len(p[2]) for p in parts], ids, order)
    P = np.concatenate([p[0] for p in parts], axis=1)[:, order]
    y = np.concatenate([p[1] for p in parts])[order]
    subjects = np.concatenate([p[3] for p in parts])[order]
    return SplitArrays(P, y, ids[order], subjects)


def _check_disjoint_folds(
    group: list[PredictionSet], sizes: list[int], ids: np.ndarray, order: np.ndarray
) -> None:
    """Raise when two folds of one configuration predict the same validation sample
    (``ids``: the folds' ids concatenated, ``sizes`` long each; ``order`` sorts them)."""
    owner = np.repeat(np.arange(len(group)), sizes)
    ranked = ids[order].astype(str)
    repeats = np.flatnonzero(ranked[1:] == ranked[:-1])
    if len(repeats):
        first, second = order[repeats[0]], order[repeats[0] + 1]
        s, seen = group[owner[second]], group[owner[first]]
        raise EnsembleInputError(
            f"{_where(s)} and {_where(seen)} are folds of one configuration but "
            f"both predict validation sample {ids[second]!r}; out-of-fold predictions need "
            "disjoint validation folds (were the same fold trained twice?)"
        )


def _ids_key(ids: np.ndarray) -> bytes:
    """A digest of a sequence of sample ids: compared and counted for hundreds of members
    (a tuple of 20,000 strings per member is slow to hash)."""
    return hashlib.sha1("\x1f".join(map(str, ids)).encode()).digest() + len(ids).to_bytes(
        8, "little"
    )


def _member_test(group: list[PredictionSet]) -> SplitArrays | None:
    if all(not s.has_split("test") for s in group):
        return None
    P, y, ids, subjects = to_arrays(group, "test")
    return SplitArrays(P.mean(axis=0, keepdims=True), y, ids, subjects)


def build_members(
    sets: list[PredictionSet], skip_bad: bool = False, say: Callable[[str], None] = print
) -> list[Member]:
    """Check the sets against each other, group them into members and align every member.

    Checks, each naming the offending trial and file: the same class names in every file;
    validation predictions in every trial; the same test samples in every trial; folds of a
    configuration with disjoint validation samples; the same (out-of-fold) validation samples
    and labels in every member. The majority is taken as the reference.
    """
    ref_classes = _majority([tuple(s.class_names) for s in sets])
    sets = _checked_sets(sets, ref_classes, skip_bad, say)
    members = _grouped_members(sets, skip_bad, say)
    members = _aligned_members(members, sets, skip_bad, say)
    members = _without_repeats(members, say)
    # every member scored at once (the numbers of trainers.metrics.score, vectorised)
    table = member_score_table(
        np.concatenate([m.val.P for m in members]), members[0].val.y, list(ref_classes)
    )
    for i, m in enumerate(members):
        m.val_scores = {key: float(values[i]) for key, values in table.items()}
    return members


def _checked_sets(
    sets: list[PredictionSet],
    ref_classes: tuple[str, ...],
    skip_bad: bool,
    say: Callable[[str], None],
) -> list[PredictionSet]:
    """The sets with the majority's class names, validation rows and test samples."""
    bad = [
        ([s], f"class names {s.class_names} differ from {list(ref_classes)}")
        for s in sets
        if tuple(s.class_names) != ref_classes
    ]
    bad += [
        ([s], "has no validation ('val') predictions; the ensemble is fitted on them")
        for s in sets
        if not s.has_split("val")
    ]
    dropped = _reject(bad, skip_bad, say)
    sets = [s for s in sets if id(s) not in dropped]
    with_test = [s for s in sets if s.has_split("test")]
    if not with_test:
        return sets
    test_ids = {id(s): s.sorted_arrays("test")[0] for s in with_test}
    keys = {i: _ids_key(ids) for i, ids in test_ids.items()}
    ref = _majority(list(keys.values()))
    n_ref = len(next(test_ids[i] for i, key in keys.items() if key == ref))
    bad = [
        (
            [s],
            f"predicts {len(test_ids[id(s)])} test samples that differ from the "
            f"{n_ref} most trials predict; ensemble only trials of the same data split",
        )
        for s in with_test
        if keys[id(s)] != ref
    ]
    bad += [
        ([s], "has no test predictions while other trials have")
        for s in sets
        if not s.has_split("test")
    ]
    dropped = _reject(bad, skip_bad, say)
    return [s for s in sets if id(s) not in dropped]


def _grouped_members(
    sets: list[PredictionSet], skip_bad: bool, say: Callable[[str], None]
) -> list[Member]:
    """One member per configuration: its folds' out-of-fold validation and mean test rows."""
    members: list[Member] = []
    bad_groups: list[tuple[list[PredictionSet], str]] = []
    for group in _group(sets):
        folds = [_fold_of(s) for s in group]
        if len(set(folds)) != len(folds):
            bad_groups.append((group, f"trials of one configuration repeat a fold ({folds})"))
            continue
        try:
            val = _member_val(group)
            test = _member_test(group)
        except (EnsembleInputError, PredictionFileError) as exc:
            bad_groups.append((group, str(exc)))
            continue
        snapshot = group[0].is_snapshot
        members.append(
            Member(
                trial_ids=[s.trial_id for s in group],
                backbone=group[0].backbone,
                config=group[0].config,
                paths=[Path(s.path) for s in group if s.path],
                val=val,
                test=test,
                snapshot_epoch=group[0].epoch if snapshot else None,
                source="+".join(s.source_trial for s in group) if snapshot else "",
            )
        )
    _reject(bad_groups, skip_bad, say)
    if not members:
        raise EnsembleInputError("no ensemble members are left after checking the predictions")
    return members


def _aligned_members(
    members: list[Member], sets: list[PredictionSet], skip_bad: bool, say: Callable[[str], None]
) -> list[Member]:
    """The members that cover the majority's validation samples with the same labels."""
    keys = [_ids_key(m.val.sample_ids) for m in members]
    ref_key = _majority(keys)
    ref_member = members[keys.index(ref_key)]
    bad_members = []
    for m, key in zip(members, keys):
        if key != ref_key:
            why = (
                f"out-of-fold validation samples ({len(m.val.sample_ids)}) differ from the "
                f"{len(ref_member.val.sample_ids)} of most members; every member must cover the same "
                "validation samples (same folds of the same split)"
            )
        elif not np.array_equal(m.val.y, ref_member.val.y):
            why = "validation labels differ from other members'; were the label maps the same?"
        else:
            continue
        bad_members.append((m, why))
    dropped_names = {m.name for m, _ in bad_members}
    by_trial = {s.trial_id: s for s in sets}
    _reject([([by_trial[t] for t in m.trial_ids], why) for m, why in bad_members], skip_bad, say)
    return [m for m in members if m.name not in dropped_names]


def _without_repeats(members: list[Member], say: Callable[[str], None]) -> list[Member]:
    """The members less any best-epoch member that repeats one of its own snapshots.

    A trial whose best epoch is a trough has the same predictions twice: as its best-epoch
    file and as that trough's snapshot. The snapshot stays (its name says the epoch).
    """
    snaps: dict[str, list[Member]] = {}
    for m in members:
        if m.snapshot_epoch is not None:
            snaps.setdefault(m.origin, []).append(m)
    kept = []
    for m in members:
        twin = next(
            (
                s
                for s in snaps.get(m.name, [])
                if m.snapshot_epoch is None and np.array_equal(s.val.P, m.val.P)
            ),
            None,
        )
        if twin is None:
            kept.append(m)
        else:
            say(f"member {m.name} is snapshot {twin.name} (its best epoch is a trough): kept once")
    return kept


def stack_members(members: Sequence[Member], split: str) -> SplitArrays:
    """One split of the chosen members as a single aligned :class:`SplitArrays`."""
    parts = [m.val if split == "val" else m.test for m in members]
    if any(p is None for p in parts):
        raise EnsembleInputError(f"some members have no {split!r} predictions")
    first = parts[0]
    return SplitArrays(
        np.concatenate([p.P for p in parts], axis=0), first.y, first.sample_ids, first.subject_ids
    )


_TOP_K = re.compile(r"^top-?(\d+)$")


def select_candidates(members: list[Member], spec: str, by: str = "wfs") -> list[Member]:
    """Members to ensemble: ``best-per-backbone``, ``top-K`` or comma-separated trial ids.

    ``best-per-backbone`` takes each backbone's best member by validation ``by`` (WFS: the
    study's five networks); ``top-K`` the K best members overall; ids pick the members those
    trials belong to (any fold's trial id names its member). Order: best first.

    ``snapshots:<rule>`` applies the rule to a pool that holds every trial's snapshots too
    (``snapshots:top-10``, ``snapshots:best-per-backbone``, ``snapshots:t1@e4,t2@e8``), and
    ``snapshots:of-best`` takes every snapshot of the best member's trial: the snapshot
    ensemble of one training run (Huang et al. 2017).
    """
    scores = np.array([m.val_scores.get(by, float("nan")) for m in members], dtype=np.float64)
    rule = CandidateRule.from_members(members, spec, by)
    return [members[i] for i in rule.pick(scores)]


@dataclass(frozen=True)
class CandidateRule:
    """``select_candidates`` on member indices and scores, so the protocol can repeat the
    selection inside every cross-fitting fold (on the fold's fitting rows only).

    >>> rule = CandidateRule("best-per-backbone", ("a", "a", "b"), ((), (), ()))
    >>> rule.pick(np.array([0.6, 0.8, 0.7]))
    [1, 2]
    """

    spec: str
    backbones: tuple[str, ...]
    trial_ids: tuple[tuple[str, ...], ...]
    by: str = "wfs"
    origins: tuple[str, ...] = ()  # each member's training runs (``Member.origin``)

    @classmethod
    def from_members(cls, members: Sequence[Member], spec: str, by: str = "wfs") -> CandidateRule:
        """The rule for ``members``; a bad ``spec`` fails here, before any fitting."""
        rule = cls(
            spec.strip(),
            tuple(m.backbone for m in members),
            tuple(tuple(m.trial_ids) for m in members),
            by,
            tuple(m.origin for m in members),
        )
        rule.pick(np.zeros(len(members)))
        return rule

    @property
    def rule(self) -> str:
        """The rule without its ``snapshots:`` prefix."""
        return self.spec.removeprefix(SNAPSHOT_PREFIX).strip()

    @property
    def fixed(self) -> bool:
        """Trial ids name the members: nothing is chosen on data."""
        chosen_on_data = ("best-per-backbone", "of-best")
        return self.rule not in chosen_on_data and _TOP_K.match(self.rule) is None

    def pick(self, scores: np.ndarray) -> list[int]:
        """Indices of the chosen members, best first, given each member's ``by`` score."""
        key = np.where(np.isnan(scores), -np.inf, -scores if self.by == "logloss" else scores)
        ranked = sorted(range(len(scores)), key=lambda i: -key[i])  # stable: ties keep order
        if self.rule == "of-best":
            if not wants_snapshots(self.spec):
                raise ValueError(
                    f"candidates {self.spec!r}: of-best ensembles one trial's snapshots; "
                    f"write {SNAPSHOT_PREFIX}of-best"
                )
            origins = self.origins or tuple("+".join(t) for t in self.trial_ids)
            return [i for i in ranked if origins[i] == origins[ranked[0]]]
        if self.rule == "best-per-backbone":
            best: dict[str, int] = {}
            for i in ranked:
                best.setdefault(self.backbones[i], i)
            return list(best.values())
        match = _TOP_K.match(self.rule)
        if match:
            k = int(match.group(1))
            if k < 1:
                raise ValueError(f"candidates top-K needs K >= 1, got {self.spec!r}")
            return ranked[:k]
        return self._by_ids()

    def _by_ids(self) -> list[int]:
        wanted = [t.strip() for t in self.rule.split(",") if t.strip()]
        by_trial = {t: i for i, ids in enumerate(self.trial_ids) for t in ids}
        unknown = [t for t in wanted if t not in by_trial]
        if unknown:
            raise ValueError(
                f"candidates: unknown trial id(s) {unknown}; use best-per-backbone, top-K, "
                f"{SNAPSHOT_PREFIX}<rule>, {SNAPSHOT_PREFIX}of-best or ids among "
                f"{sorted(by_trial)[:20]}"
            )
        return list(dict.fromkeys(by_trial[t] for t in wanted))


def member_table(members: Sequence[Member]) -> list[dict[str, Any]]:
    """One row per member: name, trial ids, backbone, snapshot epoch (empty for a trial's
    best epoch), the trials that trained it and validation metrics."""
    return [
        {
            "member": m.name,
            "trial_ids": m.trial_ids,
            "backbone": m.backbone,
            "snapshot_epoch": m.snapshot_epoch,
            "origin": m.origin,
            **m.val_scores,
        }
        for m in members
    ]
