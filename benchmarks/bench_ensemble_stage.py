"""The whole ensemble stage (``wen ensemble``) as the candidates grow: 50, 200 and 500.

Snapshots multiply the candidates: a search of 100 trials with 5 learning-rate troughs each
gives 500. This benchmark writes a run folder of N binary prediction files (20,000 validation
cells of 200 subjects, 5,000 test cells of 50 subjects; members of graded skill with
subject effects), then times ``ensemble.run.run_ensemble`` with ``candidates=top-N``: reading
the files, every method fitted under the nested cross-fitting protocol, the bootstrap
intervals, the paired subject-level tests, diversity and the written tables. Target: at most
60 s for 500 candidates on 2 cores. The prediction files are written once into
``$WEN_BENCH_DIR`` (default: a temporary folder) and shared by the three sizes.

``WEN_BENCH_QUICK=1`` stops at 200 candidates.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from trainers.run_layout import RUN_LAYOUT

QUICK = os.environ.get("WEN_BENCH_QUICK", "") not in ("", "0")
SIZES = (50, 200) if QUICK else (50, 200, 500)
VAL_SUBJECTS, TEST_SUBJECTS, CELLS = 200, 50, 100


def _cells(n_subjects: int, prefix: str) -> tuple[list[str], list[str], np.ndarray]:
    subjects = [f"{prefix}{s:03d}" for s in range(n_subjects) for _ in range(CELLS)]
    samples = [f"{s}_{i:03d}.bmp" for s in range(n_subjects) for i in range(CELLS)]
    labels = np.repeat(np.arange(n_subjects) % 2, CELLS)
    return [f"{prefix}{x}" for x in samples], subjects, labels


def write_pool(folder: Path, n: int, seed: int = 0) -> Path:
    """``folder/predictions/t<i>.parquet`` for i < n (kept when already there)."""
    import pandas as pd

    from trainers.predictions import prediction_frame, write_predictions

    rng = np.random.default_rng(seed)
    splits = {"val": _cells(VAL_SUBJECTS, "v"), "test": _cells(TEST_SUBJECTS, "t")}
    effects = {k: rng.normal(0, 0.7, len(v[1])) for k, v in splits.items()}
    for i in range(n):
        path = folder / RUN_LAYOUT.prediction(f"t{i:04d}")
        if path.is_file():
            continue
        skill = 0.4 + 1.2 * (i % 50) / 50
        frames = []
        for split, (samples, subjects, y) in splits.items():
            margin = skill * (2 * y - 1) + effects[split] + rng.normal(0, 1.2, len(y))
            logits = np.stack([-margin / 2, margin / 2], axis=1).astype(np.float32)
            frames.append(prediction_frame(
                trial_id=f"t{i:04d}", backbone=f"net{i % 5}", config_hash=f"h{i}", fold=0,
                epoch=1, split=split, sample_ids=samples, subject_ids=subjects, labels=y,
                logits=logits,
            ))  # fmt: skip
        config = {"model": {"backbone": f"net{i % 5}"}, "optim": {"lr": 1e-3 + i * 1e-6}}
        write_predictions(path, pd.concat(frames, ignore_index=True), ["hem", "all"], config)
    return folder


def _run_with(pool: Path, n: int, workdir: Path) -> float:
    """Seconds of ``run_ensemble`` over the first ``n`` files of ``pool`` (linked, not copied)."""
    from ensemble.config import EnsembleSettings
    from ensemble.run import run_ensemble

    run = workdir / f"run{n}"
    (run / RUN_LAYOUT.predictions).mkdir(parents=True)
    for path in sorted((pool / RUN_LAYOUT.predictions).glob("*.parquet"))[:n]:
        (run / RUN_LAYOUT.predictions / path.name).symlink_to(path)
    settings = EnsembleSettings(candidates=f"top-{n}")
    start = time.perf_counter()
    run_ensemble(run, settings, say=lambda s: None)
    return time.perf_counter() - start


def run() -> list[dict[str, Any]]:
    """One row per candidate count: the stage's wall time."""
    pool_dir = Path(os.environ.get("WEN_BENCH_DIR") or tempfile.mkdtemp(prefix="wen-stage-"))
    start = time.perf_counter()
    pool = write_pool(pool_dir, max(SIZES))
    setup = time.perf_counter() - start
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in SIZES:
            seconds = _run_with(pool, n, Path(tmp))
            rows.append({
                "name": f"ensemble_stage_{n}_candidates_x20000",
                "value": seconds, "unit": "s", "target": "<= 60" if n == 500 else "",
                "note": f"wen ensemble, every method, default settings; {seconds / n:.2f} s per "
                f"candidate (pool written in {setup:.0f} s, not counted)",
            })  # fmt: skip
    return rows


if __name__ == "__main__":
    for r in run():
        print(f"{r['name']:45s} {r['value']:10.3f} {r['unit']:3s} {r['target']:6s} {r['note']}")
