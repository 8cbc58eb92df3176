"""``run_search``: one search (or its resumption) from a validated config to the results table.

The run folder ``RUN = STORAGE/NAME`` holds everything: Tune's experiment state and each
trial's checkpoints, ``predictions/<trial_id>.parquet``, ``models/<trial_id>/``,
``tensorboard/<trial_id>/``, ``results.csv``/``.parquet``, the resolved ``config.yaml`` and
``command.txt`` (one line per invocation).
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
import yaml

from search.checks import load_wen_config
from search.config import WenConfig
from search.raycluster import (
    alive_nodes,
    resource_problems,
    start_ray,
    storage_problems,
)
from search.results import results_table, write_results
from search.schedulers import SCHEDULER_TRAITS, create_scheduler, cycle_epochs
from search.searchers import create_search_alg, tune_num_samples
from search.space import FOLD_KEY, build_param_space
from search.storage import RunStorage
from search.trainable import TrainFn, TrialSpec, fault_epoch_from_env, make_trainable
from trainers.errors import WenError
from trainers.run_layout import RUN_LAYOUT

__all__ = [
    "SearchError",
    "SearchOutcome",
    "absolute_env_paths",
    "checkpoints_by_reference",
    "load_search_config",
    "resume_differences",
    "run_search",
    "trial_dirname",
]

_GIB = 1024**3
#: Prediction temp files (trainers.predictions writes `.`-prefixed names, then renames).
_TEMP = re.compile(r"^\..*")
#: Tune's own temporary files in the experiment folder (``ray.tune.search.Searcher.save_to_dir``
#: and ``ray.tune.utils.util._atomic_save`` write ``.<uuid4>-tmp-<name>``, then rename): a
#: driver killed mid-write leaves one behind.
_TUNE_TEMP = re.compile(r"^\.[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}-tmp-")


class SearchError(WenError, RuntimeError):
    """A search cannot start or resume; the message says why and what to do."""


@dataclass
class SearchOutcome:
    """What a finished search left behind."""

    run: RunStorage
    results: pd.DataFrame
    errors: int


def trial_dirname(trial: Any) -> str:
    """Short trial folder names (Tune's default embeds every searched value)."""
    return f"trial_{trial.trial_id}"


def _spec(config: WenConfig, run: RunStorage, train_fn_path: str) -> TrialSpec:
    searched = list(config.search.space)
    if config.search.folds and config.search.algorithm != "optuna":
        searched.append(FOLD_KEY)
    return TrialSpec(
        base=config.trial_part().model_dump(mode="json"),
        storage=run.storage,
        name=run.name,
        metric=config.search.metric,
        mode=config.search.mode,
        cycle_epochs=cycle_epochs(config.schedule),
        folds=list(config.search.folds) if config.search.folds else None,
        cpus=config.search.resources.cpus,
        tensorboard=config.search.tensorboard,
        fault_epoch=fault_epoch_from_env(),
        train_fn=train_fn_path,
        searched=searched,
        checkpoint_by_reference=checkpoints_by_reference(config, run),
    )


def checkpoints_by_reference(config: WenConfig, run: RunStorage) -> bool:
    """Whether Tune's checkpoints name the trainer's checkpoints in RUN instead of holding a
    copy (``search.trainable.TuneReporter``): local storage, a scheduler that never starts a
    trial from another trial's checkpoint (PBT does)."""
    return run.local and not SCHEDULER_TRAITS[config.search.scheduler.name].copies_checkpoints


def resume_differences(
    saved: dict[str, Any], current: dict[str, Any], prefix: str = ""
) -> list[str]:
    """Dotted keys whose values differ between two resolved configs."""
    keys = sorted(set(saved) | set(current))
    out: list[str] = []
    for key in keys:
        a, b = saved.get(key), current.get(key)
        dotted = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += resume_differences(a, b, dotted + ".")
        elif a != b:
            out.append(dotted)
    return out


def _prepare_run(config: WenConfig, run: RunStorage, resume: bool, command: str) -> None:
    from ray.tune import Tuner

    exists = Tuner.can_restore(run.uri)
    if resume and not exists:
        raise SearchError(
            f"--resume: {run.uri} holds no search to resume: run without --resume to start it"
        )
    if not resume and exists:
        raise SearchError(
            f"{run.uri} already holds a search: pass --resume to continue it, or --name NAME "
            "to start another"
        )
    current = config.model_dump(mode="json")
    current["search"]["storage"] = run.storage  # --storage replaces search.storage
    if resume and run.exists(RUN_LAYOUT.config):
        saved = yaml.safe_load(run.read_text(RUN_LAYOUT.config)) or {}
        changed = resume_differences(saved, current)
        if changed:
            raise SearchError(
                f"--resume: the config differs from the one the search started with "
                f"({posixpath.join(run.uri, RUN_LAYOUT.config)}) at {', '.join(changed)}; Tune cannot change a search "
                "mid-way: resume with the same config and --set values, or start a new run "
                "with --name"
            )
    try:
        run.makedirs()
        run.makedirs(RUN_LAYOUT.predictions)
    except OSError as exc:  # checked before Ray starts, so no trial ever runs
        raise SearchError(
            f"search.storage: cannot create the run folder {run.uri} ({exc}): pass a writable "
            "folder (or an s3:// / gs:// URI) with --storage or search.storage"
        ) from None
    if not resume:
        run.write_text(RUN_LAYOUT.config, yaml.safe_dump(current, sort_keys=False))
    run.append_text(RUN_LAYOUT.command, command.rstrip("\n") + "\n")


def _check_dataset(config: WenConfig, say: Callable[[str], None]) -> None:
    """Check the config against the dataset on the driver (:mod:`search.preflight`)."""
    from search.preflight import plan_dataset

    plan = plan_dataset(config)
    for note in plan.notes:
        say(f"note: {note}")
    if plan.problems:
        raise SearchError(
            "the search cannot start: the config does not fit the dataset or the weight "
            "caches:\n  - " + "\n  - ".join(plan.problems)
        )


def _check_cluster(config: WenConfig, run: RunStorage) -> None:
    nodes = alive_nodes()
    problems = resource_problems(config.search.resources, config.train, nodes)
    problems += storage_problems(run, nodes)
    if problems:
        raise SearchError("the search cannot start:\n  - " + "\n  - ".join(problems))


def _reporter(config: WenConfig, total: int) -> Any:
    from ray.tune import CLIReporter

    settings = config.search
    params = {k: k.split(".")[-1] for k in settings.space}
    metrics = {"epoch": "epoch", settings.metric: settings.metric, "val_loss": "val_loss"}
    if settings.folds:
        metrics["fold"] = "fold"  # reported by the trainable (a Repeater index under Optuna)
    metrics["node_ip"] = "node"
    return CLIReporter(
        parameter_columns=params,
        metric_columns=metrics,
        total_samples=total,
        max_report_frequency=int(settings.report_every_s),
        metric=settings.metric,
        mode=settings.mode,
        sort_by_metric=True,
        max_column_length=20,
    )


def _select_key(config: WenConfig) -> str:
    select = config.train.select_metric
    return "val_loss" if select == "loss" else f"val_{select}"


def _tuner(
    config: WenConfig, run: RunStorage, trainable: Any, resume: bool, ray_dashboard: str | None
) -> Any:
    from ray import tune

    from search._tune_reuse import install as retry_dead_reused_workers
    from search.live import LiveFeed

    # reuse_actors below: a reused worker that died is retried, not the trial's end
    retry_dead_reused_workers()
    if resume:
        # resume_errored: errored trials continue from their last checkpoint;
        # finished trials are never re-run; the searcher's state is restored from RUN
        return tune.Tuner.restore(run.uri, trainable, resume_errored=True, restart_errored=False)
    settings = config.search
    total = tune_num_samples(settings)
    return tune.Tuner(
        trainable,
        param_space=build_param_space(settings),
        tune_config=tune.TuneConfig(
            search_alg=create_search_alg(settings),
            scheduler=create_scheduler(config),
            num_samples=total,
            reuse_actors=True,
            trial_dirname_creator=trial_dirname,
            trial_name_creator=trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=run.name,
            storage_path=run.storage,
            failure_config=tune.FailureConfig(max_failures=settings.max_failures),
            # Tune keeps the latest checkpoint plus the best ones by the trainer's own
            # selection metric, so a trial resumed anywhere finds its best epoch again
            # (by reference Tune's checkpoints are a record each, all kept: a driver restored
            # from an older experiment snapshot still finds the one it names)
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=None
                if checkpoints_by_reference(config, run)
                else settings.checkpoints_to_keep,
                checkpoint_score_attribute=_select_key(config),
                checkpoint_score_order="min" if config.train.select_metric == "loss" else "max",
            ),
            progress_reporter=_reporter(config, total),
            # the run's live state for `wen dashboard` (restored with the run config on --resume)
            callbacks=[LiveFeed(config, run, ray_dashboard)],
            verbose=1,
        ),
    )


