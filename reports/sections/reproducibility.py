"""Section 5, reproducibility: the code version, package versions, seeds, split hashes,
hardware and the command lines of the run (the facts come from ``reports.repro``)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from reports import repro
from reports._inputs import MissingInput
from reports.render import Text
from reports.sections._common import ReportContext, SubsectionTable
from trainers.predictions import read_predictions

__all__ = [
    "KEY",
    "LABEL",
    "SUBSECTIONS",
    "TITLE",
    "code",
    "commands",
    "hardware",
    "packages",
    "seeds",
    "splits",
]

TITLE = "Reproducibility"
KEY = "reproducibility"
LABEL = "reproducibility"


def _kv(data: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame({"key": list(data), "value": [str(v) for v in data.values()]})


def code(ctx: ReportContext) -> list[Any]:
    """The project's git state when the report was built."""
    state = repro.git_state()
    return [
        Text(
            "The project's code when this report was built (`git rev-parse HEAD`); the "
            "run folder does not record the commit it was searched with."
        ),
        ctx.table(_kv(state), "git", "Code version"),
    ]


def packages(ctx: ReportContext) -> list[Any]:
    """The versions of the packages the project uses."""
    return [ctx.table(_kv(repro.package_versions()), "packages", "Package versions")]


def seeds(ctx: ReportContext) -> list[Any]:
    """The seeds of the config and of each trial that has a model."""
    run = ctx.run
    trial_configs = {}
    for t in run.trial_ids:
        try:
            trial_configs[t] = run.model_meta(t)["config"]
        except MissingInput:
            continue
    values = repro.seeds(run.config, trial_configs)
    return [ctx.table(_kv(values), "seeds", "Seeds")]


def splits(ctx: ReportContext) -> list[Any]:
    """A hash of each trial's splits, and whether all trials saw the same ones."""
    frames = {}
    for member in ctx.run.all_members:
        for path in member.paths:
            pset = read_predictions(path)
            frames[pset.trial_id] = pset.frame
    table = repro.split_hashes(frames)
    agree = table.groupby("split")["sha256_16"].nunique()
    text = "; ".join(
        f"{split}: {'one split for all trials' if n == 1 else f'{n} different splits'}"
        for split, n in agree.items()
    )
    return [
        Text(f"Hash of each trial's (sample, subject, label) rows per split. {text}."),
        ctx.table(table, "split_hashes", "Split hashes per trial"),
    ]


def hardware(ctx: ReportContext) -> list[Any]:
    """The machine that built the report and the Ray nodes the trials ran on."""
    info = {f"report machine: {k}": v for k, v in repro.hardware().items()}
    try:
        results = ctx.run.results
        if "node_ip" in results:
            nodes = sorted(str(n) for n in results["node_ip"].dropna().unique())
            info["search nodes (Ray)"] = ", ".join(nodes) or "unknown"
    except MissingInput:
        pass
    return [ctx.table(_kv(info), "hardware", "Hardware")]


def commands(ctx: ReportContext) -> list[Any]:
    """The command lines that produced the run (``RUN/command.txt``)."""
    lines = ctx.run.commands
    return [Text("The command lines that produced the run (`RUN/command.txt`):")] + [
        Text(f"`{line}`") for line in lines
    ]


SUBSECTIONS: SubsectionTable = (
    ("Code", code),
    ("Packages", packages),
    ("Seeds", seeds),
    ("Splits", splits),
    ("Hardware", hardware),
    ("Commands", commands),
)
