"""Error rates of the ensemble stage's tests and of the demo's verdict, by simulation.

``ensemble/inference.py`` compares methods on a test set of cells clustered in subjects
(the reference data: about 1,900 test cells of 28 subjects). This module simulates such test
sets many times and counts how often each test rejects at nominal 5%:

* **Null** (:func:`null_rates`): two members A and B drawn from the same distribution, so no
  difference is true. A member's logit for a cell is its class signal plus a subject effect
  shared by all members, a member x subject effect, a cell effect shared by all members and
  its own cell noise; probabilities through the logistic link. Subject-level tests
  (Obuchowski's clustered AUC, Durkalski's clustered McNemar, the paired subject permutation
  of WFS and BA, the paired subject bootstrap's 95% WFS interval excluding 0) should reject
  about 5% of the time; the cell-level DeLong and exact McNemar tests treat cells as
  independent and, because the member x subject effect makes a subject's cells move
  together, reject more often.
* **Power** (:func:`power_rates`): the same, with a larger class signal in A's logits.
* **The demo's verdict** (:func:`verdict_rate`): the pipeline at small scale. Several members
  are fitted into ensembles on validation (``ensemble.protocol.run_protocol``), one method is
  chosen by held-out validation WFS, and ``search.demo.ensemble_verdict`` judges it against
  ``best_single`` on test by the paired subject bootstrap. Members merely drawn alike would
  not make a null here: averaging members with independent noise *is* a true gain. So the
  members (:func:`simulate_undecided`) agree on every cell the shared signal decides and
  guess on the others ("undecided" cells), each guess the sign of member x subject plus cell
  noise. Any fixed weighting of such members guesses with the same symmetric noise, so every
  method's test labels, hence its WFS, have the same distribution as one member's: no method
  is truly better, and "a real gain" is a false positive.

The bootstrap's WFS interval is computed by :func:`wfs_bootstrap`, which reproduces
``ensemble.stats.paired_bootstrap(...)["wfs"]`` (the same subject draws; a test checks they are
equal) without the other metrics' cost. ``WEN_BENCH_QUICK=1`` runs fewer replicates.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ensemble._metrics import GroupedScorer
from ensemble.members import SplitArrays
from ensemble.stats import (
    clustered_auc_test,
    clustered_mcnemar_test,
    delong_test,
    draw_subject_counts,
    encode_subjects,
    interval,
    mcnemar_test,
    subject_permutation_test,
)

QUICK = os.environ.get("WEN_BENCH_QUICK", "") not in ("", "0")
ALPHA = 0.05
CLASS_NAMES = ("hem", "all")  # label 1 is ALL, the positive class
VERDICT_METHODS = ("best_single", "sap", "wen_kappa", "greedy")
CELL_NOTE = "cells treated as independent"
#: Extra class signal of member A in the power simulations.
POWER_GAINS = (0.3, 0.6)
#: Subject-level tests, then cell-level ones: the keys of :func:`pair_rejections`.
SUBJECT_TESTS = {
    "auc_obuchowski": "clustered AUC (Obuchowski 1997)",
    "acc_durkalski": "clustered McNemar, ACC (Durkalski 2003)",
    "wfs_permutation": "subject permutation, WFS",
    "ba_permutation": "subject permutation, BA",
    "wfs_bootstrap": "subject bootstrap 95% WFS interval excludes 0",
}
CELL_TESTS = {"auc_delong": "DeLong, AUC", "acc_mcnemar": "exact McNemar, ACC"}


@dataclass(frozen=True)
class Design:
    """One split's layout and the members' logit model (sizes like the reference test set)."""

    n_subjects: int = 28
    all_share: float = 2 / 3  # share of ALL subjects (about 2:1 ALL:hem)
    cells: tuple[int, int] = (40, 100)  # cells per subject, uniform in this range
    signal: float = 1.6  # class signal in the logit: +signal for ALL, -signal for hem
    gain: float = 0.0  # extra class signal of member 0 (A): 0 under the null
    subject_sd: float = 1.0  # subject effect shared by all members
    member_subject_sd: float = 0.5  # member x subject effect
    cell_sd: float = 1.0  # cell effect shared by all members
    member_cell_sd: float = 0.6  # each member's own cell noise
    undecided: float = 0.2  # simulate_undecided: mean share of cells the signal leaves open


def _layout(rng: np.random.Generator, d: Design) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels [cells], subject code [cells] and subject ids [cells] of one split."""
    n_all = round(d.all_share * d.n_subjects)
    labels = np.r_[np.ones(n_all, np.int64), np.zeros(d.n_subjects - n_all, np.int64)]
    sizes = rng.integers(d.cells[0], d.cells[1] + 1, d.n_subjects)
    subject = np.repeat(np.arange(d.n_subjects), sizes)
    ids = np.array([f"s{i:04d}" for i in range(d.n_subjects)], dtype=object)[subject]
    return labels[subject], subject, ids


