"""What snapshots cost a trial: the demo's trial with ``train.snapshots`` on and off.

A snapshot is one validation, test and final prediction pass plus a weights file at every
learning-rate trough (``trainers.loop``). The trial is the demo's (``configs/demo.yaml``: its
synthetic dataset, first backbone and augmentation, epochs and schedule, one thread as a
demo trial gets), trained by ``trainers.train`` as a search would run it, without Ray.
Runs alternate on, off, off, on, ... so load from other processes hits both alike; the
figure is the ratio of the medians. Target: at most 1.10. ``WEN_BENCH_QUICK=1`` runs two
pairs instead of three.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

QUICK = os.environ.get("WEN_BENCH_QUICK", "") not in ("", "0")


def _trial(folder: Path, snapshots: bool) -> Any:
    """The demo's first trial, its dataset in ``folder/data``."""
    from search.demo import demo_config

    sets = [f"train.snapshots={str(snapshots).lower()}", "train.threads=1"]
    return demo_config(folder, sets).trial_part()


def _seconds(trial: Any, out: Path) -> float:
    from trainers import train

    start = time.perf_counter()
    train(trial, out_dir=out)
    return time.perf_counter() - start


def run() -> list[dict[str, Any]]:
    """The trial's wall time with and without snapshots, and their ratio."""
    from trainers.data.synth import ensure_synthetic
    from trainers.optim import trough_epochs

    pairs = 2 if QUICK else 3
    times: dict[bool, list[float]] = {True: [], False: []}
    with tempfile.TemporaryDirectory(prefix="wen-bench-snap-") as tmp:
        on = _trial(Path(tmp), True)
        ensure_synthetic(on.data.synthetic, on.data.synthetic_dir)
        order = [flag for i in range(pairs) for flag in ((True, False) if i % 2 else (False, True))]
        for i, flag in enumerate([True, *order]):  # the first run warms the caches up
            seconds = _seconds(_trial(Path(tmp), flag), Path(tmp) / f"run{i}")
            if i:
                times[flag].append(seconds)
    with_s, without = statistics.median(times[True]), statistics.median(times[False])
    troughs = len(trough_epochs(on.schedule, on.train.epochs))
    note = (
        f"{on.model.backbone}, {on.train.epochs} epochs, {troughs} troughs, medians of {pairs} "
        f"runs each: {with_s:.1f} s with, {without:.1f} s without"
    )
    return [
        {"name": "trial time with snapshots / without", "value": with_s / without,
         "unit": "x", "target": "<= 1.10", "note": note},
    ]  # fmt: skip
