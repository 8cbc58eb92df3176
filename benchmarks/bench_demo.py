"""Wall time of ``wen demo`` (issue 7: at most 10 minutes on 2 CPU cores, target 5-6).

Runs ``wen demo --out TMP`` in a subprocess exactly as a user would (synthetic data, search on
local Ray with ASHA, ensemble, ONNX export, report) and reports the total wall time and the
demo's own per-stage times from its ``time:`` line. The CPU may be shared with other work;
the load average before and after is in the note. ``WEN_BENCH_QUICK=1`` trains 4 epochs
instead of 6 and skips Grad-CAM.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET_S = 600.0
_STAGE = re.compile(r"(\w+) (\d+) s")


def _wen() -> list[str]:
    script = Path(sys.executable).parent / "wen"
    return [str(script)] if script.exists() else [sys.executable, "-m", "search"]


def stage_times(output: str) -> dict[str, float]:
    """``time: 250 s (data 3 s, search 180 s, ...)`` -> ``{"data": 3.0, "search": 180.0, ...}``."""
    lines = [line for line in output.splitlines() if line.startswith("time: ")]
    if not lines:
        return {}
    inside = lines[-1].partition("(")[2].rstrip(")")
    return {name: float(value) for name, value in _STAGE.findall(inside)}


def run() -> list[dict[str, Any]]:
    quick = os.environ.get("WEN_BENCH_QUICK") == "1"
    extra = ["--set", "train.epochs=4", "--no-gradcam"] if quick else []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="wen-bench-demo-") as tmp:
        start = time.perf_counter()
        proc = subprocess.run(
            [*_wen(), "demo", "--out", str(Path(tmp) / "demo"), *extra],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
        )
        seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(
            f"wen demo failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}"
        )
    load = f"load avg {load_before:.1f} -> {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    rows: list[dict[str, Any]] = [
        {
            "name": "wen demo wall time" + (" (quick)" if quick else ""),
            "value": seconds,
            "unit": "s",
            "target": f"<= {TARGET_S:g}",
            "note": load,
        }
    ]
    for stage, value in stage_times(proc.stdout).items():
        rows.append(
            {
                "name": f"wen demo: {stage}",
                "value": value,
                "unit": "s",
                "target": "",
                "note": "the demo's own timing",
            }
        )
    return rows