def _remove_partial_predictions(run: RunStorage) -> list[str]:
    """Delete temp prediction files a killed trial left, and Tune's temporary files a killed
    driver left in the run folder (every trial has finished now)."""
    removed = []
    for folder, pattern in ((RUN_LAYOUT.predictions, _TEMP), (RUN_LAYOUT.snapshots, _TEMP),
                            ("", _TUNE_TEMP)):  # fmt: skip
        for name in run.list(folder):
            if pattern.match(name):
                run.delete_file(posixpath.join(folder, name))
                removed.append(posixpath.join(folder, name))
    return removed


def _stems(run: RunStorage, folder: str) -> list[str]:
    """The names of the visible prediction files in ``folder``, without ``.parquet``."""
    return [
        n.removesuffix(".parquet")
        for n in run.list(folder)
        if n.endswith(".parquet") and not n.startswith((".", "_"))
    ]


def _set_aside_orphans(run: RunStorage, frame: pd.DataFrame) -> list[str]:
    """Move prediction files (and snapshots) of trials missing from the results table away.

    Tune's restore is at-least-once: a trial started after the last experiment snapshot
    comes back under a new id, and the old id's files are orphans. A snapshot belongs to
    the trial its id starts with (``<trial_id>@e<epoch>``).
    """
    known = set(frame["trial_id"].astype(str)) if not frame.empty else set()
    orphans = [t for t in _stems(run, RUN_LAYOUT.predictions) if t not in known]
    snapshots = [s for s in _stems(run, RUN_LAYOUT.snapshots) if s.rpartition("@e")[0] not in known]
    if orphans or snapshots:  # readers skip ``_``-prefixed names: only known trials are read
        run.makedirs(RUN_LAYOUT.orphans)
    for trial in orphans:
        run.fs.move(run.join(RUN_LAYOUT.prediction(trial)), run.join(RUN_LAYOUT.orphan(trial)))
    if snapshots:
        run.makedirs(RUN_LAYOUT.orphan_snapshots)
    for sid in snapshots:
        target = posixpath.join(RUN_LAYOUT.orphan_snapshots, f"{sid}.parquet")
        run.fs.move(run.join(RUN_LAYOUT.snapshot(sid)), run.join(target))
    return orphans + snapshots