def _to_probs(logits: np.ndarray) -> np.ndarray:
    """[members, cells] logits of ALL -> [members, cells, 2] probabilities (hem, all)."""
    p1 = 1.0 / (1.0 + np.exp(-logits))
    return np.stack([1.0 - p1, p1], axis=-1)


def simulate_members(rng: np.random.Generator, d: Design, n_members: int = 2) -> SplitArrays:
    """Members of the logistic random-effects model; member 0 gets ``d.gain`` more signal."""
    y, subject, ids = _layout(rng, d)
    n, s = len(y), d.n_subjects
    sign = 2.0 * y - 1.0
    shared = rng.normal(0, d.subject_sd, s)[subject] + rng.normal(0, d.cell_sd, n)
    signal = np.full((n_members, 1), d.signal)
    signal[0] += d.gain
    own = rng.normal(0, d.member_subject_sd, (n_members, s))[:, subject]
    own += rng.normal(0, d.member_cell_sd, (n_members, n))
    P = _to_probs(signal * sign + shared + own)
    return SplitArrays(P, y, np.arange(n), ids)


def simulate_undecided(rng: np.random.Generator, d: Design, n_members: int = 5) -> SplitArrays:
    """Members whose every weighted average is as good as one member (a null for ensembles).

    Per subject a share of undecided cells (a subject effect on the logit of ``d.undecided``);
    of the other cells 97% are decided right, 3% wrong, with a shared logit of +-6. A member's
    logit adds its member x subject effect and cell noise, which alone call undecided cells.
    """
    y, subject, ids = _layout(rng, d)
    n, s = len(y), d.n_subjects
    logit_share = math.log(d.undecided / (1 - d.undecided))
    share = 1.0 / (1.0 + np.exp(-(logit_share + rng.normal(0, d.subject_sd, s))))
    u = rng.random(n)
    open_ = u < share[subject]
    wrong = (~open_) & (u > 1.0 - 0.03 * (1.0 - share[subject]))
    decided = np.where(open_, 0.0, np.where(wrong, -6.0, 6.0)) * (2.0 * y - 1.0)
    own = rng.normal(0, d.member_subject_sd, (n_members, s))[:, subject]
    own += rng.normal(0, d.member_cell_sd, (n_members, n))
    return SplitArrays(_to_probs(decided + own), y, np.arange(n), ids)


def wfs_bootstrap(
    y: np.ndarray,
    probs_a: np.ndarray,
    probs_b: np.ndarray,
    subjects: np.ndarray,
    n_boot: int,
    seed: int,
) -> dict[str, float]:
    """``paired_bootstrap(y, probs_a, probs_b, subjects, CLASS_NAMES, n_boot=, seed=)["wfs"]``.

    The same stratified subject draws (``draw_subject_counts`` with each subject's majority
    label as its stratum) and the same percentile interval and p-value, scoring WFS only.
    """
    codes, _ = encode_subjects(subjects)
    n_groups = int(codes.max()) + 1
    per_label = np.zeros((n_groups, 2), np.int64)
    np.add.at(per_label, (codes, y), 1)
    strata = per_label.argmax(axis=1)
    counts = draw_subject_counts(n_groups, n_boot, np.random.default_rng(seed), strata)
    a = GroupedScorer(y, probs_a, codes, CLASS_NAMES)
    b = GroupedScorer(y, probs_b, codes, CLASS_NAMES)
    ones = np.ones((1, n_groups))
    diff = float(a.scores(ones, ("wfs",))["wfs"][0] - b.scores(ones, ("wfs",))["wfs"][0])
    d = a.scores(counts, ("wfs",))["wfs"] - b.scores(counts, ("wfs",))["wfs"]
    d = d[np.isfinite(d)]
    low, high = interval(d)
    p = min(1.0, 2.0 * min((d <= 0).mean(), (d >= 0).mean())) if d.size else float("nan")
    return {"diff": diff, "low": low, "high": high, "p": float(p)}


