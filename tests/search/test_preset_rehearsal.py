"""A rehearsal of each study preset as a user would run it: the preset file as shipped.

Everything the preset says stays: its layout, crop, input size, balance, split, head,
optimizer, schedule and ``pretrained: true``. The user's folder holds the data where the
preset documents it (``data/C-NMC_Leukemia``, ``data/ALL4``, relative to the folder wen runs
in), generated in the preset's layout at the real image size (450 px BMPs for C-NMC-2019,
JPEGs for the four-class set), and the ImageNet weights are laid out exactly where timm and
huggingface_hub leave them after a download (``HF_HOME``'s hub cache; torch hub's
``checkpoints/`` for the URL-only ``legacy_xception``), with the right shapes and random
values. Only the amount of work is cut: one epoch of two steps at batch 2, on the CPU, one
fold, a few trials. Each trial must report that it started from the cached file of its
backbone (``init_weights`` in results.csv).

Swapped in this test alone, because their weight files are too large for CI (528 MB and
215 MB): VGG-16 -> ``test_resnet``, InceptionResNet-V2 -> ``test_efficientnet`` (both with
weights in the hub cache, so the pretrained path is exercised all the same). The torchvision
VGG conversion is tested on its own in tests/trainers/test_weights.py.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from hub_cache import cache_env, lay_out_cached_weights
from wen_proc import REPO, wen_command

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SWAPS = {"vgg16": "test_resnet", "inception_resnet_v2": "test_efficientnet"}
#: The work cut, and the CPU in place of the preset's GPUs; nothing else is changed.
CUT = [
    "train.epochs=1", "train.max_steps_per_epoch=2", "data.batch_size=2", "data.eval_batch_size=8",
    "data.num_workers=0", "train.device=cpu", "search.resources.cpus=1", "search.resources.gpus=0",
    "search.max_concurrent=2", "search.report_every_s=30",
]  # fmt: skip


def _grid(values: list[object]) -> dict[str, object]:
    return {"type": "grid", "values": values}


def _space_override(space: dict[str, dict[str, object]]) -> str:
    return "search.space=" + yaml.safe_dump(space, default_flow_style=True).strip()


def _synth(work: Path, folder: str, layout: str, size: int, env: dict[str, str]) -> None:
    done = subprocess.run(
        wen_command() + ["data", "synth", folder, "--layout", layout, "--subjects-per-class", "4",
                         "--cells-per-subject", "3", "--size", str(size)],
        cwd=work, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def _assert_as_shipped(saved: dict[str, object], shipped: dict[str, object], where: str) -> None:
    """Every key the preset sets has its value in the run's resolved config."""
    for key, value in shipped.items():
        if isinstance(value, dict):
            _assert_as_shipped(saved[key], value, f"{where}.{key}")  # type: ignore[arg-type]
        else:
            got = saved[key]
            assert got == value or (isinstance(value, list) and list(got) == value), (
                f"{where}.{key}",
                got,
                value,
            )