#: Environment variables naming local folders that trial processes read (the wen cache,
#: the Hugging Face and torch hub caches of pretrained weights).
PATH_ENV_VARS = ("WEN_CACHE_DIR", "HF_HOME", "HF_HUB_CACHE", "TORCH_HOME")


def absolute_env_paths(environ: dict[str, str] | os._Environ[str] = os.environ) -> list[str]:
    """Make the cache folders in ``environ`` absolute, as config paths are; return the names.

    Ray starts trial processes with this environment but in their own working folders, where
    a relative ``HF_HOME=cache/hf`` would name another, empty folder.
    """
    changed = []
    for name in PATH_ENV_VARS:
        value = environ.get(name)
        if value and not os.path.isabs(os.path.expanduser(value)):
            environ[name] = os.path.abspath(os.path.expanduser(value))
            changed.append(name)
    return changed


def _tune_environment() -> None:
    """Tune's settings that only environment variables reach."""
    # Tune's new console output ignores a ProgressReporter; the classic table is concise
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    # every epoch checkpoints, so Tune's "snapshotting too often" warning would fire constantly
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Tune's restore knows only the trials of its last experiment snapshot (by default taken
    # every 10 s or more): a trial that finished after it runs again after a driver crash.
    # A snapshot a second at most keeps that window short; it is a few small files.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")


def _trial_resources(config: WenConfig) -> dict[str, float]:
    """What Ray reserves for each trial (``search.resources``)."""
    resources: dict[str, float] = {
        "cpu": config.search.resources.cpus,
        "gpu": config.search.resources.gpus,
    }
    if config.search.resources.memory_gb:
        resources["memory"] = config.search.resources.memory_gb * _GIB
    return resources


def _tidy_predictions(run: RunStorage, frame: Any, say: Callable[[str], None]) -> None:
    """Remove killed trials' partial prediction files; set aside those of unknown trials."""
    removed = _remove_partial_predictions(run)
    if removed:
        say(f"removed {len(removed)} partial file(s) left by killed trials or drivers")
    orphans = _set_aside_orphans(run, frame)
    if orphans:
        say(
            f"moved {len(orphans)} prediction file(s) of trials the restored search does not "
            f"know (started after its last snapshot, then re-run) to {run.join(RUN_LAYOUT.orphans)}: "
            + ", ".join(orphans)
        )


def run_search(
    config: WenConfig,
    *,
    storage: str,
    name: str,
    address: str | None = None,
    resume: bool = False,
    command: str = "",
    num_cpus: int | None = None,
    train_fn: TrainFn | None = None,
    train_fn_path: str = "trainers:train",
    say: Callable[[str], None] = print,
) -> SearchOutcome:
    """Run (or resume) the search ``config.search`` describes; write the results table.

    ``train_fn`` replaces the trial function (tests); ``num_cpus`` caps a Ray started here.
    """
    import ray

    run = RunStorage.open(storage, name)
    _check_dataset(config, say)
    _prepare_run(config, run, resume, command)
    say(f"run folder: {run.uri}")
    _tune_environment()
    absolute_env_paths()
    session = start_ray(
        address, dashboard_port=config.search.dashboard_port, num_cpus=num_cpus, say=say
    )
    try:
        _check_cluster(config, run)
        from ray import tune

        trainable = tune.with_resources(
            make_trainable(_spec(config, run, train_fn_path), train_fn), _trial_resources(config)
        )
        grid = _tuner(config, run, trainable, resume, session.dashboard_url).fit()
        frame = results_table(grid, config, run)
        write_results(frame, run)
        _tidy_predictions(run, frame, say)
        errors = int((frame["status"] == "ERROR").sum()) if not frame.empty else 0
        say(f"results: {run.join(RUN_LAYOUT.results_csv)} ({len(frame)} trials, {errors} errored)")
        return SearchOutcome(run=run, results=frame, errors=errors)
    finally:
        if session.started_here:
            ray.shutdown()


def load_search_config(source: str, overrides: list[str] | None) -> WenConfig:
    """Read and validate a whole-run config (search space values included)."""
    return load_wen_config(source, overrides)