def pair_rejections(
    split: SplitArrays, a: int, b: int, n_perm: int, n_boot: int, seed: int
) -> dict[str, bool]:
    """Whether each test rejects "member a = member b" at 5% (keys: SUBJECT_TESTS, CELL_TESTS)."""
    y, ids = split.y, split.subject_ids
    pa, pb = split.P[a], split.P[b]
    right_a, right_b = pa.argmax(axis=1) == y, pb.argmax(axis=1) == y
    p = {
        "auc_obuchowski": clustered_auc_test(y, pa[:, 1], pb[:, 1], ids).p,
        "acc_durkalski": clustered_mcnemar_test(right_a, right_b, ids).p,
    }
    for metric in ("wfs", "ba"):
        r = subject_permutation_test(y, pa, pb, ids, metric, CLASS_NAMES, n_perm, seed)
        p[f"{metric}_permutation"] = r.p
    p["auc_delong"] = delong_test(y, pa[:, 1], pb[:, 1]).p
    p["acc_mcnemar"] = mcnemar_test(y, pa.argmax(axis=1), pb.argmax(axis=1)).p
    out = {name: bool(value <= ALPHA) for name, value in p.items()}
    if n_boot:
        boot = wfs_bootstrap(y, pa, pb, ids, n_boot, seed)
        out["wfs_bootstrap"] = bool(boot["low"] > 0 or boot["high"] < 0)
    return out


def rejection_rates(
    design: Design, n_reps: int, n_perm: int, n_boot: int, stream: int
) -> dict[str, float]:
    """Share of ``n_reps`` simulated test sets on which each test rejects A = B."""
    hits: dict[str, int] = {}
    for rep in range(n_reps):
        split = simulate_members(np.random.default_rng([stream, rep]), design)
        for name, rejected in pair_rejections(split, 0, 1, n_perm, n_boot, rep).items():
            hits[name] = hits.get(name, 0) + int(rejected)
    return {name: count / n_reps for name, count in hits.items()}


def _fit_and_choose(val: SplitArrays, test: SplitArrays, seed: int) -> tuple[str, dict]:
    """The stage at small scale: every method fitted on ``val`` by ``run_protocol``, one
    chosen by 5-fold held-out validation WFS; the chosen name and each method's test probs."""
    from ensemble.methods import MethodOptions, create_method
    from ensemble.protocol import run_protocol

    options = MethodOptions(class_names=CLASS_NAMES, seed=seed)
    methods = {name: create_method(name, options) for name in VERDICT_METHODS}
    protocol = run_protocol(
        methods, val, None, class_names=CLASS_NAMES, seed=seed, say=lambda _m: None
    )
    probs = {name: r.method.predict_proba(test.P) for name, r in protocol.results.items()}
    return protocol.chosen, probs


