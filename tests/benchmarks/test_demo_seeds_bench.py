"""The demo-seeds benchmark reads a finished demo's tables the way the demo's verdict does."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from benchmarks.bench_demo_seeds import demo_outcome, summary_rows


def _paired_row(method: str, metric: str, diff: float, low: float, high: float) -> dict:
    return {"split": "test", "method": method, "baseline": "best_single", "metric": metric,
            "diff": diff, "diff_low": low, "diff_high": high}  # fmt: skip


def _demo_files(root: Path, chosen: str, low: float) -> tuple[Path, Path]:
    run, data = root / "run", root / "data"
    (run / "ensemble").mkdir(parents=True)
    data.mkdir()
    rows = [
        _paired_row(m, metric, 0.04, low, 0.09)
        for m in ("wen_kappa", "sap", "optuna")
        for metric in ("wfs", "auc")
    ]
    pd.DataFrame(rows).to_csv(run / "ensemble" / "comparisons.csv", index=False)
    (run / "ensemble" / "chosen.json").write_text(json.dumps({"method": chosen}))
    pd.DataFrame({"auc": [0.81, 0.86]}).to_csv(run / "ensemble" / "members.csv", index=False)
    (data / ".wen-synthetic.json").write_text(json.dumps({"ceiling": {"auc": 0.95}}))
    return run, data


def test_a_win_needs_the_chosen_methods_interval_above_zero(tmp_path: Path) -> None:
    win = demo_outcome(*_demo_files(tmp_path / "a", "sap", 0.01))
    assert win["win"] and win["chosen_wfs_diff"] == 0.04 and win["sap_auc_above_zero"]
    assert win["member_val_auc_min"] == 0.81 and win["ceiling_auc"] == 0.95
    loss = demo_outcome(*_demo_files(tmp_path / "b", "sap", -0.01))
    assert not loss["win"]
    single = demo_outcome(*_demo_files(tmp_path / "c", "best_single", 0.01))
    assert not single["win"] and single["chosen_wfs_diff"] == 0
    frame = pd.DataFrame([{"preset": "complementary", "seed": s, "seconds": 300.0, **o}
                          for s, o in enumerate((win, loss, single))])  # fmt: skip
    first = summary_rows(frame)[0]
    assert first["value"] == 1 and first["unit"] == "of 3"
    assert "sap, sap, best_single" in first["note"]
