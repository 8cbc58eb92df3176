"""The search stage's cost and gain, each measured side by side in one run.

(a) Tune overhead. The same N trial configurations (a grid: no sampling, so the bare run can
    repeat them exactly) run twice: through ``search.run_search`` (Ray started in this
    process, ``CONCURRENCY`` trials at once, each holding one CPU and one thread), and bare,
    one after another through ``trainers.train`` on one thread. The figure is the search's
    wall time divided by the bare wall time over the concurrency, Ray's start included.
    Target: at most 1.15. On a 2-core machine the two concurrent trials also compete with
    Ray's own processes, so this is the worst case for the ratio.
    Beside them, where the fixed cost goes (``benchmarks/_search_probe.py``): Ray's start,
    each worker's start, per-trial and per-epoch steps in the trainable, the driver's
    experiment snapshots and result handling, Ray's shutdown.
(b) ASHA against FIFO. The same seeded random search (the cyclic learning rate's peak x
    backbone) runs with FIFO,
    then with Ray's ASHA (the stopping variant) and with the promotion variant
    (``asha_promotion``), both with rungs on whole learning-rate cycles, reduction factor 3,
    one bracket. The figure is the share of FIFO's epoch budget (epochs run, all trials) each
    spends, provided its best validation WFS is within 0.01 of FIFO's best; otherwise the
    row says it did not reach it.
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


def _search(config: Any, storage: Path, name: str, train_fn: Any = None) -> tuple[float, Any]:
    """Run one search quietly; its wall time (Ray's start included) and results table."""
    import ray

    from search.run import run_search

    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        outcome = run_search(
            config,
            storage=str(storage),
            name=name,
            num_cpus=CONCURRENCY,
            train_fn=train_fn,
            say=lambda _m: None,
        )
    wall = time.perf_counter() - start
    if ray.is_initialized():
        ray.shutdown()
    if outcome.errors:
        raise RuntimeError(f"benchmark search {name} had {outcome.errors} errored trial(s)")
    return wall, outcome.results


def _overhead_config(cache: Path) -> tuple[Any, str, int, int]:
    """8 trials of about 20 s on one core (resnet18 at 64 px, 7 epochs); quick: tiny ones."""
    backbone, size, epochs, lrs = (
        ("test_resnet", 40, 2, "[3.0e-4, 1.0e-3]")
        if _quick()
        else (
            "resnet18",
            64,
            7,
            "[1.0e-4, 2.0e-4, 3.0e-4, 5.0e-4, 7.0e-4, 1.0e-3, 2.0e-3, 3.0e-3]",
        )  # max_lr
    )
    config = _config(_base(cache, "overhead") + [
        f"train.epochs={epochs}", "search.algorithm=grid", f"model.backbone={backbone}",
        f"data.input_size={size}", "data.synthetic.size=96",
        # one learning-rate cycle per trial, ending at its trough (the study's trials run
        # whole 12-epoch cycles); the smoke preset's half-epoch cycles would publish a
        # snapshot every epoch
        f"schedule.half_cycle_epochs={epochs / 2}",
        f"search.space={{schedule.max_lr: {{type: grid, values: {lrs}}}}}",
    ])  # fmt: skip
    return config, backbone, size, epochs


def _bare(cache: Path, config: Any) -> tuple[float, int]:
    """The same trials one after another in this process, on one thread."""
    from search.space import grid_points

    points = grid_points(config.search)
    base = config.trial_part().model_dump(mode="json")
    return _time_bare(str(cache), base, points, "alone"), len(points)


def _time_bare(
    cache: str, base: dict, points: list, tag: str, barrier: Any = None, out: Any = None
) -> float:
    """``points`` through ``trainers.train`` one after another (``train.threads=1``), after a
    one-epoch warm-up (the synthetic data, the decoded cache, the imports); the seconds they
    took. With ``barrier`` (a process of :func:`_bare_pairs`) it waits there after the
    warm-up and puts the seconds on ``out``."""
    from search.trainable import TrialSpec, trial_config
    from trainers import train

    spec = TrialSpec(base=base, storage=cache, name="bare", metric="val_wfs", mode="max")
    folder = Path(cache)
    train(trial_config(spec, {**points[0], "train.epochs": 1}), lambda _m: None,
          out_dir=folder / f"warm-{tag}")  # fmt: skip
    if barrier is not None:
        barrier.wait()
    start = time.perf_counter()
    for i, point in enumerate(points):
        train(trial_config(spec, point), lambda _m: None, out_dir=folder / f"bare-{tag}-{i}")
    seconds = time.perf_counter() - start
    if out is not None:
        out.put(seconds)
    return seconds


def _bare_pairs(cache: Path, config: Any) -> float:
    """The same trials bare, two processes at a time (half each): what this machine's two
    cores give two trials without Ray or Tune; the wall time of the slower half."""
    import multiprocessing

    from search.space import grid_points

    ctx = multiprocessing.get_context("spawn")
    points = grid_points(config.search)
    base = config.trial_part().model_dump(mode="json")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_time_bare,
                         args=(str(cache), base, points[i::2], str(i), barrier, out))
             for i in range(2)]  # fmt: skip
    for proc in procs:
        proc.start()
    times = [out.get(timeout=3600) for _ in procs]
    for proc in procs:
        proc.join()
    return max(times)


