"""``wen ensemble RUN``: fit and compare ensemble methods on a run's prediction files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from search.cli._app import app, fail
from trainers.errors import WenError
from trainers.run_layout import RUN_LAYOUT

__all__ = ["ensemble_command", "load_settings"]


def load_settings(run: Path, flags: dict[str, Any], sets: list[str] | None = None) -> Any:
    """The ensemble settings of one ``wen ensemble`` run, built here and nowhere else:
    ``RUN/config.yaml``'s ``ensemble:`` section (defaults when absent), then the flags that
    were given, then ``--set KEY=VALUE`` (a key of the section, with or without ``ensemble.``).

    The file is validated as a whole run config (``search.config.WenConfig``); the result is
    validated with the section, so a bad value names its key and the rule. ``wen ensemble``
    writes what it used to ``RUN/ensemble/settings.json``, which the report reads.
    """
    from pydantic import ValidationError

    from ensemble.config import EnsembleSettings
    from search.checks import load_wen_config
    from trainers.config import (
        ConfigError,
        apply_overrides,
        format_validation_error,
        parse_overrides,
    )

    config_path = run / RUN_LAYOUT.config
    base: dict[str, Any] = {}
    if config_path.is_file():
        cfg = load_wen_config(config_path, check_registries=False)
        base = cfg.ensemble.model_dump()
    merged = {**base, **{k: v for k, v in flags.items() if v is not None}}
    merged = apply_overrides(merged, _section_keys(parse_overrides(sets)))
    try:
        return EnsembleSettings.model_validate(merged)
    except ValidationError as err:
        problems = [f"ensemble.{p}" for p in format_validation_error(err, EnsembleSettings)]
        raise ConfigError(problems, "wen ensemble flags / --set / RUN/config.yaml") from None


def _section_keys(overrides: dict[str, Any]) -> dict[str, Any]:
    """``--set`` keys relative to the ``ensemble:`` section; other sections are refused."""
    from trainers.config import ConfigError

    out, problems = {}, []
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        if head == "ensemble" and rest:
            key = rest
        elif head in ("data", "model", "train", "search", "name", "ensemble"):
            problems.append(
                f"--set {key}: `wen ensemble` takes keys of the ensemble: section "
                "(e.g. --set ensemble.n_trials=50); the trials are already trained"
            )
            continue
        out[key] = value
    if problems:
        raise ConfigError(problems)
    return out


CANDIDATES_HELP = (
    "best-per-backbone (default), top-K (e.g. top-5) or trial ids ID,ID,...; snapshots:RULE "
    "draws from the LR-trough snapshots too (snapshots:top-10), snapshots:of-best takes the "
    "best trial's snapshots"
)


@app.command("ensemble")
def ensemble_command(
    run: Path = typer.Argument(..., help="Run folder holding predictions/ (and config.yaml)."),
    candidates: str | None = typer.Option(None, help=CANDIDATES_HELP),
    objective: str | None = typer.Option(
        None, help="What searched weights optimise on validation: logloss, wfs or ba."
    ),
    n_trials: int | None = typer.Option(None, "--n-trials", help="Optuna weight trials."),
    sampler: str | None = typer.Option(None, help="Optuna sampler: tpe, cmaes or random."),
    seed: int | None = typer.Option(None, help="Seed of samplers, folds and the bootstrap."),
    methods: str | None = typer.Option(
        None, help="Comma-separated methods (default: all), e.g. sap,wen_kappa,optuna."
    ),
    skip_bad_files: bool = typer.Option(
        False, "--skip-bad-files", help="Skip (and report) bad or misaligned prediction files."
    ),
    bootstrap: int | None = typer.Option(None, help="Subject-bootstrap resamples (CIs)."),
    crossfit_folds: int | None = typer.Option(
        None, "--crossfit-folds", help="Subject-grouped folds that estimate overfitting."
    ),
    select_by: str | None = typer.Option(
        None, "--select-by", help="Validation metric that chooses the method to export."
    ),
    tune_threshold: bool | None = typer.Option(
        None,
        "--tune-threshold/--no-tune-threshold",
        help="Binary: tune the decision threshold on validation predictions.",
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar."),
    overrides: list[str] | None = typer.Option(
        None,
        "--set",
        help="Override a key of the ensemble: section, e.g. --set ensemble.greedy_rounds=20 "
        "(repeatable; applies after the flags).",
    ),
) -> None:
    """Fit every ensemble method on validation predictions, report them on test with 95%
    subject-bootstrap intervals and paired tests, and choose one by held-out validation score.
    Writes RUN/ensemble/ (comparison.csv/.md, comparisons.csv, confusion.csv, weights.json,
    probabilities.parquet, settings.json, chosen.json, study.db). Re-running resumes the
    Optuna study."""
    from ensemble.run import run_ensemble

    if not run.is_dir():
        raise fail(f"run folder {str(run)!r} does not exist; pass the folder `wen search` wrote")
    flags = {
        "candidates": candidates,
        "objective": objective,
        "n_trials": n_trials,
        "sampler": sampler,
        "seed": seed,
        "methods": [m.strip() for m in methods.split(",") if m.strip()] if methods else None,
        "skip_bad_files": True if skip_bad_files else None,
        "bootstrap": bootstrap,
        "crossfit_folds": crossfit_folds,
        "select_by": select_by,
        "tune_threshold": tune_threshold,
    }
    try:
        settings = load_settings(run, flags, overrides)
        run_ensemble(run, settings, progress=progress, say=typer.echo)
    except (WenError, ValueError) as exc:
        raise fail(str(exc)) from None
