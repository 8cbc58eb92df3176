"""``wen demo``: synthetic data -> search -> ensemble -> export -> report, in a few CPU minutes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from search.cli._app import app, fail
from trainers.errors import WenError

__all__ = ["demo"]


@app.command("demo")
def demo(
    out: Annotated[
        Path, typer.Option(help="Folder for the demo: DIR/data, DIR/run (must not hold a run yet).")
    ] = Path("demo"),
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="Override a key of configs/demo.yaml: --set train.epochs=4 (repeatable)."
        ),
    ] = None,
    gradcam: Annotated[
        bool, typer.Option("--gradcam/--no-gradcam", help="Grad-CAM maps in the report.")
    ] = True,
) -> None:
    """Run the whole pipeline on a synthetic C-NMC dataset on this machine (local Ray, CPU):
    search 5 backbones x 2 augmentations with ASHA, fit and compare the ensembles, export the
    chosen one to ONNX, write the report; print the test table and whether the ensembles won."""
    from search.demo import run_demo

    start = time.monotonic()
    try:
        result = run_demo(out, overrides, gradcam=gradcam, say=typer.echo)
    except (WenError, FileExistsError, RuntimeError) as err:
        raise fail(str(err)) from None
    total = time.monotonic() - start
    typer.echo("")
    typer.secho(
        "Test set (labelled preliminary test), 95% subject-bootstrap intervals; "
        "* = chosen on validation:",
        bold=True,
    )
    for line in result.table:
        typer.echo("  " + line)
    for line in result.ceiling:
        typer.echo(line)
    typer.echo("")
    typer.echo(result.verdict)
    steps = ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items())
    typer.echo(f"time: {total:.0f} s ({steps})")
    typer.echo(f"model:  {result.onnx} (+ manifest.json)")
    typer.secho(f"report: {result.report}", bold=True)
