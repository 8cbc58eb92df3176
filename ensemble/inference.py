"""Paired inference on test: every method against each baseline, subjects as the unit.

A test set of cells is a handful of subjects, and cells of one subject are not independent,
so the headline test of each (method, baseline, metric) treats the *subject* as the unit:

* AUC (binary): Obuchowski's clustered comparison of correlated AUCs
  (``ensemble.stats.clustered_auc_test``);
* ACC: Durkalski's clustered McNemar test (``clustered_mcnemar_test``);
* WFS, BA and kappa: a paired permutation over subjects (``subject_permutation_test``);
* every other metric: the paired subject bootstrap the intervals come from (secondary: with
  28 subjects its percentile interval is a little narrow, and its p-value rejects a true
  null about 8% of the time at 5%: ``python -m benchmarks protocol``).

The estimate and its 95% interval are always the paired subject bootstrap's, so a p-value and
the interval beside it come from the same unit. The cell-level DeLong and exact McNemar tests
stay in ``tests.csv``, labelled "cells treated as independent", never as the headline. Holm's
adjustment runs within each family: ``headline`` (the comparisons the report shows: every
method against each baseline on :data:`REPORTED_METRICS`), ``secondary`` (the other metrics'
bootstrap p-values) and ``cell-level``.

>>> REPORTED_METRICS
('wfs', 'ba', 'auc', 'acc', 'kappa')
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ensemble._metrics import binary_labels
from ensemble.protocol import MethodResult
from trainers.metrics import METRIC_KEYS
from ensemble.stats import (
    clustered_auc_test,
    clustered_mcnemar_test,
    delong_test,
    encode_subjects,
    holm_adjust,
    mcnemar_test,
    paired_bootstrap,
    subject_permutation_test,
)

__all__ = ["REPORTED_METRICS", "TESTS_COLUMNS", "PairedSettings", "paired_tests", "family_text"]

#: The metrics the report's paired table shows: the headline family of Holm's adjustment.
REPORTED_METRICS = ("wfs", "ba", "auc", "acc", "kappa")
#: The headline metrics tested by a paired permutation over subjects.
PERMUTED_METRICS = ("wfs", "ba", "kappa")
#: The metrics compared (the comparison table's).
COMPARED_METRICS = METRIC_KEYS
TESTS_COLUMNS = (
    "method",
    "baseline",
    "split",
    "metric",
    "test",
    "unit",
    "family",
    "estimate",
    "low",
    "high",
    "statistic",
    "p_value",
    "p_adjusted",
    "detail",
)
CELL_NOTE = "cells treated as independent"


@dataclass(frozen=True)
class PairedSettings:
    """How many resamples and permutations, and their seed."""

    n_boot: int = 1000
    n_perm: int = 2000
    seed: int = 0


def paired_tests(
    results: Mapping[str, MethodResult],
    baselines: Sequence[str],
    test: Any,
    class_names: Sequence[str],
    pos: int,
    settings: PairedSettings,
) -> pd.DataFrame:
    """``tests.csv``: one row per (method, baseline, metric, test), Holm-adjusted per family."""
    rows: list[dict[str, Any]] = []
    for base in baselines:
        for name in results:
            if name != base:
                pair = _Pair(results[name], results[base], test, class_names, pos)
                rows += _pair_rows(pair, settings)
    frame = pd.DataFrame(rows, columns=list(TESTS_COLUMNS))
    for _family, index in frame.groupby("family").groups.items():
        frame.loc[index, "p_adjusted"] = holm_adjust(frame.loc[index, "p_value"].to_numpy(float))
    return frame


def family_text(tests: pd.DataFrame) -> str:
    """One sentence naming the headline family and its size, for the report and the tables."""
    head = tests[tests["family"] == "headline"]
    methods = sorted(set(head["method"]))
    return (
        f"Holm-adjusted over the {len(head)} headline comparisons (each of {len(methods)} "
        f"method(s) against each baseline {sorted(set(head['baseline']))} on test, metrics "
        f"{', '.join(m.upper() for m in REPORTED_METRICS)}); subjects are the independent unit"
    )


@dataclass
class _Pair:
    """A method and a baseline on the test split, with what every test needs."""

    a: MethodResult
    b: MethodResult
    test: Any
    class_names: Sequence[str]
    pos: int

    @property
    def pred_a(self) -> np.ndarray:
        return self.a.labels("test", self.pos)

    @property
    def pred_b(self) -> np.ndarray:
        return self.b.labels("test", self.pos)

    def row(self, metric: str, test: str, unit: str, family: str, **values: Any) -> dict:
        base = {
            "method": self.a.name,
            "baseline": self.b.name,
            "split": "test",
            "metric": metric,
            "test": test,
            "unit": unit,
            "family": family,
            "statistic": np.nan,
            "detail": "",
        }
        return {**base, **values}


def _pair_rows(pair: _Pair, settings: PairedSettings) -> list[dict[str, Any]]:
    """The bootstrap rows of every metric, then the subject- and cell-level tests."""
    test = pair.test
    _, by_subject = encode_subjects(test.subject_ids)
    unit = "subject" if by_subject else "cell"
    boot = paired_bootstrap(
        test.y,
        pair.a.test_probs,
        pair.b.test_probs,
        test.subject_ids,
        pair.class_names,
        n_boot=settings.n_boot,
        seed=settings.seed,
        pred_a=pair.pred_a,
        pred_b=pair.pred_b,
    )
    headline = _headline_tests(pair, boot, unit, settings)
    rows = []
    for metric in COMPARED_METRICS:
        d = boot[metric]
        family = (
            "headline" if metric in REPORTED_METRICS and metric not in headline else "secondary"
        )
        rows.append(
            pair.row(
                metric,
                f"paired {settings.n_boot}-resample {unit} bootstrap",
                unit,
                family,
                estimate=d["diff"],
                low=d["low"],
                high=d["high"],
                p_value=d["p"],
            )
        )
    rows += list(headline.values())
    return rows + _cell_tests(pair, boot)


def _headline_tests(
    pair: _Pair, boot: Mapping[str, Mapping[str, float]], unit: str, settings: PairedSettings
) -> dict[str, dict[str, Any]]:
    """The subject-level test of AUC (binary), ACC, WFS, BA and kappa, by metric; each row carries
    the bootstrap's estimate and interval."""
    out = {}
    if len(pair.class_names) == 2:
        out["auc"] = _guarded(pair, "auc", unit, lambda: _auc_row(pair, unit))
    out["acc"] = _guarded(pair, "acc", unit, lambda: _acc_row(pair, unit))
    for metric in PERMUTED_METRICS:
        out[metric] = _guarded(
            pair, metric, unit, lambda m=metric: _permutation_row(pair, m, unit, settings)
        )
    for metric, row in out.items():
        d = boot[metric]
        row.update(estimate=d["diff"], low=d["low"], high=d["high"])
    return out


