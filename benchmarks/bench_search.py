"""The search stage's cost and gain, each measured side by side in one run.

(a) Tune overhead. The same N trial configurations (a grid: no sampling, so the bare run can
    repeat them exactly) run twice: through ``search.run_search`` (Ray started in this
    process, ``CONCURRENCY`` trials at once, each holding one CPU and one thread), and bare,
    one after another through ``trainers.train`` on one thread. The figure is the search's
    wall time divided by the bare wall time over the concurrency, Ray's start included.
    Target: at most 1.15. On a 2-core machine the two concurrent trials also compete with
    Ray's own processes, so this is the worst case for the ratio.
(b) ASHA against FIFO. The same seeded random search (learning rate x backbone) runs with FIFO,
    then with ASHA (rungs on whole learning-rate cycles, reduction factor 3, one bracket).
    The figure is the share of FIFO's epoch budget (epochs run, all trials) that ASHA spends,
    provided ASHA's best validation WFS is within 0.01 of FIFO's best; otherwise the row says
    ASHA did not reach it.
    Target: at most 0.5.

``WEN_BENCH_QUICK=1`` runs fewer and shorter trials.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CONCURRENCY = 2


def _quick() -> bool:
    return os.environ.get("WEN_BENCH_QUICK") == "1"


def _base(cache: Path, part: str) -> list[str]:
    """Overrides of configs/smoke.yaml shared by every search of one ``part`` (its own
    synthetic dataset: a folder holds one dataset spec)."""
    cells = 12 if _quick() else 24
    return [
        "data.synthetic.subjects_per_class=4", f"data.synthetic.cells_per_subject={cells}",
        "data.synthetic.size=48", "data.input_size=40", "data.batch_size=16",
        f"data.synthetic_dir={cache / f'synthetic-{part}'}", f"data.cache_dir={cache / 'decoded'}",
        "train.threads=1", "search.folds=[0]", f"search.max_concurrent={CONCURRENCY}",
        "search.resources.cpus=1", "search.report_every_s=60",
    ]  # fmt: skip


def _config(overrides: list[str]) -> Any:
    from search.run import load_search_config

    return load_search_config(str(REPO / "configs" / "smoke.yaml"), overrides)


def _search(config: Any, storage: Path, name: str) -> tuple[float, Any]:
    """Run one search quietly; its wall time (Ray's start included) and results table."""
    import ray

    from search.run import run_search

    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        outcome = run_search(
            config, storage=str(storage), name=name, num_cpus=CONCURRENCY, say=lambda _m: None
        )
    wall = time.perf_counter() - start
    if ray.is_initialized():
        ray.shutdown()
    if outcome.errors:
        raise RuntimeError(f"benchmark search {name} had {outcome.errors} errored trial(s)")
    return wall, outcome.results


def _overhead(cache: Path) -> list[dict[str, Any]]:
    from search.space import grid_points
    from search.trainable import TrialSpec, trial_config
    from trainers import train

    # trials long enough to stand for real ones (a real trial runs for minutes to hours):
    # resnet18 at 64 px, about a minute each on one core; quick mode: tiny ones
    backbone, size, epochs, lrs = (
        ("test_resnet", 40, 2, "[3.0e-4, 1.0e-3]")
        if _quick()
        else ("resnet18", 64, 6, "[1.0e-4, 3.0e-4, 1.0e-3, 3.0e-3]")
    )
    config = _config(_base(cache, "overhead") + [
        f"train.epochs={epochs}", "search.algorithm=grid", f"model.backbone={backbone}",
        f"data.input_size={size}", "data.synthetic.size=96",
        f"search.space={{optim.lr: {{type: grid, values: {lrs}}}}}",
    ])  # fmt: skip
    # warm the synthetic data and the decoded cache once, outside both timings
    base = config.trial_part().model_dump(mode="json")
    spec = TrialSpec(
        base=base, storage=str(cache), name="bare", metric="val_wfs", mode="max", cpus=1.0
    )
    points = grid_points(config.search)
    train(
        trial_config(spec, {**points[0], "train.epochs": 1}),
        lambda _m: None,
        out_dir=cache / "warm",
    )

    start = time.perf_counter()
    for i, point in enumerate(points):
        train(trial_config(spec, point), lambda _m: None, out_dir=cache / f"bare-{i}")
    bare = time.perf_counter() - start
    wall, frame = _search(config, cache / "runs", "overhead")
    ideal = bare / CONCURRENCY
    rounds = len(frame) / CONCURRENCY
    return [
        {
            "name": "search: Tune overhead (wall / (bare / concurrency))",
            "value": wall / ideal,
            "unit": "x",
            "target": "<= 1.15",
            "note": f"{len(frame)} {backbone} trials x {epochs} epochs at {size} px, concurrency "
            f"{CONCURRENCY}: search {wall:.1f} s (Ray start included), bare {bare:.1f} s "
            f"({bare / len(frame):.1f} s a trial)",
        },
        {
            "name": "search: fixed cost per trial (Ray start spread over the run)",
            "value": (wall - ideal) / rounds,
            "unit": "s",
            "target": "",
            "note": "(search wall - bare / concurrency) / (trials / concurrency): worker start, "
            "Tune bookkeeping, checkpoint and prediction upload",
        },
    ]


def _asha_vs_fifo(cache: Path) -> list[dict[str, Any]]:
    samples, epochs = (6, 4) if _quick() else (10, 8)
    common = _base(cache, "asha") + [
        f"train.epochs={epochs}", "schedule.half_cycle_epochs=1", "search.algorithm=random",
        f"search.num_samples={samples}", "search.seed=3", "search.scheduler.reduction_factor=3",
        "search.space={model.backbone: {type: choice, values: [test_resnet, test_efficientnet]}, "
        "optim.lr: {type: loguniform, low: 1.0e-5, high: 3.0e-2}}",
    ]  # fmt: skip
    out = {}
    for sched in ("fifo", "asha"):
        wall, frame = _search(
            _config(common + [f"search.scheduler.name={sched}"]), cache / "runs", sched
        )
        out[sched] = (wall, frame)
    fifo, asha = out["fifo"][1], out["asha"][1]
    best_fifo, best_asha = float(fifo["val_wfs"].max()), float(asha["val_wfs"].max())
    share = float(asha["epochs_run"].sum()) / float(fifo["epochs_run"].sum())
    reached = best_asha >= best_fifo - 0.01
    return [
        {
            "name": "search: ASHA epoch budget / FIFO's",
            "value": share if reached else float("nan"),
            "unit": "share",
            "target": "<= 0.5",
            "note": f"{samples} trials x {epochs} epochs; best val WFS FIFO {best_fifo:.3f}, ASHA "
            f"{best_asha:.3f} ({'reached' if reached else 'NOT reached'} within 0.01); "
            f"epochs {int(asha['epochs_run'].sum())} vs {int(fifo['epochs_run'].sum())}; "
            f"wall {out['asha'][0]:.0f} s vs {out['fifo'][0]:.0f} s",
        },
    ]


def run() -> list[dict[str, Any]]:
    """Both figures; the searches run in a temporary folder that is removed afterwards."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    with tempfile.TemporaryDirectory(prefix="wen-bench-search-") as tmp:
        cache = Path(tmp)
        return _overhead(cache) + _asha_vs_fifo(cache)
