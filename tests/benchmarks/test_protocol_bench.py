"""``python -m benchmarks protocol`` at toy size: its rows, its bootstrap shortcut, and that its
simulation tells a subject-level test from a cell-level one on clustered data."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import bench_protocol as bench
from ensemble.stats import clustered_auc_test, delong_test, paired_bootstrap

pytestmark = pytest.mark.timeout(120)


def test_protocol_rows_have_the_benchmark_shape_and_rates_in_the_unit_interval() -> None:
    rows = bench.protocol_rows(
        n_null=6, n_power=3, n_verdict=2, n_perm=99, n_boot=200, population=200
    )
    names = [r["name"] for r in rows]
    assert len(names) == len(set(names))
    for r in rows:
        assert set(r) == {"name", "value", "unit", "target", "note"}, r
        assert isinstance(r["value"], float) and np.isfinite(r["value"]), r
        assert r["note"], r
    rates = [r for r in rows if r["unit"] == "rate"]
    assert all(0.0 <= r["value"] <= 1.0 for r in rates), rates
    for label in (*bench.SUBJECT_TESTS.values(), *bench.CELL_TESTS.values()):
        assert f"null rejection: {label}" in names
    cell = [r for r in rates if any(t in r["name"] for t in bench.CELL_TESTS.values())]
    assert cell and all(bench.CELL_NOTE in r["note"] and r["target"] == "" for r in cell)
    subject = [r for r in rates if r["name"].startswith("null rejection") and r not in cell]
    assert all(r["target"] == "<= 0.06" for r in subject)
    powers = [r for r in rates if r["name"].startswith("power")]
    assert len(powers) == len(bench.POWER_GAINS) * len(bench.SUBJECT_TESTS)
    verdict = next(r for r in rows if r["name"].startswith("demo verdict"))
    assert verdict["target"] == "<= 0.05"
    assert rows[-1]["name"] == "protocol benchmark wall time" and rows[-1]["unit"] == "s"


def test_wfs_bootstrap_is_paired_bootstraps_wfs_entry() -> None:
    """The benchmark's WFS-only bootstrap draws the same subjects as the stage's and gives the
    same difference, interval and p-value."""
    split = bench.simulate_members(np.random.default_rng(5), bench.Design(gain=0.3))
    args = (split.y, split.P[0], split.P[1], split.subject_ids)
    ours = bench.wfs_bootstrap(*args, n_boot=300, seed=4)
    stage = paired_bootstrap(*args, bench.CLASS_NAMES, n_boot=300, seed=4)["wfs"]
    for key in ("diff", "low", "high", "p"):
        assert ours[key] == pytest.approx(stage[key], abs=1e-12), key


def test_clustered_auc_holds_its_level_where_delong_on_cells_does_not() -> None:
    """Strongly clustered null (member x subject effects dominate the members' own cell noise):
    over 300 test sets Obuchowski's subject-level test rejects below 10%, DeLong's far above."""
    design = bench.Design(member_subject_sd=1.0, member_cell_sd=0.3)
    subject = cell = 0
    n = 300
    for rep in range(n):
        split = bench.simulate_members(np.random.default_rng([11, rep]), design)
        a, b = split.P[0][:, 1], split.P[1][:, 1]
        subject += clustered_auc_test(split.y, a, b, split.subject_ids).p <= bench.ALPHA
        cell += delong_test(split.y, a, b).p <= bench.ALPHA
    assert subject / n < 0.10
    assert cell / n > 0.30
