"""Where a search's per-trial fixed cost goes: timestamps from the driver and the workers.

:func:`probe_train` replaces the trial function (``run_search(train_fn=...)``): on the worker
it wraps the trainable's steps (set-up, every report and its checkpoint copy, publishing) and
logs each one's wall time to a JSON-lines file; :func:`driver_probes` does the same for the
driver (Ray's start and shutdown, Tune's experiment snapshots and result handling).
:func:`breakdown` turns the log into per-trial figures. Measurement only: nothing here
changes what a trial does, and every wrapper calls the original.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: The log file, named in the environment so Ray's worker processes (which inherit the
#: driver's environment) write to the same one.
LOG_ENV = "WEN_SEARCH_PROBE_LOG"
_patched: set[int] = set()


def event(kind: str, **fields: Any) -> None:
    """Append one timestamped record to the probe log."""
    with open(os.environ[LOG_ENV], "a") as f:
        f.write(json.dumps({"t": time.time(), "pid": os.getpid(), "kind": kind, **fields}) + "\n")


def _timed(owner: Any, name: str, kind: str) -> None:
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.time()
        try:
            return original(*args, **kwargs)
        finally:
            event(kind, dt=time.time() - start)

    setattr(owner, name, wrapper)


def _patch_worker() -> None:
    if os.getpid() in _patched:
        return
    _patched.add(os.getpid())
    import search.trainable as trainable
    import trainers.data as data
    import trainers.loop as loop

    _timed(trainable, "_publish", "publish")
    _timed(trainable.TuneReporter, "_send", "tune_report")
    _timed(trainable.TuneReporter, "__call__", "report")
    _timed(data, "prepare_data", "prepare_data")
    _timed(loop, "_build_parts", "build_parts")
    _timed(loop, "_checkpoint", "trainer_checkpoint")
    _timed(loop, "write_trial_predictions", "write_predictions")
    original_flush = trainable.TuneReporter.flush

    def flush(self: Any) -> None:
        start = time.time()
        original_flush(self)
        event("flush", dt=time.time() - start)
        event("trial_done")

    trainable.TuneReporter.flush = flush


def probe_train(config: Any, report: Any, **kwargs: Any) -> Any:
    """``trainers.train`` with the worker's steps timed (the first call patches them)."""
    import psutil

    event("trial_enter", created=psutil.Process().create_time())
    _patch_worker()
    from trainers import train

    start = time.time()
    result = train(config, report, **kwargs)
    event("train", dt=time.time() - start)
    return result


#: Process roles by the program a process runs: Ray's binaries by name, its Python services
#: by script, its workers and agents by the process title Ray gives them on Linux (a reused
#: trial actor's is ``ray::ImplicitFunc``). Matched on the program, not the whole command
#: line: the raylet's arguments name the worker script.
_ROLES = {
    "ray::ImplicitFunc": "trial workers",
    "ray::wen_trial": "trial workers",  # Tune names the actor after the trainable
    "ray::IDLE": "idle Ray workers",
    "default_worker.py": "idle Ray workers",
    "raylet": "raylet",
    "gcs_server": "GCS server",
    "ray::DashboardAgent": "dashboard agent",
    "ray::RuntimeEnvAgent": "runtime-env agent",
    "dashboard.py": "dashboard",
    "ray-dashboard-": "dashboard",  # its modules' subprocesses
    "forkserver": "dashboard",  # the dashboard starts its modules through one
    "resource_tracker": "dashboard",
    "log_monitor.py": "log monitor",
    "monitor.py": "autoscaler monitor",
}


def _program(cmdline: list[str]) -> str:
    """What a process runs: a Ray process title, a Python script, or a binary's name."""
    if not cmdline:
        return ""
    head = cmdline[0]
    if head.startswith(("ray::", "ray-dashboard-")):
        return head
    if os.path.basename(head).startswith("python"):
        rest = [a for a in cmdline[1:] if not a.startswith("-")]
        script = next((a for a in rest if a.endswith(".py")), " ".join(cmdline[1:3]))
        return os.path.basename(script)
    return os.path.basename(head)


def _role(cmdline: list[str]) -> str:
    program = _program(cmdline)
    return next((role for word, role in _ROLES.items() if word in program), "other")


