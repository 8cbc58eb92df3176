"""``wen ensemble`` writes diversity.csv and ambiguity.csv on test (ensemble._diversity_tables);
a run without labelled test predictions gets rows that say so."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from ensemble import EnsembleSettings, create_method, run_ensemble
from ensemble._diversity_tables import (
    AMBIGUITY_COLUMNS,
    DIVERSITY_COLUMNS,
    NO_LABELS,
    NO_TEST,
    ambiguity_frame,
    diversity_frame,
    write_diversity_tables,
)
from ensemble.diversity import pairwise_diversity
from ensemble.members import SplitArrays, build_members, load_prediction_sets, stack_members
from trainers.run_layout import RUN_LAYOUT


def _settings() -> EnsembleSettings:
    return EnsembleSettings(
        methods=["sap", "greedy", "stacking"],
        bootstrap=20,
        permutations=100,
        crossfit_folds=2,
        greedy_rounds=5,
        temperature_scaling=False,
    )


def test_wen_ensemble_writes_diversity_and_ambiguity_on_test(synthetic_run: Path) -> None:
    run_ensemble(synthetic_run, _settings(), say=lambda _: None)
    diversity = pd.read_csv(synthetic_run / RUN_LAYOUT.diversity, keep_default_na=False)
    ambiguity = pd.read_csv(synthetic_run / RUN_LAYOUT.ambiguity, keep_default_na=False)
    assert tuple(diversity.columns) == DIVERSITY_COLUMNS
    assert tuple(ambiguity.columns) == AMBIGUITY_COLUMNS

    weights = json.loads((synthetic_run / RUN_LAYOUT.ensemble_weights).read_text())
    names = [m["name"] for m in weights["members"]]
    assert len(diversity) == len(names) * (len(names) - 1) // 2 == 3  # one row per pair
    assert (diversity["split"] == "test").all() and (diversity["n"] == 80).all()
    # the numbers are the candidates' on test, in weights.json's member order
    sets = load_prediction_sets(synthetic_run / RUN_LAYOUT.predictions, False, print)
    by_name = {m.name: m for m in build_members(sets, False, print)}
    test = stack_members([by_name[n] for n in names], "test")
    d = pairwise_diversity(test.P, test.y)
    first = diversity.iloc[0]
    assert (first["a"], first["b"]) == (names[0], names[1])
    assert first["disagreement"] == pytest.approx(d.disagreement[0, 1], abs=1e-12)
    assert first["error_correlation"] == pytest.approx(d.error_correlation[0, 1], abs=1e-12)

    rows = ambiguity.set_index("method")
    assert set(rows.index) == {"sap", "greedy", "stacking", "best_single", "wen_kappa"}
    assert rows.loc["stacking", "note"].startswith("not a weighted average (logistic_stacker)")
    assert rows.loc["stacking", "ensemble_brier"] == ""  # no numbers for the stacker
    for method in ("sap", "greedy", "best_single", "wen_kappa"):
        r = rows.loc[method]
        ens, mem, amb = (float(r[c]) for c in ("ensemble_brier", "member_brier", "ambiguity"))
        assert ens == pytest.approx(mem - amb, abs=1e-12) and amb >= 0
        # the ensemble Brier is that of the method's stored test probabilities (summed over
        # classes), so the table and probabilities.parquet describe one ensemble
        probs = _stored(synthetic_run, method, test.sample_ids)
        brier = np.square(probs - np.eye(2)[test.y]).sum(axis=1).mean()
        assert ens == pytest.approx(brier, abs=1e-6)
    assert rows.loc["best_single", "note"] == "one member carries all the weight: no ambiguity"
    assert float(rows.loc["best_single", "ambiguity"]) == 0.0
    assert float(rows.loc["sap", "ambiguity"]) > 0


def _stored(run: Path, method: str, sample_ids: np.ndarray) -> np.ndarray:
    from ensemble.probabilities import read_method_probabilities

    table = read_method_probabilities(run / RUN_LAYOUT.ensemble_probabilities)
    return table.probs(method, "test", list(sample_ids))


def _protocol(P: np.ndarray, y: np.ndarray) -> SimpleNamespace:
    methods = {n: create_method(n).fit(P, y) for n in ("sap", "stacking")}
    return SimpleNamespace(results={n: SimpleNamespace(method=m) for n, m in methods.items()})


def test_no_test_predictions_or_labels_are_said_in_the_tables(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    P = rng.dirichlet(np.ones(2), size=(3, 40))
    y = rng.integers(0, 2, 40)
    protocol = _protocol(P, y)
    none = ambiguity_frame(protocol, None)
    assert none["method"].tolist() == ["sap", "stacking"] and (none["note"] == NO_TEST).all()
    assert none["ensemble_brier"].isna().all() and (none["n"] == 0).all()
    (tmp_path / RUN_LAYOUT.ensemble).mkdir()
    write_diversity_tables(tmp_path, protocol, [], None)  # type: ignore[arg-type]
    written = pd.read_csv(tmp_path / RUN_LAYOUT.diversity)
    assert len(written) == 1 and written["note"].iloc[0] == NO_TEST
    assert pd.read_csv(tmp_path / RUN_LAYOUT.ambiguity)["note"].tolist() == [NO_TEST] * 2
    ids = np.array([f"s{i}" for i in range(40)], dtype=object)
    unlabelled = SplitArrays(P, np.full(40, -1), ids, ids)
    frame = ambiguity_frame(protocol, unlabelled)
    assert (frame["note"] == NO_LABELS).all()
    div = diversity_frame(P, np.full(40, -1), ["a", "b", "c"])
    assert len(div) == 1 and div["note"].iloc[0] == NO_LABELS and div["n"].iloc[0] == 0


def test_a_pair_with_a_constant_error_vector_says_why() -> None:
    y = np.array([0, 1, 1, 0])
    decisions = np.array([[0, 1, 1, 0], [1, 1, 0, 0], [0, 0, 1, 1]])  # first: never wrong
    P = np.where(decisions[..., None] == np.arange(2), 0.8, 0.2)
    frame = diversity_frame(P, y, ["x", "y", "z"])
    assert frame[["a", "b"]].values.tolist() == [["x", "y"], ["x", "z"], ["y", "z"]]
    assert frame["error_correlation"].isna().tolist() == [True, True, False]
    assert frame["note"].iloc[0].startswith("x is never wrong on these 4 samples")
    assert frame["note"].iloc[2] == ""
    single = diversity_frame(P[:1], y, ["x"])
    assert single["note"].iloc[0] == "one candidate (x): no pairs"
