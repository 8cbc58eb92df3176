"""Ensemble-stage benchmarks: Optuna weight search and the subject bootstrap.

Figures (``run() -> list[dict]``):
- 1,000 Optuna weight trials over 5 members x 10,000 samples (target <= 10 s on 2 cores), with
  the default sampler (multivariate TPE) and the random sampler (the sampler-free floor);
  CMA-ES as well when the ``cmaes`` package is installed;
- growth: one objective evaluation for 5/20/50 members x 10k/100k samples, and 200 TPE trials
  for 5/20/50 members (TPE's own cost grows with trials and dimensions, the objective's with
  members x samples);
- SQLite storage overhead per trial (the study file that makes a run resumable);
- 1,000 subject-bootstrap resamples of every metric for one method (target <= 5 s).

``WEN_BENCH_QUICK=1`` runs smaller versions (fewer trials and resamples).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ensemble.methods import OptunaWeights
from ensemble.objective import WeightObjective
from ensemble.stats import bootstrap_metrics

QUICK = os.environ.get("WEN_BENCH_QUICK", "") not in ("", "0")


def _members(k: int, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """k members' binary probabilities for n samples, each with its own skill."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    skill = np.linspace(1.5, 0.3, k)[:, None]
    margin = skill * (2 * y - 1)[None, :] + rng.normal(0, 1, (k, n))
    p1 = 1.0 / (1.0 + np.exp(-margin))
    return np.stack([1 - p1, p1], axis=2), y


def _row(name: str, value: float, unit: str, target: str = "", note: str = "") -> dict[str, Any]:
    return {"name": name, "value": float(value), "unit": unit, "target": target, "note": note}


def _time_study(
    P: np.ndarray, y: np.ndarray, n_trials: int, sampler: str, storage: str | None = None
) -> float:
    method = OptunaWeights(
        objective="logloss",
        n_trials=n_trials,
        sampler=sampler,
        seed=0,
        storage=storage,
        study_name="bench" if storage else None,
    )
    start = time.perf_counter()
    method.fit(P, y)
    return time.perf_counter() - start


def bench_optuna() -> list[dict[str, Any]]:
    n_trials = 200 if QUICK else 1000
    P, y = _members(5, 10_000)
    rows = []
    for sampler in ("tpe", "random", "cmaes"):
        if sampler == "cmaes":
            try:
                import cmaes  # noqa: F401
            except ImportError:
                rows.append(
                    _row(
                        f"optuna_{n_trials}_trials_5x10000_cmaes",
                        float("nan"),
                        "s",
                        "<= 10",
                        "not run: the `cmaes` package is not installed",
                    )
                )
                continue
        seconds = _time_study(P, y, n_trials, sampler)
        rows.append(
            _row(
                f"optuna_{n_trials}_trials_5x10000_{sampler}",
                seconds,
                "s",
                "<= 10" if n_trials == 1000 else "",
                f"{sampler} sampler, in-memory study, logloss objective; "
                f"{1e3 * seconds / n_trials:.1f} ms/trial",
            )
        )
    return rows


def bench_growth() -> list[dict[str, Any]]:
    rows = []
    rng = np.random.default_rng(1)
    for k in (5, 20, 50):
        for n in (10_000, 100_000):
            P, y = _members(k, n)
            for metric in ("logloss", "wfs"):
                objective = WeightObjective(P, y, metric)
                times = []
                for w in rng.dirichlet(np.ones(k), 15):
                    start = time.perf_counter()
                    objective.score(w)
                    times.append(time.perf_counter() - start)
                rows.append(
                    _row(
                        f"objective_eval_{metric}_{k}x{n}",
                        1e3 * np.median(times),
                        "ms",
                        note="one weight vector scored, median of 15 (vectorised numpy)",
                    )
                )
    n_trials = 50 if QUICK else 200
    for k in (5, 20, 50):
        P, y = _members(k, 10_000)
        seconds = _time_study(P, y, n_trials, "tpe")
        rows.append(
            _row(
                f"optuna_{n_trials}_trials_{k}x10000_tpe",
                seconds,
                "s",
                note=f"growth with members; {1e3 * seconds / n_trials:.1f} ms/trial",
            )
        )
    return rows


def bench_storage() -> list[dict[str, Any]]:
    """What keeping the study in SQLite costs: opening it, and copying finished trials."""
    import optuna

    from ensemble.methods import open_storage

    P, y = _members(5, 10_000)
    n_trials = 50 if QUICK else 200
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(WeightObjective(P, y, "logloss"), n_trials=n_trials)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        stored = optuna.create_study(
            storage=open_storage(f"sqlite:///{Path(tmp) / 's.db'}"), study_name="bench"
        )
        opened = time.perf_counter() - start
        start = time.perf_counter()
        stored.add_trials(study.trials)
        copied = time.perf_counter() - start
    return [
        _row("optuna_sqlite_open", opened, "s", note="create the SQLite study (schema, WAL)"),
        _row(
            "optuna_sqlite_copy_per_trial",
            1e3 * copied / n_trials,
            "ms",
            note=f"copying {n_trials} finished trials into SQLite (done every 50 trials)",
        ),
    ]


def bench_bootstrap() -> list[dict[str, Any]]:
    n_boot = 200 if QUICK else 1000
    P, y = _members(1, 10_000)
    subjects = np.array([f"s{i % 100}" for i in range(10_000)], dtype=object)
    y = np.array([i % 100 % 2 for i in range(10_000)])  # each subject has one class
    start = time.perf_counter()
    bootstrap_metrics(y, P[0], subjects, ["hem", "all"], n_boot=n_boot, seed=0)
    seconds = time.perf_counter() - start
    return [
        _row(
            f"subject_bootstrap_{n_boot}_all_metrics",
            seconds,
            "s",
            "<= 5" if n_boot == 1000 else "",
            "10,000 cells of 100 subjects, all 9 metrics incl. AUC, stratified",
        )
    ]


def run() -> list[dict[str, Any]]:
    """Every ensemble benchmark figure."""
    return bench_optuna() + bench_growth() + bench_storage() + bench_bootstrap()


if __name__ == "__main__":
    for r in run():
        print(f"{r['name']:45s} {r['value']:10.3f} {r['unit']:3s} {r['target']:6s} {r['note']}")
