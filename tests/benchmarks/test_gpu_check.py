"""``make gpu-check`` (``python -m benchmarks gpu``) without a GPU: the CPU parts run and pass,
the GPU-only parts say they were skipped and why."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(300)


def _rows(tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, dict]]:
    out = tmp_path / "gpu.json"
    env = {**os.environ, "OMP_NUM_THREADS": "2", "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "gpu", "--json", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=280,
    )  # fmt: skip
    rows = json.loads(out.read_text()) if out.is_file() else []
    return proc, {r["name"]: r for r in rows}


def test_gpu_check_runs_the_cpu_parts_and_reports_what_it_skipped(tmp_path: Path) -> None:
    import torch

    proc, rows = _rows(tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert not [n for n in rows if n.endswith("FAILED")], rows
    parity = rows["gpu: stored test predictions vs ONNX export"]
    assert 0 <= parity["value"] <= 1e-4
    assert "yes" in next(line for line in proc.stdout.splitlines() if "vs ONNX export" in line)
    for preset in ("paper", "strong"):
        for path in ("loader (torchvision per image)", "device (Kornia on the "):
            name = next(n for n in rows if n.startswith(f"gpu: augment {preset}: {path}"))
            assert rows[name]["value"] > 0
    if torch.cuda.is_available():  # a GPU machine: nothing may be skipped
        assert not [r for r in rows.values() if "skipped" in r["note"]]
        return
    skipped = {
        n: r for n, r in rows.items() if r["note"].startswith("skipped: no usable CUDA device")
    }
    assert any("study backbones" in n for n in skipped), sorted(rows)
    assert any("4 trials x 0.25 GPU" in n for n in skipped), sorted(rows)
    assert all(math.isnan(r["value"]) for r in skipped.values())
    assert "torch built for CUDA" in next(iter(skipped.values()))["note"]  # says why
    assert "skipped: no usable CUDA device" in proc.stdout  # the printed table says so too


def test_backbone_measurement_runs_as_a_trial_would() -> None:
    """The GPU part (a)'s code on the CPU with a tiny network: rows and figures come out."""
    import torch

    from benchmarks.bench_gpu import _backbone, study_setting
    from trainers.loop import DeviceCapabilities

    rows = _backbone(
        "test_resnet", 32, 4, DeviceCapabilities(False), torch.device("cpu"), repeats=2
    )
    by_name = {r["name"]: r for r in rows}
    assert by_name["gpu: test_resnet training"]["value"] > 0
    assert by_name["gpu: test_resnet inference"]["value"] > 0
    assert math.isnan(by_name["gpu: test_resnet training peak memory"]["value"])  # CPU: no CUDA
    names, size, batch = study_setting()
    assert names == ["vgg16", "legacy_xception", "mobilenetv1_100", "inception_resnet_v2",
                     "densenet121"] and size == 300 and batch == 32  # fmt: skip


def test_shared_gpu_search_config_is_valid(tmp_path: Path) -> None:
    """Part (b)'s overrides make a valid search of 4 trials, each 0.25 GPU, on CUDA."""
    from search.space import grid_points

    from benchmarks.bench_gpu import _shared_search_config

    config = _shared_search_config(tmp_path)
    assert config.search.resources.gpus == 0.25 and config.train.device == "cuda"
    assert len(grid_points(config.search)) * len(config.search.folds) == 4