def _verdict(test: SplitArrays, chosen: str, probs: dict, n_boot: int, seed: int) -> str:
    """``search.demo.ensemble_verdict`` on the frames ``wen ensemble`` would write for these
    test predictions (comparison.csv's WFS and chosen flag, comparisons.csv's WFS interval)."""
    import pandas as pd

    from search.demo import ensemble_verdict

    whole = np.zeros(len(test.y), np.int64)
    wfs = {
        name: float(GroupedScorer(test.y, p, whole, CLASS_NAMES).scores(np.ones((1, 1)))["wfs"][0])
        for name, p in probs.items()
    }
    comparison = pd.DataFrame(
        {"method": name, "split": "test", "chosen": name == chosen, "wfs": value}
        for name, value in wfs.items()
    )
    boot = wfs_bootstrap(
        test.y, probs[chosen], probs["best_single"], test.subject_ids, n_boot, seed
    )
    paired = pd.DataFrame(
        [
            {
                "split": "test",
                "method": chosen,
                "baseline": "best_single",
                "metric": "wfs",
                "diff_low": boot["low"],
                "diff_high": boot["high"],
            }
        ]
    )
    return ensemble_verdict(comparison, paired)


def verdict_replicate(rng: np.random.Generator, d: Design, n_boot: int, seed: int) -> str:
    """One study on members equal by construction: fit, choose, judge. Returns the chosen
    method, with ``":gain"`` appended when the verdict calls it a real gain over best_single."""
    val, test = simulate_undecided(rng, d), simulate_undecided(rng, d)
    chosen, probs = _fit_and_choose(val, test, seed)
    gain = "a real gain" in _verdict(test, chosen, probs, n_boot, seed)
    return chosen + (":gain" if gain else "")


def verdict_rate(n_reps: int, n_boot: int, design: Design | None = None) -> dict[str, float]:
    """How often the verdict claims a real gain with no method truly better, and how often
    validation chose an ensemble at all."""
    design = design or Design()
    outcomes = [
        verdict_replicate(np.random.default_rng([3, rep]), design, n_boot, rep)
        for rep in range(n_reps)
    ]
    return {
        "gain": float(np.mean([o.endswith(":gain") for o in outcomes])),
        "ensemble_chosen": float(np.mean([not o.startswith("best_single") for o in outcomes])),
    }


def planted_gap(design: Design, n_subjects: int = 3000) -> dict[str, float]:
    """True WFS and AUC of A and B, and A's gain over B, on one very large test set."""
    from trainers.metrics import score

    split = simulate_members(np.random.default_rng(99), replace(design, n_subjects=n_subjects))
    a, b = (score(split.y, split.P[m], CLASS_NAMES) for m in (0, 1))
    return {
        "wfs": a["wfs"] - b["wfs"],
        "auc": a["auc"] - b["auc"],
        "b_wfs": b["wfs"],
        "b_auc": b["auc"],
    }


def ensemble_gap(design: Design, n_subjects: int = 3000) -> dict[str, float]:
    """WFS of the verdict's members' simple average minus one member's on one very large test
    set, with its 95% subject-bootstrap interval (0 by construction, up to noise)."""
    big = simulate_undecided(np.random.default_rng(98), replace(design, n_subjects=n_subjects))
    return wfs_bootstrap(big.y, big.P.mean(axis=0), big.P[0], big.subject_ids, 200, 0)


def _row(name: str, value: float, unit: str, target: str = "", note: str = "") -> dict[str, Any]:
    return {"name": name, "value": float(value), "unit": unit, "target": target, "note": note}


def _mc_se(rate: float, n: int) -> float:
    """Monte Carlo standard error of a rejection rate over ``n`` replicates."""
    return math.sqrt(rate * (1 - rate) / n)


def _null_rows(rates: dict[str, float], n: int, n_perm: int, n_boot: int) -> list[dict]:
    """One row per test: subject-level ones against 4-6%, cell-level ones beside them."""
    se5 = math.sqrt(ALPHA * (1 - ALPHA) / n)
    how = {
        "wfs_permutation": f"{n_perm} permutations",
        "ba_permutation": f"{n_perm} permutations",
        "wfs_bootstrap": f"{n_boot} resamples, percentile interval",
    }
    rows = []
    for key, label in SUBJECT_TESTS.items():
        rate = rates[key]
        inside = "yes" if 0.04 <= rate <= 0.06 else "no"
        note = (
            f"{round(rate * n)}/{n} = {rate:.4f}; subjects as unit; MC s.e. {_mc_se(rate, n):.3f} "
            f"({se5:.3f} at 5%); in 0.04-0.06: {inside}" + (f"; {how[key]}" if key in how else "")
        )
        rows.append(_row(f"null rejection: {label}", rate, "rate", "<= 0.06", note))
    for key, label in CELL_TESTS.items():
        rate = rates[key]
        note = f"{round(rate * n)}/{n} = {rate:.4f}; {CELL_NOTE}; MC s.e. {_mc_se(rate, n):.3f}"
        rows.append(_row(f"null rejection: {label}", rate, "rate", "", note))
    return rows


