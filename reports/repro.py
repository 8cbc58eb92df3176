"""What is needed to reproduce a run: code version, packages, seeds, split hashes, hardware,
command lines."""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["PACKAGES", "git_state", "hardware", "package_versions", "seeds", "split_hashes"]

#: Distributions whose versions decide a run's numbers.
PACKAGES = (
    "wen-search",
    "torch",
    "torchvision",
    "timm",
    "numpy",
    "pandas",
    "pyarrow",
    "scikit-learn",
    "scipy",
    "ray",
    "optuna",
    "safetensors",
    "pillow",
    "grad-cam",
    "matplotlib",
    "tensorboard",
)
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def git_state(root: Path = PROJECT_ROOT) -> dict[str, str]:
    """``commit`` (``git rev-parse HEAD``) and ``dirty`` of the project checkout, when it is one."""

    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(
                ["git", "-C", str(root), *args],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return {"commit": f"not available ({root} is not a git checkout, or git is missing)"}
    status = git("status", "--porcelain", "--untracked-files=no")
    dirty = "yes (uncommitted changes to tracked files)" if status else "no"
    return {"commit": commit, "dirty": dirty if status is not None else "unknown"}


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed version of each distribution (``not installed`` when absent)."""
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def hardware() -> dict[str, str]:
    """This machine (where the report was built): OS, Python, CPUs, GPUs."""
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": str(os.cpu_count()),
    }
    try:
        import torch

        if torch.cuda.is_available():
            names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            info["gpus"] = ", ".join(names)
        else:
            info["gpus"] = "none"
    except ImportError:  # pragma: no cover - torch is a dependency
        info["gpus"] = "unknown"
    return info


def seeds(config: dict[str, Any], trial_configs: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Every seed of the run config, and trial seeds where a trial differs from the run."""

    def get(d: dict[str, Any], dotted: str) -> Any:
        for part in dotted.split("."):
            if not isinstance(d, dict) or part not in d:
                return None
            d = d[part]
        return d

    keys = ("seed", "data.split.seed", "data.synthetic.seed", "search.seed", "ensemble.seed")
    out = {k: str(get(config, k)) for k in keys if get(config, k) is not None}
    base = get(config, "seed")
    differing = {t: c.get("seed") for t, c in trial_configs.items() if c.get("seed") != base}
    if differing:
        out["trial seeds"] = ", ".join(f"{t}: {s}" for t, s in sorted(differing.items()))
    return out


def split_hashes(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per trial and split: cells and a SHA-256 of its sorted (sample, subject, label) rows.

    Trials with the same hash saw exactly the same split; ``frames`` maps trial id to its
    prediction frame (``trainers.predictions`` schema).
    """
    rows = []
    for trial_id, frame in sorted(frames.items()):
        for split, part in frame.groupby("split", sort=True):
            lines = sorted(
                f"{s}\t{j}\t{y}"
                for s, j, y in zip(part["sample_id"], part["subject_id"], part["label"])
            )
            digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]
            rows.append(
                {
                    "trial_id": trial_id,
                    "split": split,
                    "cells": len(part),
                    "subjects": part["subject_id"].nunique(),
                    "sha256_16": digest,
                }
            )
    return pd.DataFrame(rows, columns=["trial_id", "split", "cells", "subjects", "sha256_16"])
