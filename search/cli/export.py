"""``wen export RUN`` and ``wen predict MODEL_DIR PATH...``: ship the ensemble and use it."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from search.cli._app import app, fail
from trainers._atomic import atomic_write_text
from trainers.errors import WenError

__all__ = ["export_command", "predict_command"]


@app.command("export")
def export_command(
    run: Path = typer.Argument(..., help="Run folder with ensemble/ (written by `wen ensemble`)."),
    method: str | None = typer.Option(
        None, help="Ensemble method to export (default: the chosen one in chosen.json)."
    ),
    out: Path | None = typer.Option(None, help="Model folder to write (default: RUN/model)."),
) -> None:
    """Export an ensemble as one model folder: manifest.json (classes, pre-processing, members,
    weights, metrics with intervals, versions), each member's safetensors, ensemble.onnx
    (dynamic batch) and ensemble.pt (TorchScript), checked against PyTorch within 1e-4."""
    from ensemble.export import export_ensemble

    try:
        export_ensemble(run, method, out, say=typer.echo)
    except WenError as exc:
        raise fail(str(exc)) from None


@app.command("predict")
def predict_command(
    model_dir: Path = typer.Argument(..., help="Model folder written by `wen export`."),
    paths: list[Path] = typer.Argument(..., help="Image files and/or folders (recursive)."),
    out: Path | None = typer.Option(None, help="CSV to write (default: print CSV to stdout)."),
    backend: str = typer.Option("onnx", help="onnx (onnxruntime) or torch (eager PyTorch)."),
    batch_size: int = typer.Option(32, "--batch-size", help="Images per forward pass."),
    skip_bad: bool = typer.Option(
        False, "--skip-bad", help="Leave unreadable images out and exit 0 (they are listed)."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar."),
) -> None:
    """One CSV row per image: path, each class's probability, the predicted class and an error
    column. Unreadable images (not an image, truncated, decompression bomb) keep a row with
    the error and make the exit code 1, unless --skip-bad."""
    from ensemble.export import read_manifest
    from ensemble.predict import predict_images

    try:
        table = predict_images(
            model_dir, paths, backend, batch_size=batch_size, skip_bad=False, progress=progress
        )
        typer.echo(f"decision: {read_manifest(model_dir)['decision']}", err=True)
    except (WenError, ValueError) as exc:
        raise fail(str(exc)) from None
    bad = table[table["error"].notna()]
    for message in bad["error"]:
        typer.secho(
            f"{'skipped' if skip_bad else 'error'}: {message}",
            fg=typer.colors.YELLOW if skip_bad else typer.colors.RED,
            err=True,
        )
    if skip_bad:
        table = table[table["error"].isna()]
    if out is None:
        table.to_csv(sys.stdout, index=False)
    else:
        atomic_write_text(out, table.to_csv(index=False), what="predictions CSV")
        typer.echo(
            f"{len(table) - (0 if skip_bad else len(bad))} image(s) predicted -> {out}", err=True
        )
    if len(bad) and not skip_bad:
        raise fail(
            f"{len(bad)} of {len(table)} image(s) could not be read (listed above; their "
            "rows have an error); fix or remove them, or pass --skip-bad",
            code=1,
        )
