"""``wen search``: a distributed search on Ray Tune (``--dashboard`` serves the live page beside it)."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from search.cli._app import app, fail
from search.presets import config_path
from trainers.errors import WenError
from trainers.run_layout import RUN_LAYOUT

__all__ = ["search"]


def _dry_run(config: object, storage: str, name: str) -> None:
    from search.config import WenConfig
    from search.schedulers import cycle_epochs, rung_epochs
    from search.space import describe_space

    assert isinstance(config, WenConfig)
    settings = config.search
    for line in describe_space(settings):
        typer.echo(line)
    res = settings.resources
    memory = f", {res.memory_gb:g} GiB memory" if res.memory_gb else ""
    typer.echo(f"each trial needs: {res.cpus:g} CPU, {res.gpus:g} GPU{memory}")
    sched = settings.scheduler
    line = f"scheduler: {sched.name}"
    rungs = rung_epochs(config)
    if rungs:
        line += f" (rungs at epochs {', '.join(f'{r:g}' for r in rungs)}; LR cycle {cycle_epochs(config.schedule):g} epochs)"
    typer.echo(line)
    gpus = 0
    try:
        import torch

        gpus = torch.cuda.device_count()
    except ImportError:  # pragma: no cover
        pass
    cpus = os.cpu_count() or 1
    fit = int(min(cpus // max(res.cpus, 1e-9), (gpus // res.gpus) if res.gpus else 1e9))
    typer.echo(f"this machine: {cpus} CPU, {gpus} GPU -> up to {max(fit, 0)} concurrent trial(s)")
    if res.gpus and not gpus:
        typer.echo(
            "note: trials ask for GPUs and this machine has none; join a GPU cluster with --address"
        )
    from search.storage import resolve_storage

    typer.echo(f"run folder: {resolve_storage(storage).rstrip('/')}/{name}")
    from search.preflight import plan_dataset

    plan = plan_dataset(config)
    for line in plan.lines():
        typer.echo(line)
    if plan.problems:
        raise fail(
            "the config does not fit the dataset or the weight caches:\n  - "
            + "\n  - ".join(plan.problems)
        )


def _load_smoke(config: Path, overrides: list[str] | None) -> object:
    """The preset in smoke mode, announced loudly (every swapped backbone named)."""
    from search.smoke import load_smoke_config, smoke_trials

    smoke = load_smoke_config(str(config), overrides)
    cfg = smoke.config
    layout = cfg.data.synthetic.layout if cfg.data.synthetic else "real"
    typer.secho(
        f"SMOKE MODE: synthetic {layout} data, {cfg.data.input_size} px inputs, "
        f"{cfg.train.epochs} epoch(s) of at most {cfg.train.max_steps_per_epoch} steps, no "
        f"pretrained weights, CPU, {smoke_trials(cfg)} trial(s). It checks the pipeline, not "
        "the study's numbers.",
        fg=typer.colors.YELLOW,
        bold=True,
    )
    for note in smoke.notes:
        typer.secho(note, fg=typer.colors.YELLOW, bold=True)
    return cfg


# long: typer declares each of the command's options in its signature
@app.command("search")
def search(
    config: Annotated[
        Path,
        typer.Argument(
            help="YAML config (the trial plus a `search:` section), or a shipped preset's name "
            "(demo, smoke, mondal2021, fata2023, jawahar2022, alim2024)."
        ),
    ],
    storage: Annotated[
        str | None,
        typer.Option(
            help="Run storage: a local path or s3:// / gs:// URI (default: search.storage)."
        ),
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Run name; RUN = STORAGE/NAME (default: the config's name).")
    ] = None,
    address: Annotated[
        str | None,
        typer.Option(
            help="Join a running Ray cluster: auto or HOST:PORT (default: start Ray here)."
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume", help="Continue the search in RUN (killed driver or errored trials)."
        ),
    ] = False,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a config key: --set train.epochs=3 (repeatable)."),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Print the expanded space and per-trial resources; run nothing."
        ),
    ] = False,
    dashboard: Annotated[
        bool,
        typer.Option(
            "--dashboard",
            help="Serve `wen dashboard` on this run beside the search (127.0.0.1) and print "
            "its address.",
        ),
    ] = False,
    dashboard_port: Annotated[
        int, typer.Option(help="Port of --dashboard (the next free one if taken).")
    ] = 8600,
    smoke: Annotated[
        bool,
        typer.Option(
            "--smoke",
            help="Smoke mode: the preset shrunk to a few CPU minutes on synthetic data in its own "
            "layout (small inputs, 2 short epochs, no pretrained weights, few trials); "
            "--set applies after it.",
        ),
    ] = False,
) -> None:
    """Search the configured space on Ray Tune; write RUN/results.csv and every trial's predictions."""
    from search.run import load_search_config, run_search

    config, note = config_path(config)
    if note:
        typer.echo(f"note: {note}")
    try:
        cfg = (
            _load_smoke(config, overrides) if smoke else load_search_config(str(config), overrides)
        )
    except (WenError, ValueError) as err:
        raise fail(str(err)) from None
    store = storage or cfg.search.storage
    run_name = name or cfg.name
    if dry_run:
        try:
            _dry_run(cfg, store, run_name)
        except WenError as err:
            raise fail(str(err)) from None
        return
    args = sys.argv[1:]
    if args[:1] != ["search"]:  # run as `python -m ...` or from a test runner
        args = ["search", str(config), *args]
    command = "wen " + shlex.join(args)
    board = _start_dashboard(store, run_name, dashboard_port) if dashboard else None
    try:
        outcome = run_search(
            cfg, storage=store, name=run_name, address=address, resume=resume, command=command
        )
    except WenError as err:
        raise fail(str(err)) from None
    finally:
        if board is not None:
            board.stop()
            typer.echo(
                f"wen dashboard stopped with the search; `wen dashboard {store}` serves it again"
            )
    if outcome.errors:
        raise fail(
            f"{outcome.errors} trial(s) errored; see {outcome.run.join(RUN_LAYOUT.results_csv)}",
            code=1,
        )


def _start_dashboard(storage: str, name: str, port: int) -> object:
    """``wen dashboard`` on the run this search writes, in a thread of this process."""
    from search.cli.dashboard import open_runs
    from search.raycluster import free_port
    from reports.dashboard import create_app, serve

    chosen = free_port(port)
    board = serve(create_app(lambda: open_runs(storage, name)), port=chosen, background=True)
    typer.echo(f"wen dashboard: {board.url} (the live page of this search; read-only)")
    return board