def _overhead(cache: Path) -> list[dict[str, Any]]:
    from benchmarks._search_probe import breakdown, driver_probes, probe_train, process_cpu

    config, backbone, size, epochs = _overhead_config(cache)
    bare, trials = _bare(cache, config)
    pairs = _bare_pairs(cache, config)
    log = cache / "probe.jsonl"
    with driver_probes(log):
        wall, frame = _search(config, cache / "runs", "overhead", train_fn=probe_train)
    parts = breakdown(log, trials=len(frame), epochs=epochs)
    ideal = bare / CONCURRENCY
    rounds = len(frame) / CONCURRENCY
    fixed = (wall - parts["ray_start_s"] - ideal) / rounds
    return [
        {
            "name": "search: Tune overhead (wall / (bare / concurrency))",
            "value": wall / ideal,
            "unit": "x",
            "target": "<= 1.15",
            "note": f"{len(frame)} {backbone} trials x {epochs} epochs at {size} px, concurrency "
            f"{CONCURRENCY}: search {wall:.1f} s (Ray's start included), bare {bare:.1f} s "
            f"({bare / trials:.1f} s a trial). Before actor reuse and checkpoints by reference: 2.71 "
            "(2026-12-01, 4 trials of 10 s)",
        },
        {
            "name": "search: fixed cost per trial, Ray's start not counted",
            "value": fixed,
            "unit": "s",
            "target": "<= 1",
            "note": f"(search wall - Ray's start {parts['ray_start_s']:.1f} s - bare / "
            "concurrency) / (trials / concurrency). Before: 15.3 s (2026-12-01, Ray's start "
            "spread over the trials)",
        },
        {
            "name": "search: bare trials two at a time / (bare / concurrency)",
            "value": pairs / ideal,
            "unit": "x",
            "target": "",
            "note": f"the same {trials} trials without Ray: two processes, half each, "
            f"{pairs:.1f} s; what sharing this machine's cores costs before Tune adds anything. "
            f"Search / this: {wall / pairs:.2f}",
        },
        *_breakdown_rows(parts, epochs),
        *_cpu_rows(process_cpu(log), bare, wall),
    ]


def _cpu_rows(used: dict[str, float], bare: float, wall: float) -> list[dict[str, Any]]:
    """CPU seconds by process over the search, beside the bare trials' (one thread, so
    their wall time is their CPU time) and the two cores' capacity over the search."""
    total = sum(used.values())
    return [
        {
            "name": f"search CPU: {role}",
            "value": seconds,
            "unit": "s",
            "target": "",
            "note": f"{seconds / total:.0%} of the search's {total:.0f} CPU s; the bare trials "
            f"used {bare:.0f} s, the {CONCURRENCY} cores had {CONCURRENCY * wall:.0f} s",
        }
        for role, seconds in sorted(used.items(), key=lambda kv: -kv[1])
    ]


