"""``wen ensemble RUN``: members -> methods -> honest protocol -> statistics -> tables.

Writes into ``RUN/ensemble/`` (each file atomically): ``members.csv``, ``comparison.csv`` and
``comparison.md`` (one row per method and split, with 95% subject-bootstrap intervals),
``comparisons.csv`` (every method against ``best_single`` and ``wen_kappa`` on test: the
bootstrap difference and the subject-level, Holm-adjusted headline test), ``tests.csv`` (every
test behind it, subject- and cell-level: ``ensemble.inference``),
``confusion.csv`` (test), ``diversity.csv`` and ``ambiguity.csv`` (the candidates' pairwise
diversity and each method's ambiguity decomposition on test: ``ensemble._diversity_tables``),
``weights.json`` (each method's weights, parameters and combiner:
its export spec), ``probabilities.parquet`` (each method's probabilities on val, held-out val and
test: what the tables scored and the report shows), ``settings.json`` (the settings used),
``chosen.json`` and the Optuna study ``study.db`` (resumed by a re-run).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ensemble._diversity_tables import write_diversity_tables
from ensemble.config import EnsembleSettings
from ensemble.members import (
    CandidateRule,
    EnsembleInputError,
    Member,
    build_members,
    load_prediction_sets,
    member_table,
    select_candidates,
    stack_members,
    wants_snapshots,
)
from ensemble.methods import METHODS, MethodOptions, create_method
from ensemble.probabilities import method_rows, write_method_probabilities
from ensemble.inference import PairedSettings, paired_tests
from ensemble.decision import finalise_chosen
from ensemble.protocol import SIMPLICITY, CandidateSelection, ProtocolResult, run_protocol
from ensemble.stats import bootstrap_metrics
from trainers._atomic import atomic_write_json, atomic_write_text
from trainers.metrics import METRIC_KEYS, positive_index
from trainers.run_layout import RUN_LAYOUT

__all__ = ["BASELINES", "EnsembleResult", "method_options", "run_ensemble"]

#: Every method is compared (paired) against these.
BASELINES = ("best_single", "wen_kappa")
#: The metric columns of comparison.csv, the study's seven first.
TABLE_METRICS = METRIC_KEYS
SPLITS = ("val", "val_crossfit", "test")


@dataclass
class EnsembleResult:
    """What ``run_ensemble`` produced: the output folder, tables and the chosen method."""

    out_dir: Path
    members: list[Member]
    protocol: ProtocolResult
    comparison: pd.DataFrame
    comparisons: pd.DataFrame
    chosen: dict[str, Any]


def method_options(
    settings: EnsembleSettings,
    class_names: Sequence[str],
    storage: str | None,
    study_name: str | None,
    progress: bool,
) -> MethodOptions:
    """The settings as the explicit options the method factories take."""
    return MethodOptions(
        class_names=tuple(class_names),
        seed=settings.seed,
        select_by=settings.select_by,
        objective=settings.objective,
        n_trials=settings.n_trials,
        sampler=settings.sampler,
        storage=storage,
        study_name=study_name,
        progress=progress,
        greedy_rounds=settings.greedy_rounds,
        stacking_C=settings.stacking_C,
        search_max_members=settings.search_max_members,
    )


def _method_names(settings: EnsembleSettings, say: Callable[[str], None]) -> list[str]:
    names = list(settings.methods) if settings.methods else list(METHODS)
    for n in names:
        METHODS.get(n)  # an unknown name fails here, listing the valid ones
    for base in BASELINES:
        if base not in names:
            say(f"adding {base}: every method is compared with it")
            names.append(base)
    rank = {n: i for i, n in enumerate(SIMPLICITY)}
    return sorted(dict.fromkeys(names), key=lambda n: (rank.get(n, len(rank)), n))


def _study_name(settings: EnsembleSettings, members: Sequence[Member]) -> str:
    """One study per (objective, sampler, member set), so a re-run resumes the right one."""
    digest = hashlib.sha1("|".join(m.name for m in members).encode()).hexdigest()[:10]
    return f"weights-{settings.objective}-{settings.sampler}-{digest}"


def run_ensemble(
    run_dir: str | Path,
    settings: EnsembleSettings | None = None,
    *,
    progress: bool = False,
    say: Callable[[str], None] = print,
) -> EnsembleResult:
    """Fit, compare and choose ensemble methods on a run's prediction files.

    Reads ``RUN/predictions/*.parquet``, writes ``RUN/ensemble/``. Nothing is fitted on test:
    every method sees validation predictions only; the chosen method is the best by held-out
    validation ``settings.select_by``.
    """
    settings = settings or EnsembleSettings()
    run_dir = Path(run_dir)
    out_dir = run_dir / RUN_LAYOUT.ensemble
    names = _method_names(settings, say)  # an unknown method fails before any reading
    if not run_dir.is_dir():
        raise EnsembleInputError(
            f"run folder {run_dir} does not exist; pass the folder `wen search` wrote"
        )
    out_dir.mkdir(exist_ok=True)
    with _exclusive(run_dir, say):
        return _run_locked(run_dir, out_dir, names, settings, progress, say)


@contextlib.contextmanager
def _exclusive(run_dir: Path, say: Callable[[str], None]) -> Iterator[None]:
    """Hold ``RUN/ensemble/run.lock`` for a whole run (a lock file, not a temporary one: it stays).

    Two runs on one RUN would otherwise add trials to the same Optuna study at once (each
    copying its in-memory trials in) and interleave their output files. The second run waits,
    then resumes the finished study and writes a complete set of outputs of its own. The lock
    is an OS lock (filelock: fcntl/msvcrt), so a killed run never leaves it held.
    """
    from filelock import FileLock, Timeout

    lock = FileLock(str(run_dir / RUN_LAYOUT.ensemble_lock))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        say(f"another `wen ensemble` is running on {run_dir}; waiting for it to finish")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _run_locked(
    run_dir: Path,
    out_dir: Path,
    names: list[str],
    settings: EnsembleSettings,
    progress: bool,
    say: Callable[[str], None],
) -> EnsembleResult:
    """``run_ensemble``'s work, done while holding the run's lock."""
    sets = load_prediction_sets(
        run_dir / RUN_LAYOUT.predictions,
        settings.skip_bad_files,
        say,
        snapshots=wants_snapshots(settings.candidates),
    )
    members = build_members(sets, settings.skip_bad_files, say)
    class_names = _class_names(sets, members)
    chosen_members = select_candidates(members, settings.candidates, by="wfs")
    say(
        f"{len(members)} member(s); ensembling {len(chosen_members)}: "
        + ", ".join(f"{m.backbone}:{m.name}" for m in chosen_members)
    )
    val = stack_members(chosen_members, "val")
    has_test = all(m.test is not None for m in chosen_members)
    test = stack_members(chosen_members, "test") if has_test else None
    if not has_test:
        say("no test predictions: only validation rows are reported")

    selection = _nested_selection(members, settings)
    protocol = _fit_methods(
        run_dir, names, settings, chosen_members, val, test, class_names, progress, say, selection
    )

    pos = positive_index(class_names, len(class_names))
    comparison = _comparison_table(protocol, chosen_members, val, test, class_names, settings, pos)
    comparisons, tests = _paired(protocol, test, class_names, settings, pos)
    chosen = _chosen(protocol, chosen_members, settings, class_names)
    chosen.update(finalise_chosen(run_dir, protocol, val, test, settings, class_names, say))
    _write_outputs(
        run_dir,
        members,
        chosen_members,
        protocol,
        comparison,
        (comparisons, tests),
        chosen,
        val,
        test,
        class_names,
        pos,
    )
    atomic_write_json(run_dir / RUN_LAYOUT.ensemble_settings, settings.model_dump(mode="json"))
    say(f"chosen: {chosen['method']} ({chosen['why']}); tables in {out_dir}")
    return EnsembleResult(out_dir, chosen_members, protocol, comparison, comparisons, chosen)


def _fit_methods(
    run_dir: Path,
    names: list[str],
    settings: EnsembleSettings,
    members: Sequence[Member],
    val: Any,
    test: Any,
    class_names: list[str],
    progress: bool,
    say: Callable[[str], None],
    selection: CandidateSelection | None = None,
) -> ProtocolResult:
    """Every method built from the settings and run through the honest protocol."""
    storage = f"sqlite:///{(run_dir / RUN_LAYOUT.study_db).resolve()}"
    options = method_options(
        settings, class_names, storage, _study_name(settings, members), progress
    )
    methods = {n: create_method(n, options) for n in names}
    protocol = run_protocol(
        methods,
        val,
        test,
        class_names=class_names,
        crossfit_folds=settings.crossfit_folds,
        seed=settings.seed,
        select_by=settings.select_by,
        tune_thresholds=settings.tune_threshold,
        selection=selection,
        say=say,
    )
    for note in protocol.notes:
        say(f"note: {note}")
    return protocol


def _nested_selection(
    members: Sequence[Member], settings: EnsembleSettings
) -> CandidateSelection | None:
    """Every member and the candidate rule, so cross-fitting repeats the choice of members in
    each fold (None when trial ids name the members: nothing was chosen on data)."""
    rule = CandidateRule.from_members(members, settings.candidates, by="wfs")
    if rule.fixed:
        return None
    return CandidateSelection(stack_members(members, "val").P, rule)


def _class_names(sets: Sequence[Any], members: Sequence[Member]) -> list[str]:
    by_trial = {s.trial_id: s for s in sets}
    return list(by_trial[members[0].trial_ids[0]].class_names)


# ------------------------------------------------------------------------------- tables


def _how(
    split: str, folds: int, n_boot: int, by_subject: bool, threshold: bool, nested: str = ""
) -> str:
    unit = "subject" if by_subject else "cell (no subject ids)"
    boot = f"95% {unit} bootstrap n={n_boot}, stratified by class"
    rule = ", tuned threshold" if threshold else ""
    chosen = f"members chosen ({nested}) and " if nested else ""
    return {
        "val": f"fitted on val (OOF), scored on the same val predictions (optimistic){rule}; "
        f"{boot}",
        "val_crossfit": f"{chosen}fitted on {folds - 1} of {folds} subject-grouped val folds, "
        f"scored on the held-out fold{rule}; {boot}",
        "test": f"fitted on val (OOF), scored on test{rule}; {boot}",
    }[split]


def _comparison_table(
    protocol: ProtocolResult,
    members: Sequence[Member],
    val: Any,
    test: Any,
    class_names: Sequence[str],
    settings: EnsembleSettings,
    pos: int,
) -> pd.DataFrame:
    rows = []
    member_names = ";".join(m.name for m in members)
    for name, r in protocol.results.items():
        weights = ";".join(f"{w:.4f}" for w in r.method.weights_)
        for split in SPLITS:
            arrays = test if split == "test" else val
            if arrays is None:
                continue
            tuned = r.threshold is not None
            boot = bootstrap_metrics(
                arrays.y,
                r.probs(split),
                arrays.subject_ids,
                class_names,
                n_boot=settings.bootstrap,
                seed=settings.seed,
                pred=r.labels(split, pos) if tuned else None,
            )
            ci = boot.interval()
            row: dict[str, Any] = {
                "method": name,
                "split": split,
                "members": member_names,
                "weights": weights,
                "threshold": r.threshold,
            }
            for key in TABLE_METRICS:
                row[key] = r.scores[split][key]
                row[f"{key}_low"], row[f"{key}_high"] = ci[key]
            row["chosen"] = name == protocol.chosen
            row["how"] = _how(
                split,
                protocol.crossfit_folds,
                settings.bootstrap,
                boot.by_subject,
                tuned,
                protocol.nested_selection,
            )
            rows.append(row)
    return pd.DataFrame(rows)


def _paired(
    protocol: ProtocolResult,
    test: Any,
    class_names: Sequence[str],
    settings: EnsembleSettings,
    pos: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """comparisons.csv and tests.csv (empty without test predictions)."""
    if test is None:
        return pd.DataFrame(), pd.DataFrame()
    paired = PairedSettings(settings.bootstrap, settings.permutations, settings.seed)
    tests = paired_tests(protocol.results, BASELINES, test, class_names, pos, paired)
    return _comparisons(protocol, tests, settings), tests


def _comparisons(
    protocol: ProtocolResult, tests: pd.DataFrame, settings: EnsembleSettings
) -> pd.DataFrame:
    """``comparisons.csv``: per (method, baseline, metric) the headline test (subject-level,
    Holm-adjusted) with the bootstrap's difference and interval, and the cell-level test."""
    rows = []
    for (name, base, metric), part in tests.groupby(["method", "baseline", "metric"], sort=False):
        boot = part[part["test"].str.contains("bootstrap")].iloc[0]
        main = part[part["family"] == "headline"]
        head = main.iloc[0] if not main.empty else boot
        cell = part[part["unit"] == "cell"]
        rows.append({
            "split": "test", "method": name, "baseline": base, "metric": metric,
            "method_value": protocol.results[name].scores["test"][metric],
            "baseline_value": protocol.results[base].scores["test"][metric],
            "diff": boot["estimate"], "diff_low": boot["low"], "diff_high": boot["high"],
            "p_bootstrap": boot["p_value"], "test": head["test"], "unit": head["unit"],
            "statistic": head["statistic"], "p_value": head["p_value"],
            "p_adjusted": head["p_adjusted"], "family": head["family"], "detail": head["detail"],
            "cell_test": cell["test"].iloc[0] if not cell.empty else "",
            "cell_p_value": cell["p_value"].iloc[0] if not cell.empty else np.nan,
        })  # fmt: skip
    return pd.DataFrame(rows)


def _weights_by_member(weights: np.ndarray, members: Sequence[Member]) -> dict[str, float]:
    return {m.name: float(w) for m, w in zip(members, weights)}


def _chosen(
    protocol: ProtocolResult,
    members: Sequence[Member],
    settings: EnsembleSettings,
    class_names: Sequence[str],
) -> dict[str, Any]:
    r = protocol.results[protocol.chosen]
    return {
        "method": protocol.chosen,
        "why": protocol.why,
        "select_by": settings.select_by,
        "val_score": r.scores["val_crossfit"][settings.select_by],
        "val_score_kind": f"held-out ({protocol.crossfit_folds}-fold subject-grouped cross-fit)",
        "val_fitted_score": r.scores["val"][settings.select_by],
        "threshold": r.threshold,
        "members": [
            {
                "name": m.name,
                "trial_ids": m.trial_ids,
                "backbone": m.backbone,
                "weight": float(w),
                "files": [str(p) for p in m.paths],
            }
            for m, w in zip(members, r.method.weights_)
        ],
        "class_names": list(class_names),
    }


def _weights_json(protocol: ProtocolResult, members: Sequence[Member]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "members": [
            {
                "name": m.name,
                "trial_ids": m.trial_ids,
                "backbone": m.backbone,
                "snapshot_epoch": m.snapshot_epoch,
            }
            for m in members
        ],
        "methods": {},
    }
    for name, r in protocol.results.items():
        entry: dict[str, Any] = {
            "weights": _weights_by_member(r.method.weights_, members),
            "params": {k: v for k, v in r.method.get_params().items() if k != "class_names"},
            "threshold": r.threshold,
            "notes": list(getattr(r.method, "notes_", [])),
        }
        for attr in ("best_value_", "n_trials_done_", "study_name_"):
            if hasattr(r.method, attr):
                entry[attr.rstrip("_")] = getattr(r.method, attr)
        combiner = r.method.combiner()
        entry["weights_meaning"] = combiner.weights_meaning
        entry["combiner"] = combiner.to_json()
        out["methods"][name] = entry
    return out


def _probability_rows(
    protocol: ProtocolResult, val: Any, test: Any, pos: int
) -> list[pd.DataFrame]:
    """Each method's probabilities and decisions on every split it was scored on."""
    rows = []
    for name, r in protocol.results.items():
        for split in SPLITS:
            arrays = test if split == "test" else val
            probs = r.probs(split)
            if arrays is None or probs is None:
                continue
            rows.append(
                method_rows(
                    name,
                    split,
                    arrays.sample_ids,
                    arrays.subject_ids,
                    arrays.y,
                    probs,
                    r.labels(split, pos),
                )
            )
    return rows


def _confusion(
    protocol: ProtocolResult, test: Any, class_names: Sequence[str], pos: int
) -> pd.DataFrame:
    k = len(class_names)
    rows = []
    keep = test.y >= 0
    for name, r in protocol.results.items():
        pred = r.labels("test", pos)
        cm = np.bincount(test.y[keep] * k + pred[keep], minlength=k * k).reshape(k, k)
        for i in range(k):
            for j in range(k):
                rows.append(
                    {
                        "method": name,
                        "split": "test",
                        "true": class_names[i],
                        "predicted": class_names[j],
                        "count": int(cm[i, j]),
                    }
                )
    return pd.DataFrame(rows)


def _fmt(v: Any, lo: Any, hi: Any) -> str:
    if v is None or not np.isfinite(v):
        return "n/a"
    if lo is None or not np.isfinite(lo):
        return f"{v:.3f}"
    return f"{v:.3f} ({lo:.3f}-{hi:.3f})"


def _markdown(comparison: pd.DataFrame, chosen: dict[str, Any], notes: Sequence[str]) -> str:
    metrics = ("wp", "wr", "wfs", "acc", "ba", "auc", "kappa")
    head = "| method | split | " + " | ".join(m.upper() for m in metrics) + " |"
    lines = [
        "# Ensemble comparison",
        "",
        f"Chosen: **{chosen['method']}** ({chosen['why']}).",
        "",
        "Values are point estimates with 95% subject-bootstrap intervals. `val` rows are scored on",
        "the predictions the method was fitted on (optimistic); `val_crossfit` rows on held-out",
        "subject-grouped folds of the validation predictions; `test` rows on test, never",
        "fitted on.",
        "",
        head,
        "|" + "---|" * (len(metrics) + 2),
    ]
    for _, row in comparison.iterrows():
        cells = [_fmt(row[m], row[f"{m}_low"], row[f"{m}_high"]) for m in metrics]
        mark = " *" if row["chosen"] else ""
        lines.append(f"| {row['method']}{mark} | {row['split']} | " + " | ".join(cells) + " |")
    lines += ["", "How each row was obtained:", ""]
    for how in dict.fromkeys(comparison["how"]):
        lines.append(f"- {how}")
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def _write_outputs(
    run_dir: Path,
    all_members: Sequence[Member],
    members: Sequence[Member],
    protocol: ProtocolResult,
    comparison: pd.DataFrame,
    paired: tuple[pd.DataFrame, pd.DataFrame],
    chosen: dict[str, Any],
    val: Any,
    test: Any,
    class_names: Sequence[str],
    pos: int,
) -> None:
    table = pd.DataFrame(member_table(all_members))
    table["candidate"] = table["member"].isin([m.name for m in members])
    table["trial_ids"] = table["trial_ids"].map(";".join)
    atomic_write_text(run_dir / RUN_LAYOUT.members_table, table.to_csv(index=False))
    atomic_write_text(run_dir / RUN_LAYOUT.comparison, comparison.to_csv(index=False))
    atomic_write_text(
        run_dir / RUN_LAYOUT.comparison_md, _markdown(comparison, chosen, protocol.notes)
    )
    if test is not None:
        atomic_write_text(run_dir / RUN_LAYOUT.comparisons, paired[0].to_csv(index=False))
        atomic_write_text(run_dir / RUN_LAYOUT.tests, paired[1].to_csv(index=False))
        atomic_write_text(
            run_dir / RUN_LAYOUT.confusion,
            _confusion(protocol, test, class_names, pos).to_csv(index=False),
        )
    atomic_write_json(run_dir / RUN_LAYOUT.ensemble_weights, _weights_json(protocol, members))
    write_diversity_tables(run_dir, protocol, members, test)
    write_method_probabilities(
        run_dir / RUN_LAYOUT.ensemble_probabilities,
        _probability_rows(protocol, val, test, pos),
        class_names,
    )
    atomic_write_json(run_dir / RUN_LAYOUT.chosen, chosen)