class CPUSampler:
    """CPU seconds (user + system) by process role while a search runs: the driver's since
    the sampler started, and every process the driver started (Ray's and the workers'),
    sampled every ``interval`` s so a process that ends before the search does keeps its
    last reading (under ``interval`` of its CPU uncounted)."""

    def __init__(self, interval: float = 1.0) -> None:
        import psutil

        self.interval = interval
        self.me = psutil.Process()
        self.start = self._cpu(self.me)
        self.last: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    @staticmethod
    def _cpu(proc: Any) -> float:
        times = proc.cpu_times()
        return times.user + times.system

    def sample(self) -> None:
        import psutil

        self.last[self.me.pid] = ("driver", self._cpu(self.me) - self.start)
        for proc in self.me.children(recursive=True):
            try:  # the role read each time: a pooled worker becomes a trial's actor
                self.last[proc.pid] = (_role(proc.cmdline()), self._cpu(proc))
            except psutil.Error:
                continue

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> CPUSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def by_role(self) -> dict[str, float]:
        used: dict[str, float] = defaultdict(float)
        for role, seconds in self.last.values():
            used[role] += seconds
        return dict(used)


@contextlib.contextmanager
def driver_probes(log: Path) -> Iterator[None]:
    """Time the driver's steps into ``log`` while the block runs; undo the patches after."""
    import ray
    from ray.tune.execution import experiment_state
    from ray.tune.execution.tune_controller import TuneController

    import search.run

    os.environ[LOG_ENV] = str(log)
    targets = [
        (search.run, "start_ray", "ray_start"),
        (ray, "shutdown", "ray_shutdown"),
        (TuneController, "save_to_dir", "experiment_snapshot"),
        (experiment_state._ExperimentCheckpointManager, "sync_up_experiment_state", "sync_up"),
        (TuneController, "_on_training_result", "driver_result"),
    ]
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in targets]
    try:
        for owner, name, kind in targets:
            _timed(owner, name, kind)
        with CPUSampler() as sampler:
            yield
        for role, seconds in sampler.by_role().items():
            event("process_cpu", role=role, cpu=seconds)
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)
        os.environ.pop(LOG_ENV, None)


def _read(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def process_cpu(log: Path) -> dict[str, float]:
    """CPU seconds by process role over the search (:class:`CPUSampler`)."""
    return {e["role"]: float(e["cpu"]) for e in _read(log) if e["kind"] == "process_cpu"}


def breakdown(log: Path, trials: int, epochs: int) -> dict[str, float]:
    """Per-trial (or per-epoch, or once) seconds of each step, from the probe log."""
    events = _read(log)
    total: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for e in events:
        if "dt" in e:
            total[e["kind"]] += e["dt"]
            count[e["kind"]] += 1
    by_pid: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        if e["kind"] in ("trial_enter", "trial_done"):
            by_pid[e["pid"]].append(e)
    starts, gaps = [], []
    for records in by_pid.values():
        records.sort(key=lambda e: e["t"])
        first = next(e for e in records if e["kind"] == "trial_enter")
        starts.append(first["t"] - first["created"])
        gaps += [b["t"] - a["t"] for a, b in zip(records, records[1:])
                 if a["kind"] == "trial_done" and b["kind"] == "trial_enter"]  # fmt: skip
    return {
        "workers": len(by_pid),
        "ray_start_s": total["ray_start"],
        "ray_shutdown_s": total["ray_shutdown"],
        "worker_start_s": sum(starts) / max(len(starts), 1),
        "setup_s": (total["prepare_data"] + total["build_parts"]) / trials,
        "report_s": (total["report"] - total["tune_report"]) / (trials * epochs),
        "tune_report_s": total["tune_report"] / (trials * epochs),
        "trainer_checkpoint_s": total["trainer_checkpoint"] / (trials * epochs),
        "predictions_s": total["write_predictions"] / trials,
        "publish_s": (total["publish"] + total["flush"]) / trials,
        "between_trials_s": sum(gaps) / max(len(gaps), 1),
        "snapshots": count["experiment_snapshot"],
        "snapshot_s": total["sync_up"],  # the snapshot (save_to_dir) and its sync
        "driver_result_s": total["driver_result"] / max(count["driver_result"], 1),
    }
