"""``wen train CONFIG``: one trial, locally, with a progress bar (no Ray)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from search.cli._app import app, fail
from search.presets import config_path
from trainers.errors import WenError
from trainers.run_layout import RUN_LAYOUT

__all__ = ["load_trial_config", "train_command"]


def load_trial_config(path: Path, overrides: list[str] | None) -> Any:
    """The trial part of a config file: ``search:``/``ensemble:`` sections are left to their stages."""
    from trainers.checks import check_names
    from trainers.config import TrialConfig, load_config, read_yaml

    raw = read_yaml(path)
    trial_keys = set(TrialConfig.model_fields)
    # sections of the whole-run config (search, ensemble) belong to other commands
    from search.config import WenConfig

    other_stages = set(WenConfig.model_fields) - trial_keys
    raw = {k: v for k, v in raw.items() if k not in other_stages}
    return load_config(raw, overrides, TrialConfig, checks=check_names)


def _default_out(name: str) -> Path:
    return Path("runs") / "train" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


# long: typer declares each of the command's options in its signature
@app.command("train")
def train_command(
    config: Annotated[
        Path,
        typer.Argument(help="YAML config (its trial part is used), or a shipped preset's name."),
    ],
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a config key: --set train.epochs=3 (repeatable)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Output folder (default: runs/train/NAME-TIME).")
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            "--resume", help="Continue from a checkpoint folder (OUT/checkpoints/epoch_NNNN)."
        ),
    ] = None,
    trial_id: Annotated[
        str | None, typer.Option("--trial-id", help="Name of the prediction file.")
    ] = None,
) -> None:
    """Train one trial on this machine; write OUT/config.yaml, OUT/checkpoints/ and OUT/predictions/."""
    from tqdm.auto import tqdm

    from trainers.config import save_config

    config, note = config_path(config)
    if note:
        typer.echo(f"note: {note}")
    try:
        cfg = load_trial_config(config, overrides)
    except WenError as err:
        raise fail(str(err)) from None
    out_dir = out or _default_out(cfg.name)
    save_config(cfg, out_dir / RUN_LAYOUT.config)  # named as in a search run
    typer.echo(
        f"training {cfg.model.backbone} on {'synthetic data' if cfg.data.synthetic else cfg.data.root}; output: {out_dir}"
    )

    from trainers import train

    bar = tqdm(total=cfg.train.epochs, unit="epoch", dynamic_ncols=True)

    def on_batch(step: int, steps: int) -> None:
        bar.set_postfix_str(f"batch {step}/{steps}", refresh=step == steps or step % 5 == 0)

    def report(metrics: dict[str, Any]) -> None:
        bar.n = metrics["epoch"]
        bar.set_postfix(
            loss=f"{metrics['train_loss']:.4f}", val_wfs=f"{metrics['val_wfs']:.4f}",
            val_auc=f"{metrics['val_auc']:.4f}", refresh=False,
        )  # fmt: skip
        bar.refresh()

    try:
        result = train(
            cfg, report, out_dir=out_dir, trial_id=trial_id, resume_from=resume, on_batch=on_batch
        )
    except (WenError, ValueError, FloatingPointError) as err:
        bar.close()
        raise fail(str(err)) from None
    bar.close()
    best = {k: v for k, v in result.best_metrics.items() if k.startswith("val_")}
    typer.echo(f"trial {result.trial_id}: best epoch {result.best_epoch} of {cfg.train.epochs}")
    typer.echo("  validation: " + ", ".join(f"{k[4:]}={_fmt(v)}" for k, v in best.items()))
    if result.test_metrics:
        shown = {k: result.test_metrics[k] for k in ("wfs", "acc", "ba", "auc", "kappa")}
        typer.echo("  test:       " + ", ".join(f"{k}={_fmt(v)}" for k, v in shown.items()))
    typer.echo(f"  checkpoint: {result.checkpoint_dir}")
    typer.echo(f"  predictions: {result.predictions_path}")
