"""``wen weights``: download the ImageNet weights a config's backbones start from, and list
which are cached. Training itself never downloads: this is the step for a machine with a
network (or one that shares its HF_HOME / TORCH_HOME with the training nodes)."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated

import typer

from search.cli._app import fail, weights_app

__all__ = ["fetch", "list_weights", "resolve_targets"]

_TARGETS_HELP = (
    "YAML configs (every backbone their trials can start from ImageNet weights: model.backbone, "
    "or each model.backbone value in search.space) and/or timm backbone names."
)
_SET_HELP = (
    "Override a config key: --set model.pretrained=true (repeatable; applies to each config)."
)


def _is_config(target: str) -> bool:
    from search.presets import preset_names

    return target.endswith((".yaml", ".yml")) or Path(target).is_file() or target in preset_names()


def _backbone_problem(name: str) -> str | None:
    """None for a timm model (a pretrained tag allowed) or alnet; else the close names."""
    import timm

    from trainers.weights import NO_IMAGENET_WEIGHTS

    if name in NO_IMAGENET_WEIGHTS or timm.is_model(name):
        return None
    close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else "see timm.list_models()"
    return f"{name!r} is neither a config file nor a timm model; {hint}"


def resolve_targets(targets: list[str], overrides: list[str] | None) -> tuple[list[str], list[str]]:
    """The backbones named by ``targets`` (configs expanded, in order, once each), and notes
    about configs whose trials start from no cached weights."""
    from search.checks import load_wen_config
    from search.presets import config_path
    from trainers.config import ConfigError
    from trainers.weights import config_backbones

    names: list[str] = []
    notes: list[str] = []
    problems: list[str] = []
    for target in targets:
        if not _is_config(target):
            problem = _backbone_problem(target)
            problems += [problem] if problem else []
            names.append(target)
            continue
        path, note = config_path(target)
        if note:
            notes.append(note)
        try:
            cfg = load_wen_config(path, overrides, check_registries=False)
        except ConfigError as err:
            problems.append(str(err))
            continue
        found = config_backbones(cfg)
        if not found:
            notes.append(
                f"{target}: no trial starts from cached ImageNet weights (model.pretrained is "
                "false, or model.pretrained_path gives them)"
            )
        names += found
    if problems:
        raise fail("\n".join(problems))
    return list(dict.fromkeys(names)), notes


def _caches_line() -> str:
    from trainers.weights import hf_hub_cache, torch_hub_checkpoints

    return (
        f"Hugging Face cache: {hf_hub_cache()} (HF_HOME / HF_HUB_CACHE); torch hub checkpoints: "
        f"{torch_hub_checkpoints()} (TORCH_HOME)"
    )


@weights_app.command("fetch")
def fetch(
    targets: Annotated[list[str], typer.Argument(help=_TARGETS_HELP)],
    overrides: Annotated[list[str] | None, typer.Option("--set", help=_SET_HELP)] = None,
    progress: Annotated[bool, typer.Option(help="Show download progress bars.")] = True,
) -> None:
    """Download the ImageNet weights of every backbone named into the caches timm reads."""
    from trainers.weights import WeightsFetchError, fetch_weights

    names, notes = resolve_targets(targets, overrides)
    for note in notes:
        typer.echo(note)
    typer.echo(_caches_line())
    errors: list[str] = []
    for name in names:
        try:
            path, downloaded = fetch_weights(name, progress=progress)
        except WeightsFetchError as err:
            errors.append(str(err))
            typer.secho(f"{name}: FAILED", fg=typer.colors.RED, err=True)
            continue
        typer.echo(f"{name}: {'downloaded to' if downloaded else 'already present:'} {path}")
    if errors:
        raise fail("\n".join(errors), code=1)


def _would_go(name: str) -> str:
    from trainers.weights import weight_source

    source = weight_source(name)
    if source is None:
        return (
            "no ImageNet weights exist for it (set model.pretrained=false or model.pretrained_path)"
        )
    if source.kind == "hf-hub":
        assert source.hf_repo_folder is not None
        where = source.hf_repo_folder / "snapshots" / "<commit>" / source.hf_filenames[0]
        return f"would go to {where} (Hugging Face repo {source.hf_repo})"
    return f"would go to {source.torch_hub_file} (from {source.url})"


@weights_app.command("list")
def list_weights(
    targets: Annotated[list[str], typer.Argument(help=_TARGETS_HELP)],
    overrides: Annotated[list[str] | None, typer.Option("--set", help=_SET_HELP)] = None,
) -> None:
    """Show, per backbone, whether its weights are cached and where; exit 1 when any is missing."""
    from trainers.weights import weight_source

    names, notes = resolve_targets(targets, overrides)
    for note in notes:
        typer.echo(note)
    typer.echo(_caches_line())
    width = max((len(n) for n in names), default=0)
    missing = []
    for name in names:
        source = weight_source(name)
        found = source.cached() if source is not None else None
        if found is not None:
            typer.echo(f"{name:<{width}}  present  {found}")
        else:
            missing.append(name)
            typer.echo(f"{name:<{width}}  missing  {_would_go(name)}")
    if missing:
        fetchable = [n for n in missing if weight_source(n) is not None]
        hint = f"; fetch them with `wen weights fetch {' '.join(fetchable)}`" if fetchable else ""
        typer.echo(f"{len(missing)} of {len(names)} backbone(s) missing{hint}")
        raise typer.Exit(1)
