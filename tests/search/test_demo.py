"""``wen demo``: its config, the table and verdict it prints, and one end-to-end run."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
from run_files import assert_prediction_files, expected_snapshots
import pytest

from search.config import WenConfig
from search.demo import DEMO_CONFIG, demo_config, ensemble_verdict, format_comparison
from search.space import count_trials


def _row(method: str, wfs: float, chosen: bool = False, split: str = "test") -> dict:
    return dict(method=method, split=split, wfs=wfs, wfs_low=wfs - 0.1, wfs_high=wfs + 0.05,
                ba=0.7, ba_low=0.6, ba_high=0.8, auc=0.9, auc_low=0.85, auc_high=0.95,
                chosen=chosen)  # fmt: skip


def _paired(method: str, lo: float, hi: float) -> dict:
    return dict(split="test", method=method, baseline="best_single", metric="wfs",
                diff_low=lo, diff_high=hi)  # fmt: skip


def test_demo_config_searches_four_backbones_and_two_augmentations_with_asha(
    tmp_path: Path,
) -> None:
    config = demo_config(tmp_path)
    assert isinstance(config, WenConfig)
    space = config.search.space
    assert len(space["model.backbone"].values) >= 4
    assert len(space["data.augmentation"].values) >= 2
    assert config.search.scheduler.name == "asha"
    assert config.data.synthetic is not None and config.data.synthetic.layout == "cnmc-kaggle"
    # a benchmark with a known answer: each augmentation destroys a different cue
    assert config.data.synthetic.preset == "complementary"
    assert set(space["data.augmentation"].values) == {"stain-jitter", "brightness-jitter"}
    assert config.data.synthetic_dir == (tmp_path / "data").resolve()
    assert not config.model.pretrained and config.train.device == "cpu"
    assert count_trials(config.search) == len(space["model.backbone"].values) * len(
        space["data.augmentation"].values
    )


def test_demo_config_takes_set_overrides(tmp_path: Path) -> None:
    config = demo_config(tmp_path, ["train.epochs=4"])
    assert isinstance(config, WenConfig) and config.train.epochs == 4
    assert DEMO_CONFIG.is_file()


def test_format_comparison_shows_test_rows_with_intervals_and_marks_the_chosen() -> None:
    frame = pd.DataFrame([_row("best_single", 0.8, chosen=True), _row("wen_kappa", 0.85),
                          _row("sap", 0.5, split="val")])  # fmt: skip
    lines = format_comparison(frame)
    assert lines[0].split() == ["method", "WFS", "BA", "AUC"]
    assert len(lines) == 3  # the header and the two test rows; the val row is left out
    assert lines[1].startswith("best_single * ") and "0.800 [0.700, 0.850]" in lines[1]
    assert lines[2].startswith("wen_kappa ") and "0.900 [0.850, 0.950]" in lines[2]
    # columns line up
    assert lines[1].index("0.800") == lines[2].index("0.850")


def test_format_comparison_without_test_rows_says_why() -> None:
    with pytest.raises(ValueError, match="no rows for split 'test'"):
        format_comparison(pd.DataFrame([_row("sap", 0.5, split="val")]))


def test_verdict_calls_a_win_only_when_the_paired_interval_is_above_zero() -> None:
    frame = pd.DataFrame([_row("best_single", 0.80), _row("sap", 0.84), _row("optuna", 0.86, chosen=True),
                          _row("greedy", 0.78)])  # fmt: skip
    win = ensemble_verdict(frame, pd.DataFrame([_paired("optuna", 0.01, 0.1)]))
    assert win.startswith(
        "2 of 3 ensemble methods have a higher test WFS than the best single member (0.800): sap, optuna."
    )
    assert "optuna, scores +0.060 WFS [+0.010, +0.100], a real gain" in win
    tie = ensemble_verdict(frame, pd.DataFrame([_paired("optuna", -0.02, 0.1)]))
    assert "not distinguishable" in tie and "real gain" not in tie
    loss = ensemble_verdict(frame, pd.DataFrame([_paired("optuna", -0.2, -0.01)]))
    assert "a real loss" in loss
    assert "no paired interval" in ensemble_verdict(frame, None)


def test_verdict_when_validation_chose_the_single_member() -> None:
    frame = pd.DataFrame([_row("best_single", 0.9, chosen=True), _row("sap", 0.8)])
    text = ensemble_verdict(frame)
    assert text.startswith("0 of 1 ensemble methods have a higher test WFS")
    assert "the ensembles did not help" in text


def test_verdict_needs_the_baseline() -> None:
    with pytest.raises(ValueError, match="no best_single row"):
        ensemble_verdict(pd.DataFrame([_row("sap", 0.8)]))


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_wen_demo_end_to_end(tmp_path: Path, start_wen) -> None:
    out = tmp_path / "demo"
    start = time.monotonic()
    wen = start_wen(["demo", "--out", str(out)])
    code = wen.finish(timeout=1150)
    seconds = time.monotonic() - start
    assert code == 0, wen.output[-4000:]
    run = out / "run"
    config = demo_config(out)
    assert isinstance(config, WenConfig)
    results = pd.read_csv(run / "results.csv")
    assert len(results) == count_trials(config.search)
    assert (results["status"] == "TERMINATED").all(), results[["trial_id", "status", "error"]]
    assert results["stopped_early"].any(), "ASHA stopped no trial"
    finished = results[~results["stopped_early"].astype(bool)]
    assert len(finished) >= 2, results  # the ensemble needs members
    for trial in finished["trial_id"]:  # trials ASHA stops write no best-epoch file...
        assert (run / "predictions" / f"{trial}.parquet").is_file(), trial
    # ...but keep the snapshots of the troughs they reached, weights included
    stopped = results["stopped_early"].astype(bool)
    assert expected_snapshots(run, results, stopped)
    assert_prediction_files(run, results, best_files=False)
    assert (out / "data" / ".wen-synthetic.json").is_file()
    comparison = pd.read_csv(run / "ensemble" / "comparison.csv")
    assert {"best_single", "sap", "wen_kappa"} <= set(comparison["method"])
    assert (run / "model" / "ensemble.onnx").is_file()
    assert (run / "model" / "manifest.json").is_file()
    assert (run / "report" / "report.html").is_file()
    text = wen.output
    assert f"report: {run / 'report' / 'report.html'}" in text
    assert "ensemble methods have a higher test WFS than the best single member" in text
    for line in format_comparison(comparison):
        assert line in text
    # the benchmark's answer is known: its ceiling is printed beside the scores, and the
    # members learn the cues (validation AUC on held-out subjects)
    assert "ceiling: the best possible classifier of this dataset's latent cues" in text
    members = pd.read_csv(run / "ensemble" / "members.csv")
    assert members["auc"].min() >= 0.80, members[["member", "auc"]]
    print(f"wen demo: {seconds:.0f} s\n" + text[-3000:])


def test_bench_demo_reads_the_demo_stage_times() -> None:
    from benchmarks.bench_demo import stage_times

    out = "blah\ntime: 250 s (data 3 s, search 180 s, ensemble 20 s, export 9 s, report 38 s)\n"
    assert stage_times(out) == {"data": 3.0, "search": 180.0, "ensemble": 20.0, "export": 9.0,
                                "report": 38.0}  # fmt: skip
    assert stage_times("no timing here") == {}
