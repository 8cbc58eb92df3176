"""The ``wen`` Typer application and its stage groups; commands register themselves on these."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="wen",
    help="wen-search: distributed hyperparameter and ensemble search for medical image "
    "classifiers. Stages: data -> train/search -> ensemble -> export/predict -> report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Datasets: synthesise, check, build manifests.", no_args_is_help=True)
app.add_typer(data_app, name="data")
weights_app = typer.Typer(
    help="ImageNet weights: fetch them into the caches timm reads (HF_HOME, TORCH_HOME), list them.",
    no_args_is_help=True,
)
app.add_typer(weights_app, name="weights")


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print a clear error (no traceback) and return the Exit to raise."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)