def _power_rows(
    gain: float, n: int, n_perm: int, n_boot: int, population: int
) -> list[dict[str, Any]]:
    """Rejection rates of the subject-level tests with A's class signal ``gain`` larger."""
    planted = Design(gain=gain)
    gaps = planted_gap(planted, population)
    rates = rejection_rates(planted, n, n_perm, n_boot, stream=2)
    what = (
        f"A's class signal {planted.signal} + {gain}: population WFS {gaps['wfs']:+.3f}, AUC "
        f"{gaps['auc']:+.3f} over B (B: WFS {gaps['b_wfs']:.3f}, AUC {gaps['b_auc']:.3f}); "
        f"{n} replicates"
    )
    return [
        _row(f"power, WFS {gaps['wfs']:+.3f}: {label}", rates[key], "rate", "", what)
        for key, label in SUBJECT_TESTS.items()
    ]


def _verdict_rows(n: int, n_boot: int, population: int) -> list[dict[str, Any]]:
    """The demo verdict's false-positive rate, and the check that no method is truly better."""
    outcome = verdict_rate(n, n_boot)
    gap = ensemble_gap(Design(), population)
    note = (
        f"{round(outcome['gain'] * n)}/{n}; {', '.join(VERDICT_METHODS)} fitted on 5 members, chosen by 5-fold held-out val WFS "
        f"(an ensemble in {outcome['ensemble_chosen']:.0%}); rule: paired {n_boot}-resample "
        f"subject-bootstrap WFS interval above 0; MC s.e. "
        f"{_mc_se(outcome['gain'], n):.3f} ({_mc_se(ALPHA, n):.3f} at 5%)"
    )
    check = (
        f"the verdict's members on {population:,} subjects, 95% interval [{gap['low']:+.4f}, "
        f"{gap['high']:+.4f}]: no method truly better"
    )
    return [
        _row("demo verdict 'a real gain', null", outcome["gain"], "rate", "<= 0.05", note),
        _row("null check: WFS(sap) - WFS(one member)", gap["diff"], "WFS", "", check),
    ]


def protocol_rows(
    n_null: int, n_power: int, n_verdict: int, n_perm: int, n_boot: int, population: int = 3000
) -> list[dict[str, Any]]:
    """Every figure of the benchmark for the given replicate counts (``n_verdict`` 0 skips the
    verdict, the slow part); ``population`` subjects give the true differences."""
    start = time.perf_counter()
    null = rejection_rates(Design(), n_null, n_perm, n_boot, stream=1)
    rows = _null_rows(null, n_null, n_perm, n_boot)
    for gain in POWER_GAINS:
        rows += _power_rows(gain, n_power, n_perm, n_boot, population)
    if n_verdict:
        rows += _verdict_rows(n_verdict, n_boot, population)
    seconds = time.perf_counter() - start
    note = (
        f"{n_null} null, {len(POWER_GAINS)} x {n_power} power, {n_verdict} verdict replicates; "
        f"{os.cpu_count()} CPUs"
    )
    full = n_null >= 1000
    rows.append(_row("protocol benchmark wall time", seconds, "s", "<= 180" if full else "", note))
    return rows


def run() -> list[dict[str, Any]]:
    """Every figure: 2,000 null, 2 x 300 power and 200 verdict replicates (quick: fewer)."""
    if QUICK:
        return protocol_rows(300, 100, 40, n_perm=199, n_boot=1000)
    return protocol_rows(2000, 300, 200, n_perm=499, n_boot=1000)
