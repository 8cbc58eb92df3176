"""Helpers of the fault-injection suite (a unique module name: importable from any test)."""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parents[1]
LOOPBACK = "127.0.0.1"


def ensemble_fixtures() -> Any:
    """tests/ensemble/conftest.py under a unique module name (its ``write_run`` is reused)."""
    spec = importlib.util.spec_from_file_location(
        "ensemble_test_fixtures", TESTS / "ensemble" / "conftest.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_trial(**data: Any) -> dict[str, Any]:
    """A raw trial config that trains in a few seconds on 2 CPU threads."""
    base: dict[str, Any] = {
        "name": "faults",
        "seed": 7,
        "data": {"input_size": 32, "batch_size": 8, "augmentation": "paper", **data},
        "model": {"backbone": "test_resnet", "head": "linear", "pretrained": False},
        "schedule": {"name": "cyclic", "mode": "triangular2", "half_cycle_epochs": 1},
        "train": {"epochs": 2, "keep_checkpoints": 2, "threads": 2, "device": "cpu"},
    }
    if "root" not in data and "synthetic" not in data:
        base["data"]["synthetic"] = {
            "layout": "cnmc-kaggle",
            "subjects_per_class": 4,
            "cells_per_subject": 4,
            "size": 40,
            "seed": 0,
        }
    return base


def session_processes(sid: int, pattern: str) -> list[int]:
    """PIDs in session ``sid`` whose command line matches ``pattern`` (Ray names its workers
    ``ray::ImplicitFunc.train`` in the process title)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) != sid:
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ProcessLookupError):
            continue
        if re.search(pattern, cmdline):
            found.append(int(entry.name))
    return sorted(found)


def peak_rss_mb(pid: int) -> float | None:
    """The process's peak resident memory so far (VmHWM), in MiB; None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None
