"""``wen ensemble RUN`` end to end on synthetic prediction files; asserts on the files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from ensemble import METHODS
from search.cli import app

METRICS = ("wp", "wr", "wfs", "acc", "ba", "auc", "kappa")


def _invoke(*args: str):
    result = CliRunner().invoke(app, ["ensemble", *args])
    return result


def test_wen_ensemble_end_to_end(synthetic_run: Path) -> None:
    run = synthetic_run
    # settings from RUN/config.yaml; flags override them (n_trials)
    (run / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "data": {"synthetic": {"size": 32}},
                "ensemble": {
                    "bootstrap": 60,
                    "n_trials": 30,
                    "crossfit_folds": 3,
                    "greedy_rounds": 8,
                },
            }
        )
    )
    result = _invoke(str(run), "--n-trials", "12", "--seed", "1", "--no-progress")
    assert result.exit_code == 0, result.output
    out = run / "ensemble"
    names = set(METHODS.names())

    comparison = pd.read_csv(out / "comparison.csv")
    assert set(comparison["method"]) == names
    assert len(comparison) == 3 * len(names)
    assert set(comparison["split"]) == {"val", "val_crossfit", "test"}
    for m in METRICS:
        assert {m, f"{m}_low", f"{m}_high"} <= set(comparison.columns)
        ok = comparison[[m, f"{m}_low", f"{m}_high"]].dropna()
        assert (ok[f"{m}_low"] <= ok[m] + 1e-9).all() and (ok[m] <= ok[f"{m}_high"] + 1e-9).all()
    assert comparison["how"].str.contains("n=60").all()  # from config.yaml
    test_rows = comparison[comparison["split"] == "test"]
    assert test_rows["how"].str.contains("fitted on val").all()
    assert test_rows["how"].str.contains("scored on test").all()
    # the default candidates: the best member of each of the 3 backbones
    assert comparison["members"].iloc[0].count(";") == 2
    assert "Ensemble comparison" in (out / "comparison.md").read_text()

    weights = json.loads((out / "weights.json").read_text())
    assert set(weights["methods"]) == names
    member_names = [m["name"] for m in weights["members"]]
    assert all(len(m["trial_ids"]) == 2 for m in weights["members"])  # 2 folds each
    for entry in weights["methods"].values():
        assert list(entry["weights"]) == member_names
        assert sum(entry["weights"].values()) == pytest.approx(1.0)
    assert weights["methods"]["optuna"]["n_trials_done"] == 12  # the flag beat config.yaml

    chosen = json.loads((out / "chosen.json").read_text())
    assert chosen["method"] in names and chosen["select_by"] == "wfs"
    row = comparison[
        (comparison["method"] == chosen["method"]) & (comparison["split"] == "val_crossfit")
    ]
    assert chosen["val_score"] == pytest.approx(row["wfs"].iloc[0])
    assert "test scores played no part" in chosen["why"]
    assert row["chosen"].iloc[0]

    confusion = pd.read_csv(out / "confusion.csv")
    per_method = confusion.groupby("method")["count"].sum()
    assert (per_method == 10 * 8).all()  # 10 test subjects x 8 cells

    comparisons = pd.read_csv(out / "comparisons.csv")
    assert set(comparisons["baseline"]) == {"best_single", "wen_kappa"}
    assert set(comparisons["method"]) == names
    # the headline p-values are subject-level and Holm-adjusted; cell-level tests stand beside
    assert (comparisons["unit"] == "subject").all()
    auc = comparisons[comparisons["metric"] == "auc"]
    assert auc["test"].str.startswith("Obuchowski").all() and auc["p_value"].between(0, 1).all()
    assert auc["cell_test"].str.startswith("DeLong").all()
    acc = comparisons[comparisons["metric"] == "acc"]
    assert acc["test"].str.startswith("Durkalski").all()
    assert acc["cell_test"].str.contains("cells treated as independent").all()
    for metric in ("wfs", "ba"):
        rows = comparisons[comparisons["metric"] == metric]
        assert rows["test"].str.contains("subject permutation").all()
    assert (comparisons["p_adjusted"] >= comparisons["p_value"] - 1e-12).all()
    assert (comparisons["diff_low"] <= comparisons["diff_high"]).all()

    tests = pd.read_csv(out / "tests.csv")
    assert list(tests.columns[:14]) == [
        "method", "baseline", "split", "metric", "test", "unit", "family", "estimate", "low",
        "high", "statistic", "p_value", "p_adjusted", "detail",
    ]  # fmt: skip
    assert set(tests["unit"]) == {"subject", "cell"}
    headline = tests[tests["family"] == "headline"]
    # every method against both baselines on WFS, BA, AUC, ACC and kappa (binary task)
    assert len(headline) == 2 * (len(names) - 1) * 5
    assert (headline["unit"] == "subject").all()
    from ensemble.stats import holm_adjust

    np.testing.assert_allclose(headline["p_adjusted"], holm_adjust(headline["p_value"].to_numpy()))
    assert (tests.loc[tests["unit"] == "cell", "family"] == "cell-level").all()

    # each method's stored probabilities are the ones the comparison table scored
    from ensemble.probabilities import read_method_probabilities
    from trainers.metrics import score

    table = read_method_probabilities(out / "probabilities.parquet")
    assert set(table.methods()) == names and table.class_names == ["hem", "all"]
    for (method, split), rows in table.frame.groupby(["method", "split"]):
        probs = np.stack(rows["probs"].to_numpy())
        row = comparison[(comparison["method"] == method) & (comparison["split"] == split)]
        if split != "val_crossfit":  # held-out rows pool per-fold decisions
            assert score(rows["label"].to_numpy(), probs, ["hem", "all"])["auc"] == pytest.approx(
                row["auc"].iloc[0]
            ), (method, split)
        assert (rows["pred"].to_numpy() == probs.argmax(axis=1)).all()
    used = json.loads((out / "settings.json").read_text())
    assert used["n_trials"] == 12 and used["bootstrap"] == 60 and used["seed"] == 1

    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left
    storage = f"sqlite:///{out / 'study.db'}"
    (summary,) = optuna.get_all_study_summaries(storage)
    assert summary.n_trials == 12

    # a re-run resumes the study: 15 trials in all, not 12 + 15
    again = _invoke(
        str(run), "--n-trials", "15", "--seed", "1", "--methods", "optuna,sap", "--no-progress"
    )
    assert again.exit_code == 0, again.output
    (summary,) = optuna.get_all_study_summaries(storage)
    assert summary.n_trials == 15
    weights2 = json.loads((out / "weights.json").read_text())
    assert weights2["methods"]["sap"]["weights"] == weights["methods"]["sap"]["weights"]


def test_wen_ensemble_rejects_misaligned_files_clearly(synthetic_run: Path) -> None:
    from trainers.predictions import read_predictions, write_predictions

    path = synthetic_run / "predictions" / "t002.parquet"
    pset = read_predictions(path)
    frame = pset.frame[
        ~(
            (pset.frame["split"] == "test")
            & (pset.frame["sample_id"] == pset.frame["sample_id"].iloc[-1])
        )
    ]
    write_predictions(path, frame, pset.class_names, pset.config)
    result = _invoke(str(synthetic_run), "--n-trials", "3", "--no-progress")
    assert result.exit_code == 2
    assert "trial t002" in result.output and "t002.parquet" in result.output
    assert "--skip-bad-files" in result.output
    assert not (synthetic_run / "ensemble" / "comparison.csv").exists()
    ok = _invoke(
        str(synthetic_run),
        "--skip-bad-files",
        "--n-trials",
        "3",
        "--methods",
        "sap,wen_kappa",
        "--no-progress",
    )
    assert ok.exit_code == 0, ok.output
    assert "skipping trial t002" in ok.output
    comparison = pd.read_csv(synthetic_run / "ensemble" / "comparison.csv")
    # best_single joins the requested methods: everything is compared with it
    assert set(comparison["method"]) == {"sap", "wen_kappa", "best_single"}


def test_wen_ensemble_bad_flags_name_the_key(synthetic_run: Path) -> None:
    bad = _invoke(str(synthetic_run), "--objective", "auc", "--no-progress")
    assert bad.exit_code == 2 and "ensemble.objective" in bad.output
    unknown = _invoke(str(synthetic_run), "--methods", "sap,wen_nope", "--no-progress")
    assert unknown.exit_code == 2 and "valid names" in unknown.output
    missing = _invoke(str(synthetic_run / "nope"))
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_tuned_threshold_is_reported(synthetic_run: Path) -> None:
    result = _invoke(
        str(synthetic_run),
        "--methods",
        "sap",
        "--tune-threshold",
        "--select-by",
        "ba",
        "--bootstrap",
        "20",
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    comparison = pd.read_csv(synthetic_run / "ensemble" / "comparison.csv")
    assert comparison["threshold"].notna().all()
    assert comparison["how"].str.contains("tuned threshold").all()
    chosen = json.loads((synthetic_run / "ensemble" / "chosen.json").read_text())
    assert chosen["threshold"] is not None and np.isfinite(chosen["threshold"])


def test_wen_ensemble_set_overrides_the_section(synthetic_run: Path) -> None:
    """``--set`` takes keys of the ensemble: section (with or without the prefix), after the
    flags; keys of other sections and unknown keys are refused by name."""
    result = _invoke(
        str(synthetic_run),
        "--methods",
        "sap,greedy",
        "--bootstrap",
        "50",
        "--set",
        "ensemble.greedy_rounds=3",
        "--set",
        "bootstrap=20",
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    used = json.loads((synthetic_run / "ensemble" / "settings.json").read_text())
    assert used["greedy_rounds"] == 3 and used["bootstrap"] == 20  # --set beats the flag
    comparison = pd.read_csv(synthetic_run / "ensemble" / "comparison.csv")
    assert comparison["how"].str.contains("n=20").all()
    other = _invoke(str(synthetic_run), "--set", "train.epochs=3", "--no-progress")
    assert other.exit_code == 2 and "ensemble: section" in other.output
    unknown = _invoke(str(synthetic_run), "--set", "ensemble.rounds=3", "--no-progress")
    assert unknown.exit_code == 2 and "ensemble.rounds" in unknown.output
    assert "unknown key" in unknown.output


def test_wen_ensemble_draws_snapshot_candidates_under_the_nested_protocol(
    synthetic_run: Path,
) -> None:
    from tests.ensemble.conftest import write_snapshots

    write_snapshots(synthetic_run, epochs=(1, 2, 3))
    result = _invoke(
        str(synthetic_run), "--candidates", "snapshots:top-4", "--n-trials", "6",
        "--methods", "sap,wen_kappa,optuna", "--no-progress",
        "--set", "bootstrap=30", "--set", "permutations=100",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = synthetic_run / "ensemble"
    members = pd.read_csv(out / "members.csv")
    # 6 configurations x 3 troughs; the best-epoch files repeat the epoch-3 snapshots
    assert len(members) == 18 and set(members["snapshot_epoch"]) == {1, 2, 3}
    comparison = pd.read_csv(out / "comparison.csv")
    chosen = comparison["members"].iloc[0].split(";")
    assert len(chosen) == 4 and all("@e" in m for m in chosen)
    crossfit = comparison[comparison["split"] == "val_crossfit"]
    # the top-4 choice is repeated inside every cross-fitting fold, on its fitting rows only
    assert crossfit["how"].str.contains(r"members chosen \(snapshots:top-4\)").all()
    weights = json.loads((out / "weights.json").read_text())
    assert all("@e" in name for name in weights["methods"]["sap"]["weights"])
    assert all("@e" in m["name"] for m in weights["members"])
