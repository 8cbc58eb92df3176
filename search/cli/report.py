"""``wen report RUN``: the run's Markdown and self-contained HTML report, figures and tables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from search.cli._app import app, fail

__all__ = ["report"]


@app.command("report")
def report(
    run: Annotated[
        Path, typer.Argument(help="A run folder written by `wen search` (and `wen ensemble`).")
    ],
    out: Annotated[Path | None, typer.Option(help="Report folder (default: RUN/report).")] = None,
    gradcam: Annotated[
        bool,
        typer.Option(
            "--gradcam/--no-gradcam", help="Draw Grad-CAM maps of members and the ensemble."
        ),
    ] = True,
    gradcam_images: Annotated[
        int, typer.Option(min=1, help="Test cells shown with Grad-CAM (most members wrong first).")
    ] = 6,
    device: Annotated[str, typer.Option(help="Device for Grad-CAM: cpu, cuda or auto.")] = "auto",
) -> None:
    """Write RUN/report/report.md, report.html (self-contained), figures/*.png and tables/*.csv|.tex."""
    if not run.is_dir():
        raise fail(
            f"run folder {str(run)!r} does not exist; pass the RUN folder `wen search` printed"
        )
    if device not in ("cpu", "cuda", "auto"):
        raise fail(f"--device must be cpu, cuda or auto, got {device!r}")
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    from reports import build_report

    folder = build_report(
        run,
        out,
        gradcam=gradcam,
        gradcam_images=gradcam_images,
        device=device,
        progress=True,
        say=typer.echo,
    )
    typer.echo(f"open {folder / 'report.html'} in a browser (no server needed)")