def _rehearse(
    tmp_path: Path,
    wen_env: dict[str, str],
    preset: str,
    data: tuple[str, str, int],
    space: dict[str, dict[str, object]] | None,
    more: list[str],
) -> pd.DataFrame:
    """Run ``configs/PRESET.yaml`` from a user folder; return its results table."""
    work = tmp_path / "study"
    work.mkdir()
    shipped = yaml.safe_load((REPO / "configs" / f"{preset}.yaml").read_text())
    hf, torch_home = tmp_path / "cache" / "huggingface", tmp_path / "cache" / "torch"
    env = {**wen_env, **cache_env(hf, torch_home)}
    folder, layout, size = data
    assert shipped["data"]["root"] == folder and shipped["data"]["layout"] == layout
    _synth(work, folder, layout, size, env)
    searched = space if space is not None else shipped["search"]["space"]
    backbones = list(
        searched.get("model.backbone", {}).get("values", [shipped["model"]["backbone"]])
    )
    expected: dict[str, str] = {}
    if shipped["model"]["pretrained"]:
        from trainers.weights import weight_source

        for backbone in backbones:
            lay_out_cached_weights(backbone, hf, torch_home)
            with pytest.MonkeyPatch.context() as patch:
                for key, value in cache_env(hf, torch_home).items():
                    patch.setenv(key, value)
                found = weight_source(backbone).cached()
            assert found is not None, backbone
            expected[backbone] = str(found)
    args = [
        "search",
        str(REPO / "configs" / f"{preset}.yaml"),
        "--storage",
        "runs",
        "--name",
        preset,
    ]
    for item in CUT + more + ([_space_override(space)] if space is not None else []):
        args += ["--set", item]
    done = subprocess.run(
        wen_command() + args, cwd=work, env=env, capture_output=True, text=True, timeout=840
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    results = pd.read_csv(work / "runs" / preset / "results.csv")
    assert (results["status"] == "TERMINATED").all(), results.to_string()
    saved = yaml.safe_load((work / "runs" / preset / "config.yaml").read_text())
    assert saved["data"]["root"] == str(work / folder)
    cut = {"root", "batch_size", "eval_batch_size", "num_workers"}
    _assert_as_shipped(
        saved["data"], {k: v for k, v in shipped["data"].items() if k not in cut}, "data"
    )
    for section in ("optim", "schedule", "loss"):
        _assert_as_shipped(saved[section], shipped.get(section, {}), section)
    _assert_as_shipped(
        saved["model"], {k: v for k, v in shipped["model"].items() if k != "backbone"}, "model"
    )
    if expected:
        started = dict(zip(results["model.backbone"], results["init_weights"]))
        assert started == expected, started  # every trial fine-tuned its cached tensors
    else:
        assert (results["init_weights"] == "random").all()
    return results


def test_mondal2021_rehearsal(tmp_path: Path, wen_env: dict[str, str]) -> None:
    shipped = yaml.safe_load((REPO / "configs" / "mondal2021.yaml").read_text())
    backbones = [SWAPS.get(b, b) for b in shipped["search"]["space"]["model.backbone"]["values"]]
    assert "legacy_xception" in backbones  # the URL-only model, from torch hub's checkpoints/
    results = _rehearse(tmp_path, wen_env, "mondal2021", ("data/C-NMC_Leukemia", "cnmc-kaggle", 450),
                        {"model.backbone": _grid(backbones)}, [])  # fmt: skip
    assert sorted(results["model.backbone"]) == sorted(backbones)


def test_fata2023_rehearsal(tmp_path: Path, wen_env: dict[str, str]) -> None:
    # the study's epoch budgets are the work cut: one budget of one epoch
    results = _rehearse(tmp_path, wen_env, "fata2023", ("data/C-NMC_Leukemia", "cnmc-kaggle", 450),
                        {"model.backbone": _grid(["test_resnet", "resnet50"]),
                         "optim.name": _grid(["adam", "rmsprop"])}, [])  # fmt: skip
    assert len(results) == 4


def test_jawahar2022_rehearsal(tmp_path: Path, wen_env: dict[str, str]) -> None:
    results = _rehearse(tmp_path, wen_env, "jawahar2022", ("data/C-NMC_Leukemia", "cnmc-kaggle", 450),
                        {"model.dropout": _grid([0.2, 0.5])}, ["search.folds=[0]"])  # fmt: skip
    assert len(results) == 2


def test_alim2024_rehearsal(tmp_path: Path, wen_env: dict[str, str]) -> None:
    shipped = yaml.safe_load((REPO / "configs" / "alim2024.yaml").read_text())
    backbones = [SWAPS.get(b, b) for b in shipped["search"]["space"]["model.backbone"]["values"]]
    results = _rehearse(tmp_path, wen_env, "alim2024", ("data/ALL4", "all4", 224),
                        {"model.backbone": _grid(backbones)}, ["search.folds=[0]"])  # fmt: skip
    assert sorted(results["model.backbone"]) == sorted(backbones)