#: The breakdown rows: (key in breakdown(), what it is, how often it is paid).
_STEPS = (
    ("ray_start_s", "Ray's start (head, dashboard, first workers)", "once"),
    ("worker_start_s", "worker process start to its first trial (imports)", "per worker"),
    ("setup_s", "trial set-up in the worker: dataset open, model build (bare pays it too)",
     "per trial"),
    ("between_trials_s", "a worker's idle time between trials (Tune's reset of the reused "
     "actor, the next trial's start)", "per trial"),
    ("report_s", "the trainable's report: running best, TensorBoard, best-epoch record",
     "per epoch"),
    ("tune_report_s", "tune.report: Tune copies the epoch's checkpoint into its trial folder",
     "per epoch"),
    ("trainer_checkpoint_s", "the trainer's own checkpoint write (bare pays it too)",
     "per epoch"),
    ("publish_s", "publishing: best weights + config.json into RUN/models, the final report",
     "per trial"),
    ("driver_result_s", "the driver's handling of one result (scheduler, searcher, callbacks)",
     "per result"),
    ("ray_shutdown_s", "Ray's shutdown", "once"),
)  # fmt: skip


def _breakdown_rows(parts: dict[str, float], epochs: int) -> list[dict[str, Any]]:
    rows = [
        {
            "name": f"search cost: {what}",
            "value": parts[key],
            "unit": "s",
            "target": "",
            "note": f"{often}; python -m benchmarks search (benchmarks/_search_probe.py)",
        }
        for key, what, often in _STEPS
    ]
    rows.append(
        {
            "name": "search cost: Tune's experiment snapshots (driver)",
            "value": parts["snapshot_s"],
            "unit": "s",
            "target": "",
            "note": f"all {parts['snapshots']} snapshots together (TUNE_GLOBAL_CHECKPOINT_S)",
        }
    )
    return rows


def _asha_vs_fifo(cache: Path) -> list[dict[str, Any]]:
    samples, epochs = (6, 4) if _quick() else (10, 8)
    common = _base(cache, "asha") + [
        f"train.epochs={epochs}", "schedule.half_cycle_epochs=1", "search.algorithm=random",
        f"search.num_samples={samples}", "search.seed=3", "search.scheduler.reduction_factor=3",
        # no searcher cap (asha_promotion's paused trials would hold it); 2 CPUs, 1 a trial
        "search.max_concurrent=null",
        "search.space={model.backbone: {type: choice, values: [test_resnet, test_efficientnet]}, "
        # the cyclic schedule sets the learning rate (torch's CyclicLR overwrites optim.lr),
        # so its peak is what differs between trials
        "schedule.max_lr: {type: loguniform, low: 1.0e-4, high: 3.0e-2}}",
    ]  # fmt: skip
    out = {}
    for sched in ("fifo", "asha", "asha_promotion"):
        wall, frame = _search(
            _config(common + [f"search.scheduler.name={sched}"]), cache / "runs", sched
        )
        out[sched] = (wall, frame)
    fifo = out["fifo"][1]
    best_fifo = float(fifo["val_wfs"].max())
    rows = []
    for sched, label in (("asha", "ASHA (Ray's, stopping)"),
                         ("asha_promotion", "ASHA, promotion variant")):  # fmt: skip
        wall, frame = out[sched]
        best = float(frame["val_wfs"].max())
        share = float(frame["epochs_run"].sum()) / float(fifo["epochs_run"].sum())
        reached = best >= best_fifo - 0.01
        rows.append(
            {
                "name": f"search: {label} epoch budget / FIFO's",
                "value": share if reached else float("nan"),
                "unit": "share",
                "target": "<= 0.5",
                "note": f"search.scheduler.name={sched}; {samples} trials x {epochs} epochs; best "
                f"val WFS FIFO {best_fifo:.3f}, {sched} {best:.3f} "
                f"({'reached' if reached else 'NOT reached'} within 0.01); epochs "
                f"{int(frame['epochs_run'].sum())} vs {int(fifo['epochs_run'].sum())}; wall "
                f"{wall:.0f} s vs {out['fifo'][0]:.0f} s",
            }
        )
    return rows


def run() -> list[dict[str, Any]]:
    """Both figures; the searches run in a temporary folder that is removed afterwards."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    with tempfile.TemporaryDirectory(prefix="wen-bench-search-") as tmp:
        cache = Path(tmp)
        return _overhead(cache) + _asha_vs_fifo(cache)