def _guarded(
    pair: _Pair, metric: str, unit: str, build: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """The test's row, or, when the test set cannot support it (too few subjects of a class),
    a row without a p-value that says why; the other tests and the tables still stand."""
    try:
        return build()
    except ValueError as exc:
        return pair.row(metric, "not computed", unit, "headline", p_value=np.nan,
                        detail=f"test not computed: {exc}")  # fmt: skip


def _auc_row(pair: _Pair, unit: str) -> dict[str, Any]:
    test = pair.test
    r = clustered_auc_test(
        binary_labels(test.y, pair.pos),
        pair.a.test_probs[:, pair.pos],
        pair.b.test_probs[:, pair.pos],
        test.subject_ids,
    )
    detail = f"se={r.se:.5f}; subjects={r.n_clusters}"
    return pair.row(
        "auc",
        "Obuchowski (1997) clustered AUC comparison",
        unit,
        "headline",
        statistic=r.z,
        p_value=r.p,
        detail=detail,
    )


def _acc_row(pair: _Pair, unit: str) -> dict[str, Any]:
    test = pair.test
    known = test.y >= 0
    r = clustered_mcnemar_test(
        pair.pred_a[known] == test.y[known],
        pair.pred_b[known] == test.y[known],
        np.asarray(test.subject_ids)[known],
    )
    detail = (
        f"only_method_right={r.only_a}; only_baseline_right={r.only_b}; subjects={r.n_clusters}"
    )
    return pair.row(
        "acc",
        "Durkalski et al. (2003) clustered McNemar",
        unit,
        "headline",
        statistic=r.statistic,
        p_value=r.p,
        detail=detail,
    )


def _permutation_row(pair: _Pair, metric: str, unit: str, settings: PairedSettings) -> dict:
    test = pair.test
    r = subject_permutation_test(
        test.y,
        pair.a.test_probs,
        pair.b.test_probs,
        test.subject_ids,
        metric,
        pair.class_names,
        n_perm=settings.n_perm,
        seed=settings.seed,
        pred_a=pair.pred_a,
        pred_b=pair.pred_b,
    )
    return pair.row(
        metric,
        f"paired {unit} permutation ({r.n_perm} permutations)",
        unit,
        "headline",
        p_value=r.p,
        detail=f"subjects={r.n_subjects}",
    )


def _cell_tests(pair: _Pair, boot: Mapping[str, Mapping[str, float]]) -> list[dict[str, Any]]:
    """DeLong's and the exact McNemar test with cells as the unit (never the headline)."""
    test, rows = pair.test, []
    if len(pair.class_names) == 2:
        d = delong_test(
            binary_labels(test.y, pair.pos),
            pair.a.test_probs[:, pair.pos],
            pair.b.test_probs[:, pair.pos],
        )
        rows.append(
            pair.row(
                "auc",
                f"DeLong (fast, Sun & Xu 2014; {CELL_NOTE})",
                "cell",
                "cell-level",
                estimate=d.diff,
                low=d.diff - 1.96 * d.se,
                high=d.diff + 1.96 * d.se,
                statistic=d.z,
                p_value=d.p,
                detail=f"se={d.se:.5f}",
            )
        )
    m = mcnemar_test(test.y, pair.pred_a, pair.pred_b)
    rows.append(
        pair.row(
            "acc",
            f"McNemar, exact binomial (scipy binomtest; {CELL_NOTE})",
            "cell",
            "cell-level",
            estimate=boot["acc"]["diff"],
            low=np.nan,
            high=np.nan,
            p_value=m.p,
            detail=f"only_method_right={m.only_a}; only_baseline_right={m.only_b}",
        )
    )
    return rows
