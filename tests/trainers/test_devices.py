"""Device, precision and augmentation-placement decisions, each branch on the CPU.

No GPU is needed: the CUDA capabilities are injected as a :class:`DeviceCapabilities`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from trainers import load_config, train
from trainers.loop import (
    DeviceCapabilities,
    GPUUnavailableError,
    _cuda_version_text,
    cuda_problem,
    exact_fp32,
    gpus_allotted,
    needs_grad_scaler,
    probe_capabilities,
    resolve_amp,
    resolve_augment_on,
    resolve_device,
)

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
A100 = DeviceCapabilities(True, 1, bf16_native=True, torch_cuda_version="12.8",
                          driver_cuda_version="12.8", visible_devices="0", device_name="A100")  # fmt: skip
T4 = DeviceCapabilities(True, 1, bf16_native=False, torch_cuda_version="12.8",
                        driver_cuda_version="12.8", visible_devices="0", device_name="Tesla T4")  # fmt: skip
OLD_DRIVER = DeviceCapabilities(False, 0, torch_cuda_version="13.0", driver_cuda_version="12.4",
                                visible_devices="2")  # fmt: skip
NO_DRIVER = DeviceCapabilities(False, 0, torch_cuda_version="13.0", driver_cuda_version=None,
                               visible_devices="0")  # fmt: skip
CPU_BUILD = DeviceCapabilities(False, 0, torch_cuda_version=None, driver_cuda_version="12.8")
HIDDEN = DeviceCapabilities(False, 0, torch_cuda_version="13.0", driver_cuda_version="13.0",
                            visible_devices="")  # fmt: skip


# --------------------------------------------------------------------------- precision


@pytest.mark.parametrize(
    ("caps", "want"),
    [(A100, torch.bfloat16), (T4, torch.float16)],
    ids=["bf16-native", "bf16-emulated"],
)
def test_auto_precision_uses_bf16_only_where_native(
    caps: DeviceCapabilities, want: torch.dtype
) -> None:
    assert resolve_amp("auto", CUDA, caps) == want
    assert needs_grad_scaler(want, CUDA) == (want == torch.float16)


def test_auto_precision_is_fp32_on_the_cpu_and_explicit_choices_are_kept() -> None:
    assert resolve_amp("auto", CPU, T4) is None
    assert resolve_amp("fp32", CUDA, A100) is None
    assert resolve_amp("bf16", CUDA, T4) == torch.bfloat16  # asked for: kept, even if emulated
    assert resolve_amp("fp16", CUDA, A100) == torch.float16
    assert not needs_grad_scaler(torch.bfloat16, CUDA) and not needs_grad_scaler(torch.float16, CPU)
    with pytest.raises(ValueError, match="train.precision 'fp8'.*auto, fp32, bf16, fp16"):
        resolve_amp("fp8", CUDA, A100)


def test_cpu_trial_parts_use_fp32_whatever_the_gpu(tmp_path: Path) -> None:
    """_build_parts with injected T4 capabilities on the CPU: no autocast, no GradScaler."""
    from trainers.data import prepare_data
    from trainers.loop import _build_parts

    cfg = load_config(_raw(tmp_path))
    data = prepare_data(cfg.data, seed=0)
    parts = _build_parts(cfg, data, CPU, T4)
    assert parts.amp_dtype is None and parts.scaler is None
    assert parts.augment is None  # auto on the CPU: augmented in the loader
    bf16 = load_config(_raw(tmp_path, precision="bf16"))
    assert _build_parts(bf16, data, CPU, T4).amp_dtype == torch.bfloat16


# ------------------------------------------------------------------------------ device


def test_auto_device_picks_cuda_when_usable_else_cpu() -> None:
    assert resolve_device("auto", A100) == CUDA
    assert resolve_device("auto", NO_DRIVER) == CPU  # nothing asked for a GPU: the CPU is fine
    assert resolve_device("cpu", A100, expect_gpu=True) == CPU
    with pytest.raises(ValueError, match="train.device 'gpu'"):
        resolve_device("gpu", A100)


def test_cuda_device_without_a_gpu_fails_with_both_versions() -> None:
    with pytest.raises(GPUUnavailableError) as info:
        resolve_device("cuda", OLD_DRIVER)
    msg = str(info.value)
    assert "train.device=cuda" in msg
    assert "built for CUDA 13.0" in msg and "supports CUDA 12.4" in msg
    assert "upgrade the driver" in msg and "train.device=cpu" in msg


def test_a_trial_given_a_gpu_never_falls_back_to_the_cpu() -> None:
    with pytest.raises(GPUUnavailableError, match="given a GPU .*CUDA_VISIBLE_DEVICES='0'"):
        resolve_device("auto", NO_DRIVER, expect_gpu=True)


@pytest.mark.parametrize(
    ("caps", "phrase"),
    [
        (OLD_DRIVER, "driver is older than torch's CUDA build"),
        (NO_DRIVER, "no NVIDIA driver answered"),
        (CPU_BUILD, "CPU-only build"),
        (HIDDEN, "CUDA_VISIBLE_DEVICES='' hides every GPU"),
        (
            DeviceCapabilities(
                False, 0, torch_cuda_version="12.8", driver_cuda_version="12.8", visible_devices="0"
            ),
            "no usable CUDA device",
        ),
    ],
    ids=["old-driver", "no-driver", "cpu-build", "hidden", "other"],
)
def test_cuda_problem_names_the_cause(caps: DeviceCapabilities, phrase: str) -> None:
    msg = cuda_problem(caps)
    assert phrase in msg
    assert f"built for CUDA {caps.torch_cuda_version or 'none'}" in msg
    assert "driver supports CUDA" in msg


def test_newer_driver_is_not_blamed() -> None:
    newer = DeviceCapabilities(False, 0, torch_cuda_version="12.4", driver_cuda_version="12.10",
                               visible_devices="0")  # fmt: skip
    assert "older than" not in cuda_problem(newer)  # 12.10 > 12.4 numerically, not as text


def test_gpus_allotted_reads_cuda_visible_devices() -> None:
    assert gpus_allotted({"CUDA_VISIBLE_DEVICES": "0"})
    assert gpus_allotted({"CUDA_VISIBLE_DEVICES": "1,3"})
    assert not gpus_allotted({"CUDA_VISIBLE_DEVICES": ""})  # Ray: a trial without a GPU
    assert not gpus_allotted({"CUDA_VISIBLE_DEVICES": "-1"})
    assert not gpus_allotted({})


def test_driver_version_text() -> None:
    assert _cuda_version_text(12040) == "12.4"
    assert _cuda_version_text(13000) == "13.0"
    assert _cuda_version_text(0) is None and _cuda_version_text(-1) is None


def test_probe_on_this_machine_is_consistent() -> None:
    caps = probe_capabilities()
    assert caps.torch_cuda_version == torch.version.cuda
    assert caps.cuda_available == torch.cuda.is_available()
    if not caps.cuda_available:
        assert caps.device_count == 0 and not caps.bf16_native
        assert resolve_device("auto", caps) == CPU
        assert cuda_problem(caps)  # a reason is always given


# ----------------------------------------------------------------------- the trial entry


def _raw(tmp_path: Path, **train_opts: Any) -> dict[str, Any]:
    return {
        "seed": 1,
        "data": {"synthetic": {"layout": "cnmc-kaggle", "subjects_per_class": 4,
                               "cells_per_subject": 3, "size": 32},
                 "synthetic_dir": str(tmp_path / "data"), "input_size": 32, "batch_size": 8},
        "model": {"backbone": "test_resnet"},
        "train": {"epochs": 1, "threads": 2, **train_opts},
    }  # fmt: skip


def test_train_with_a_gpu_it_cannot_use_fails_before_reading_data(tmp_path: Path) -> None:
    cfg = load_config(_raw(tmp_path))
    with pytest.raises(GPUUnavailableError, match="supports CUDA 12.4"):
        train(cfg, out_dir=tmp_path / "out", expect_gpu=True, capabilities=OLD_DRIVER)
    assert not (tmp_path / "data").exists()  # failed at once: no dataset was synthesised
    cuda = load_config(_raw(tmp_path, device="cuda"))
    with pytest.raises(GPUUnavailableError, match="train.device=cuda"):
        train(cuda, out_dir=tmp_path / "out", capabilities=NO_DRIVER)


def test_train_reads_a_gpu_allotment_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # what Ray sets for a trial given GPU 0
    with pytest.raises(GPUUnavailableError, match="given a GPU"):
        train(load_config(_raw(tmp_path)), out_dir=tmp_path / "out", capabilities=NO_DRIVER)


# --------------------------------------------------------------------- augmentation place


def test_augment_on_auto_is_device_on_cuda_and_loader_on_the_cpu() -> None:
    assert resolve_augment_on("auto", CUDA) == "device"
    assert resolve_augment_on("auto", CPU) == "loader"
    assert resolve_augment_on("device", CPU) == "device"
    assert resolve_augment_on("loader", CUDA) == "loader"
    with pytest.raises(ValueError, match="data.augment_on 'gpu'"):
        resolve_augment_on("gpu", CUDA)


def test_exact_fp32_turns_tf32_off_and_restores_it() -> None:
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    before = (cudnn.allow_tf32, matmul.allow_tf32)
    cudnn.allow_tf32 = True
    try:
        with exact_fp32():
            assert not cudnn.allow_tf32 and not matmul.allow_tf32
            assert cudnn.conv.fp32_precision != "tf32"
        assert cudnn.allow_tf32 and cudnn.conv.fp32_precision == "tf32"
    finally:
        cudnn.allow_tf32, matmul.allow_tf32 = before
