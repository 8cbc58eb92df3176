"""``wen dashboard`` (the live page of a run or a storage of runs) and ``wen tensorboard``."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from search.cli._app import app, fail
from trainers.run_layout import RUN_LAYOUT

__all__ = ["dashboard", "open_runs", "tensorboard"]


def _is_run(storage: object, name: str) -> bool:
    from search.storage import RunStorage, StorageError

    try:
        return RunStorage.open(str(storage), name).exists(RUN_LAYOUT.config)
    except StorageError:  # not a plain folder name: not a run
        return False


def open_runs(location: str, name: str | None = None) -> dict[str, object]:
    """The runs at ``location``: the run itself when it holds ``config.yaml``, else every
    run folder directly inside it (a storage), by name; ``name`` picks one run of a storage."""
    import posixpath

    import pyarrow.fs as pafs

    from search.storage import RunStorage, is_uri, resolve_storage

    base = location if is_uri(location) else resolve_storage(location)
    if name is not None:
        return {name: RunStorage.open(base, name)}
    parent, leaf = posixpath.split(base.rstrip("/"))
    if leaf and _is_run(parent or "/", leaf):
        return {leaf: RunStorage.open(parent or "/", leaf)}
    if is_uri(base):
        fs, path = pafs.FileSystem.from_uri(base)
    else:
        fs, path = pafs.LocalFileSystem(), base
    selector = pafs.FileSelector(path, allow_not_found=True, recursive=False)
    names = [
        info.base_name
        for info in fs.get_file_info(selector)
        if info.type == pafs.FileType.Directory and not info.base_name.startswith((".", "_"))
    ]
    return {n: RunStorage.open(base, n) for n in sorted(names) if _is_run(base, n)}


def _links() -> dict[str, str]:
    """Where the other views usually listen (started with their own commands)."""
    return {
        "TensorBoard (wen tensorboard RUN)": "http://127.0.0.1:6006/",
        "optuna-dashboard (weights study)": "http://127.0.0.1:8080/",
    }


@app.command("dashboard")
def dashboard(
    location: Annotated[
        str,
        typer.Argument(
            help="A run folder (RUN) or a storage folder holding runs: a local path or "
            "s3:// / gs:// URI."
        ),
    ],
    port: Annotated[int, typer.Option(help="Port (the next free one if taken).")] = 8600,
    host: Annotated[
        str,
        typer.Option(
            help="Address to listen on. Anything but 127.0.0.1 exposes the page (data paths, "
            "configs) to the network: a warning is printed."
        ),
    ] = "127.0.0.1",
) -> None:
    """Serve the live, read-only page of a run (trials, rungs, curves, ensemble) until Ctrl-C."""
    from reports.dashboard import LOOPBACK, create_app, serve
    from search.raycluster import free_port
    from search.storage import StorageError, is_uri

    if not is_uri(location) and not Path(location).expanduser().is_dir():
        raise fail(
            f"{location!r} does not exist; pass the RUN folder `wen search` printed, or the "
            "storage folder holding runs"
        )
    try:
        runs = open_runs(location)
    except (StorageError, OSError, ValueError) as err:
        raise fail(f"cannot read {location!r}: {err}") from None
    if not runs:
        typer.echo(f"note: no run in {location} yet (a run folder holds config.yaml); watching")
    if host != LOOPBACK:
        typer.echo(
            f"warning: --host {host} serves the page beyond this machine; it shows data paths "
            "and configs, and has no login. Use it only on a network you trust.",
            err=True,
        )
    chosen = free_port(port, host if host != "0.0.0.0" else LOOPBACK)
    if chosen != port:
        typer.echo(f"port {port} on {host} is taken; the dashboard uses {chosen}")
    app_ = create_app(lambda: open_runs(location), links=_links())
    typer.echo(
        f"wen dashboard: http://{host}:{chosen}/ ({len(runs)} run(s) in {location}); Ctrl-C stops it"
    )
    sys.stdout.flush()
    serve(app_, host=host, port=chosen)


@app.command("tensorboard")
def tensorboard(
    run: Annotated[
        str, typer.Argument(help="A run folder (local path or URI) written by `wen search`.")
    ],
    port: Annotated[
        int, typer.Option(help="TensorBoard port on 127.0.0.1 (next free if taken).")
    ] = 6006,
) -> None:
    """Serve TensorBoard (scalars and the HParams comparison) on a run's trials, on 127.0.0.1."""
    from search.raycluster import free_port
    from search.storage import is_uri

    logdir = run
    if not is_uri(run):
        root = Path(run).expanduser()
        if not root.is_dir():
            raise fail(
                f"run folder {run!r} does not exist; pass the RUN folder `wen search` printed"
            )
        events = root / RUN_LAYOUT.tensorboard
        logdir = str(events) if events.is_dir() else str(root)
    else:
        logdir = run.rstrip("/") + "/" + RUN_LAYOUT.tensorboard
    chosen = free_port(port)
    if chosen != port:
        typer.echo(f"port {port} on 127.0.0.1 is taken; TensorBoard uses {chosen}")
    from tensorboard import program

    board = program.TensorBoard()
    board.configure(argv=[None, "--logdir", logdir, "--host", "127.0.0.1", "--port", str(chosen)])
    url = board.launch()
    typer.echo(f"TensorBoard: {url} (logs: {logdir}); Ctrl-C stops it")
    sys.stdout.flush()
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        typer.echo("stopped")
