"""``wen data``: synthesise a dataset, check a dataset folder, write its manifest."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from search.cli._app import data_app, fail
from trainers._atomic import atomic_write_text
from trainers.errors import WenError

__all__ = ["check", "manifest", "synth"]


class SynthLayout(str, Enum):
    """Layouts the synthetic generator can write."""

    cnmc_kaggle = "cnmc-kaggle"
    cnmc_tcia = "cnmc-tcia"
    all4 = "all4"
    imagefolder = "imagefolder"


_LAYOUT_HELP = "Dataset layout: auto, cnmc-tcia, cnmc-kaggle, all4 or imagefolder."


@data_app.command("synth")
def synth(
    out: Path = typer.Argument(..., help="New (or empty) folder to write the dataset to."),
    layout: SynthLayout = typer.Option(SynthLayout.cnmc_kaggle, help="Layout to imitate."),
    subjects_per_class: int = typer.Option(6, help="Subjects drawn for each class."),
    cells_per_subject: int = typer.Option(20, help="Images per subject."),
    size: int = typer.Option(96, help="Side of each square image in pixels."),
    seed: int = typer.Option(0, help="Seed; the same seed writes the same files."),
    label_noise: float = typer.Option(0.0, help="Share of labels flipped at random, below 0.5."),
    preset: str = typer.Option(
        "morphology",
        help="Difficulty model: morphology, complementary or single-cue (the latent presets "
        "record their Bayes ceiling).",
    ),
) -> None:
    """Write a synthetic stained-cell dataset in a real layout."""
    from pydantic import ValidationError

    from trainers.config import SyntheticSpec, format_validation_error
    from trainers.data.synth import MARKER, read_synthetic_info, synthesize

    try:
        spec = SyntheticSpec(
            layout=layout.value,
            subjects_per_class=subjects_per_class,
            cells_per_subject=cells_per_subject,
            size=size,
            seed=seed,
            label_noise=label_noise,
            preset=preset,
        )
    except ValidationError as err:
        raise fail("; ".join(format_validation_error(err, SyntheticSpec))) from None
    try:
        root = synthesize(
            out,
            spec.layout,
            spec.subjects_per_class,
            spec.cells_per_subject,
            spec.size,
            spec.seed,
            spec.label_noise,
            spec.preset,
        )
    except (WenError, ValueError, FileExistsError) as exc:
        raise fail(str(exc)) from None
    info = read_synthetic_info(root) or {}
    typer.echo(
        f"wrote {info.get('n_images', '?')} images ({spec.layout}, {spec.preset}, {spec.size}px, "
        f"seed {spec.seed}, {info.get('n_flipped', 0)} labels flipped) to {root}; "
        f"details in {root / MARKER}"
    )
    ceiling = info.get("ceiling")
    if ceiling:
        typer.echo(
            f"ceiling: the best possible classifier of the latent cues reaches accuracy "
            f"{ceiling['accuracy']:.3f}, AUC {ceiling['auc']:.3f} (Monte Carlo, "
            f"{ceiling['n_monte_carlo']:,} cells)"
        )


@data_app.command("check")
def check(
    root: Path = typer.Argument(..., help="Dataset root folder."),
    layout: str = typer.Option("auto", help=_LAYOUT_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Report every problem of a dataset, one per file; exit 1 when there are errors."""
    from trainers.data.check import check_dataset

    try:
        report = check_dataset(root, layout)
    except WenError as exc:
        raise fail(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=1))
    else:
        typer.echo(report.format_table())
    if not report.ok:
        raise typer.Exit(1)


@data_app.command("manifest")
def manifest(
    root: Path = typer.Argument(..., help="Dataset root folder."),
    layout: str = typer.Option("auto", help=_LAYOUT_HELP),
    out: Optional[Path] = typer.Option(  # noqa: UP007, UP045 - typer needs Optional on older Pythons
        None, help="Write the manifest here (.parquet, or .csv); default: CSV to stdout."
    ),
) -> None:
    """Build the manifest (one row per image) of a dataset folder."""
    from trainers.data.layouts import read_manifest
    from trainers.data.manifest import manifest_hash, write_manifest

    try:
        found = read_manifest(root, layout)
    except WenError as exc:
        raise fail(str(exc)) from None
    frame = found.frame
    summary = (
        f"{len(frame)} images, layout {found.layout}, classes {found.class_names}, subjects from "
        f"{found.subjects}, manifest hash {manifest_hash(frame)}"
    )
    if found.problems:
        summary += f"; {len(found.problems)} problem(s): run `wen data check {root}`"
    if out is None:
        typer.echo(frame.to_csv(index=False), nl=False)
        typer.echo(summary, err=True)
        return
    if out.suffix.lower() == ".csv":
        atomic_write_text(out, frame.to_csv(index=False), what="manifest CSV")
    elif out.suffix.lower() == ".parquet":
        write_manifest(found, out)
    else:
        raise fail(f"--out {str(out)!r}: the file must end in .parquet or .csv")
    typer.echo(f"wrote {out}: {summary}")
