"""The whole demo on each synthetic preset for several seeds: does the system find a real gain
where one exists, and only there? (``python -m benchmarks demo_seeds``; not run in CI.)

For each preset of the generator (``complementary``: cues that different augmentations keep or
destroy, so members trained with different variants see different evidence and a real ensemble
gain exists; ``single-cue``: one cue, no member knows what another does not) and each seed,
``wen demo`` runs as a user would (``--set data.synthetic.preset=P --set data.synthetic.seed=S
--set seed=S``, no Grad-CAM). From the tables it writes this reports, per preset:

* how often the method chosen on validation beats the best single member on test with a
  95% paired subject-bootstrap interval of the WFS difference above zero (the demo's own
  verdict); expected: most seeds on ``complementary``, at most the nominal rate on ``single-cue``;
* the mean test WFS and AUC difference to the best single member of WEN-kappa (the study's
  best weighting), SAP (plain average) and searched weights (Optuna), and how often each one's
  interval is above zero;
* the members' validation AUC (held-out subjects) and the generator's recorded ceiling.

``WEN_DEMO_SEEDS`` (default 5) sets the number of seeds; each demo takes minutes.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.bench_demo import _wen
from trainers.data.synth import read_synthetic_info
from trainers.run_layout import RUN_LAYOUT

PRESETS = ("complementary", "single-cue")
METHODS = {"wen_kappa": "WEN-kappa", "sap": "SAP", "optuna": "searched"}


def _paired(comparisons: pd.DataFrame, method: str, metric: str) -> tuple[float, float, float]:
    """(difference, low, high) of ``method`` minus best_single on test ``metric``."""
    sel = comparisons[
        (comparisons["split"] == "test")
        & (comparisons["method"] == method)
        & (comparisons["baseline"] == "best_single")
        & (comparisons["metric"] == metric)
    ]
    if sel.empty:
        return (float("nan"),) * 3
    row = sel.iloc[0]
    return float(row["diff"]), float(row["diff_low"]), float(row["diff_high"])


def demo_outcome(run: Path, data: Path) -> dict[str, Any]:
    """What one finished demo found, read from the files ``wen ensemble`` and the generator
    wrote: the chosen method's paired WFS interval, each method's differences, the members'
    validation AUC and the ceiling."""
    comparisons = pd.read_csv(run / RUN_LAYOUT.comparisons)
    chosen = json.loads((run / RUN_LAYOUT.chosen).read_text())["method"]
    members = pd.read_csv(run / RUN_LAYOUT.members_table)
    info = read_synthetic_info(data) or {}
    ceiling = info.get("ceiling") or {}
    out: dict[str, Any] = {
        "chosen": chosen,
        "member_val_auc_min": float(members["auc"].min()),
        "member_val_auc_max": float(members["auc"].max()),
        "ceiling_auc": float(ceiling.get("auc", float("nan"))),
        "ceiling_accuracy": float(ceiling.get("accuracy", float("nan"))),
    }
    diff, low, _ = _paired(comparisons, chosen, "wfs") if chosen != "best_single" else (0, 0, 0)
    out["chosen_wfs_diff"], out["win"] = diff, bool(chosen != "best_single" and low > 0)
    for method in METHODS:
        for metric in ("wfs", "auc"):
            d, lo, _ = _paired(comparisons, method, metric)
            out[f"{method}_{metric}_diff"], out[f"{method}_{metric}_above_zero"] = d, lo > 0
    return out


def _one(preset: str, seed: int, folder: Path) -> dict[str, Any]:
    out = folder / f"{preset}-{seed}"
    sets = [f"data.synthetic.preset={preset}", f"data.synthetic.seed={seed}", f"seed={seed}"]
    args = [*_wen(), "demo", "--out", str(out), "--no-gradcam"]
    for item in sets:
        args += ["--set", item]
    start = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, check=False,
                          env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})  # fmt: skip
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return {"preset": preset, "seed": seed, "seconds": seconds,
            **demo_outcome(out / "run", out / "data")}  # fmt: skip


def summary_rows(outcomes: pd.DataFrame) -> list[dict[str, Any]]:
    """The benchmark's figures, per preset, from one row per demo run."""
    rows = []
    for preset, group in outcomes.groupby("preset", sort=False):
        n = len(group)
        rows.append({
            "name": f"{preset}: chosen ensemble beats best single (paired WFS interval > 0)",
            "value": int(group["win"].sum()), "unit": f"of {n}",
            "target": ">= 3" if preset == "complementary" else "<= 1",
            "note": f"chosen: {', '.join(group['chosen'])}; members' val AUC "
            f"{group['member_val_auc_min'].min():.3f}-{group['member_val_auc_max'].max():.3f}, "
            f"ceiling AUC {group['ceiling_auc'].mean():.3f}, {group['seconds'].mean():.0f} s a demo",
        })  # fmt: skip
        for method, label in METHODS.items():
            for metric in ("wfs", "auc"):
                diffs = group[f"{method}_{metric}_diff"]
                above = int(group[f"{method}_{metric}_above_zero"].sum())
                rows.append({
                    "name": f"{preset}: {label} - best single, test {metric.upper()}",
                    "value": float(np.nanmean(diffs)), "unit": "mean diff", "target": "",
                    "note": f"interval above zero in {above} of {n}; per seed "
                    + ", ".join(f"{d:+.3f}" for d in diffs),
                })  # fmt: skip
    return rows


def run() -> list[dict[str, Any]]:
    """Every preset x seed demo, then the per-preset figures."""
    seeds = range(int(os.environ.get("WEN_DEMO_SEEDS", "5")))
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="wen-demo-seeds-") as tmp:
        for preset in PRESETS:
            for seed in seeds:
                outcomes.append(_one(preset, seed, Path(tmp)))
                print(f"[demo_seeds] {outcomes[-1]}", flush=True)
    return summary_rows(pd.DataFrame(outcomes))
