"""GPU check (``make gpu-check``, ``python -m benchmarks gpu``): at most 8 minutes on one GPU.

With a CUDA device it measures and checks, in this order:

(a) every backbone of the main study (configs/mondal2021.yaml's grid: vgg16, legacy_xception,
    mobilenetv1_100, inception_resnet_v2, densenet121) at that preset's input size (300 px: it
    feeds the 300 px centre crop to every network; 224/299 are the networks' native sizes)
    and batch size, as a trial runs it: autocast of ``train.precision: auto`` (bf16 where
    native, else fp16 with a GradScaler), channels-last, Adamax, the trainer's deterministic
    settings. Training and inference images/s and peak GPU memory of each;
(b) four trials of 0.25 GPU sharing one GPU in a tiny Ray search (``search.run_search``,
    ``train.device: cuda``, so a trial that cannot reach the GPU fails instead of using the
    CPU): all four must finish, and the trials' summed time over the search's wall time says
    how much they overlapped;
(c) augmentation on the device (cache slices + Kornia on the GPU, ``data.augment_on: device``)
    against the per-image torchvision path in the DataLoader (``loader``), images/s;
(d) one trial trained on the GPU (reduced-precision autocast): its stored test predictions
    (computed in exact fp32) against the same network
    exported to ONNX (the graph ``wen export`` writes: ``ensemble._graph`` + its exporter) and
    run by onnxruntime on the same images; max |probability difference| <= 1e-4.

Without a GPU it runs (c) and (d) on the CPU at tiny sizes (20-30 s on 2 cores; (d) trains
under bf16 autocast on the CPU, so the fp32 predictions are still checked)
and gives (a) and (b) one row each saying they were skipped and why, so CI keeps this module
working. A failed check is a row whose name ends in ``FAILED`` (the runner then exits 1).
"""

from __future__ import annotations

import contextlib
import io
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
STUDY = REPO / "configs" / "mondal2021.yaml"
PARITY_ATOL = 1e-4
SKIPPED = "skipped: no usable CUDA device"


def _row(name: str, value: Any, unit: str, note: str, target: str = "") -> dict[str, Any]:
    return {"name": f"gpu: {name}", "value": value, "unit": unit, "target": target, "note": note}


def _skipped(name: str, caps: Any) -> dict[str, Any]:
    return _row(name, float("nan"), "", f"{SKIPPED} ({caps.describe()})")


def study_setting() -> tuple[list[str], int, int]:
    """The main study preset's backbone grid, input size and batch size."""
    raw = yaml.safe_load(STUDY.read_text())
    backbones = raw["search"]["space"]["model.backbone"]["values"]
    return list(backbones), int(raw["data"]["input_size"]), int(raw["data"]["batch_size"])


# ------------------------------------------------------------------ (a) the study backbones


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_gib(device: Any) -> float:
    """Peak allocated GPU memory since the last reset (NaN off CUDA)."""
    import torch

    return (
        torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    )


def _reset_peak(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _timed(step: Any, repeats: int, device: Any) -> float:
    """Median seconds of ``step()`` after two warm-up calls (allocator, cuDNN plans)."""
    for _ in range(2):
        step()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _backbone(
    name: str, size: int, batch: int, caps: Any, device: Any, repeats: int = 8
) -> list[dict[str, Any]]:
    """Training and inference images/s and peak memory of ``name`` as a trial runs it (on any
    device: the test runs it on the CPU with a tiny network)."""
    import torch

    from trainers.config import ModelConfig, TrainConfig
    from trainers.loop import (DeviceInputs, _autocast, _runtime, build_model, needs_grad_scaler,
                               optimizer_step, resolve_amp)  # fmt: skip
    from trainers.models import model_data_config

    tc = TrainConfig()
    amp = resolve_amp(tc.precision, device, caps)
    with _runtime(None, tc.deterministic, device):
        torch.manual_seed(0)
        model = build_model(ModelConfig(backbone=name, pretrained=False), 2, size).to(device)
        model = model.to(memory_format=torch.channels_last)
        norm = model_data_config(name)
        inputs = DeviceInputs(norm["mean"], norm["std"], device, channels_last=True)
        optimizer = torch.optim.Adamax(model.parameters(), lr=2e-4)
        scaler = torch.amp.GradScaler("cuda") if needs_grad_scaler(amp, device) else None
        images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8)
        labels = torch.randint(0, 2, (batch,), device=device)

        def train_step() -> None:
            with _autocast(device, amp):
                loss = torch.nn.functional.cross_entropy(model(inputs(images)), labels)
            optimizer_step(loss, optimizer, scaler)

        model.train()
        _reset_peak(device)
        train_s = _timed(train_step, repeats, device)
        train_mem = _peak_gib(device)
        optimizer.zero_grad(set_to_none=True)  # frees the gradients before inference
        eval_images = torch.cat([images, images])

        def infer_step() -> None:
            with torch.inference_mode(), _autocast(device, amp):
                model(inputs(eval_images))

        model.eval()
        _reset_peak(device)
        infer_s = _timed(infer_step, repeats, device)
        infer_mem = _peak_gib(device)
    setting = f"{size} px, {amp} autocast, channels-last"
    model.to("cpu")  # frees the GPU memory before the next backbone
    _reset_peak(device)
    return [
        _row(f"{name} training", batch / train_s, "img/s", f"batch {batch}, {setting}, Adamax"),
        _row(f"{name} training peak memory", train_mem, "GiB", "torch.cuda.max_memory_allocated"),
        _row(f"{name} inference", 2 * batch / infer_s, "img/s", f"batch {2 * batch}, {setting}"),
        _row(f"{name} inference peak memory", infer_mem, "GiB", "torch.cuda.max_memory_allocated"),
    ]


def backbones(caps: Any) -> list[dict[str, Any]]:
    """(a): the study's backbones on the GPU, or one row saying they were skipped."""
    import torch

    names, size, batch = study_setting()
    if not caps.cuda_available:
        return [_skipped(f"study backbones ({', '.join(names)}) at {size} px", caps)]
    rows = []
    for name in names:
        rows += _backbone(name, size, batch, caps, torch.device("cuda"))
    return rows


# -------------------------------------------------------------- (b) four trials on one GPU


def _shared_search_config(tmp: Path) -> Any:
    """configs/smoke.yaml as 4 grid trials of resnet18, each 0.25 GPU with train.device=cuda."""
    from search.run import load_search_config

    return load_search_config(str(REPO / "configs" / "smoke.yaml"), [
        "data.synthetic.subjects_per_class=4", "data.synthetic.cells_per_subject=24",
        "data.synthetic.size=96", "data.input_size=64", "data.batch_size=32",
        f"data.synthetic_dir={tmp / 'search-data'}", f"data.cache_dir={tmp / 'cache'}",
        "model.backbone=resnet18", "train.epochs=3", "train.device=cuda", "train.threads=1",
        "search.algorithm=grid", "search.folds=[0]", "search.max_concurrent=4",
        "search.space={optim.lr: {type: grid, values: [1.0e-4, 3.0e-4, 1.0e-3, 3.0e-3]}}",
        "search.resources.cpus=1", "search.resources.gpus=0.25", "search.report_every_s=60",
    ])  # fmt: skip


def shared_gpu_search(caps: Any, tmp: Path) -> list[dict[str, Any]]:
    """(b): four 0.25-GPU trials of a tiny search on one GPU, or a row saying it was skipped."""
    if not caps.cuda_available:
        return [_skipped("4 trials x 0.25 GPU in one Ray search", caps)]
    import ray

    from search.run import run_search

    config = _shared_search_config(tmp)
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        outcome = run_search(
            config,
            storage=str(tmp / "runs"),
            name="gpu-share",
            num_cpus=min(8, os.cpu_count() or 1),
            say=lambda _m: None,
        )
    wall = time.perf_counter() - start
    if ray.is_initialized():
        ray.shutdown()
    frame = outcome.results
    done = int((frame["status"] == "TERMINATED").sum()) if not frame.empty else 0
    overlap = float(frame["time_total_s"].sum()) / wall if done else float("nan")
    name = "4 trials x 0.25 GPU: finished on the GPU" + ("" if done == 4 else " FAILED")
    return [
        _row(
            name,
            done,
            "trials",
            f"{outcome.errors} errored; train.device=cuda, resnet18 at 64 px, 3 epochs each",
            target=">= 4",
        ),
        _row(
            "4 trials x 0.25 GPU: overlap",
            overlap,
            "x",
            f"sum of trial times / search wall {wall:.0f} s (Ray's start included); 1 = serial",
        ),
    ]


# ---------------------------------------------------------- (c) augmentation: device vs loader


def _data(tmp: Path, size: int, input_size: int, cells: int, augmentation: str) -> Any:
    """A small synthetic C-NMC set, prepared (split, cached) as a trial would."""
    from trainers.config import DataConfig
    from trainers.data import prepare_data

    config = DataConfig(
        synthetic={"layout": "cnmc-kaggle", "subjects_per_class": 4, "cells_per_subject": cells,
                   "size": size},
        synthetic_dir=tmp / f"data-{size}-{cells}", cache_dir=tmp / "cache",
        crop={"fraction": 2 / 3 if size >= 450 else 1.0}, input_size=input_size,
        augmentation=augmentation,
    )  # fmt: skip
    return prepare_data(config, seed=0)


def _epochs(loader: Any) -> Any:
    """The loader's batches, epoch after epoch."""
    while True:
        yield from loader


def _rate(loader: Any, consume: Any, batches: int) -> float:
    """Images per second over ``batches`` batches of ``loader`` (one warm-up batch first)."""
    it = _epochs(loader)
    consume(next(it)[0])
    n, start = 0, time.perf_counter()
    for _ in range(batches):
        images = next(it)[0]
        consume(images)
        n += len(images)
    return n / (time.perf_counter() - start)


def augmentation(caps: Any, tmp: Path) -> list[dict[str, Any]]:
    """(c): images/s of the two augmentation paths on this machine's training device."""
    import torch

    from trainers.data.batch_augment import create_batch_augmentation
    from trainers.loop import DeviceInputs

    gpu = caps.cuda_available
    _, study_size, batch = study_setting()
    size, input_size, batches, workers = ((450, study_size, 20, min(4, os.cpu_count() or 1))
                                          if gpu else (64, 64, 12, 0))  # fmt: skip
    cells = 40 if gpu else 8
    batch = batch if gpu else 16
    device = torch.device("cuda" if gpu else "cpu")
    inputs = DeviceInputs((0.5,) * 3, (0.5,) * 3, device)

    def sync() -> None:
        if gpu:
            torch.cuda.synchronize()

    rows = []
    for preset in ("paper", "strong"):
        data = _data(tmp, size, input_size, cells, preset)
        aug, gen = create_batch_augmentation(preset), torch.Generator().manual_seed(0)
        common = {"batch_size": batch, "seed": 0, "num_workers": workers, "pin_memory": gpu}
        loader = _rate(data.loader("train", train=True, augment="loader", **common),
                       lambda x: (inputs(x), sync()), batches)  # fmt: skip
        on_device = _rate(data.loader("train", train=True, augment="device", **common),
                          lambda x, aug=aug, gen=gen: (inputs(x, aug, gen), sync()), batches)  # fmt: skip
        where = "GPU" if gpu else "CPU"
        note = (
            f"{input_size} px, batch {batch}, num_workers={workers}, to the {where} and normalised"
        )
        rows += [
            _row(f"augment {preset}: loader (torchvision per image)", loader, "img/s", note),
            _row(f"augment {preset}: device (Kornia on the {where})", on_device, "img/s", note),
            _row(
                f"augment {preset}: device / loader",
                on_device / loader,
                "x",
                "data.augment_on: auto picks device on CUDA, loader on the CPU",
            ),
        ]
    return rows


# ------------------------------------------------------------------ (d) predictions vs ONNX


def _trial(tmp: Path, gpu: bool) -> tuple[Any, Any]:
    """Train one tiny trial on this machine's device; (its config, its TrialResult)."""
    from trainers import load_config, train

    raw = {
        "seed": 0,
        "data": {"synthetic": {"layout": "cnmc-kaggle", "subjects_per_class": 4,
                               "cells_per_subject": 8, "size": 48},
                 "synthetic_dir": str(tmp / "parity-data"), "cache_dir": str(tmp / "cache"),
                 "input_size": 48, "batch_size": 16, "augmentation": "strong"},
        "model": {"backbone": "test_resnet"},
        # on the CPU bf16 autocast stands in for the GPU's reduced precision: the stored
        # predictions must still be the fp32 network's
        "train": {"epochs": 2, "device": "cuda" if gpu else "cpu",
                  "precision": "auto" if gpu else "bf16"},
    }  # fmt: skip
    config = load_config(raw)
    return config, train(config, out_dir=tmp / "parity-trial")


def _onnx_probs(
    config: Any, checkpoint: Path, images: Any, class_names: list[str], tmp: Path
) -> Any:
    """The trial's network exported as ``wen export`` does, run by onnxruntime on ``images``."""
    import torch

    from ensemble._graph import MemberNet, create_ensemble_module
    from ensemble.combiners import weighted_average
    from ensemble.export import INPUT_NAME, OUTPUT_NAME, _onnx_export, onnx_session
    from trainers.checkpoint import load_checkpoint
    from trainers.loop import build_model
    from trainers.models import model_data_config

    size = config.data.input_size
    net = build_model(config.model, len(class_names), size)
    load_checkpoint(checkpoint, net)
    norm = model_data_config(config.model.backbone)
    member = MemberNet([net.eval()], norm["mean"], norm["std"], size, size)
    module = create_ensemble_module([member], weighted_average(), [1.0], len(class_names))
    path = tmp / "parity.onnx"
    example = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    exporter = _onnx_export(module, example, path, say=lambda _m: None)
    session = onnx_session(path)
    x = (images.float() / 255).numpy()
    return session.run([OUTPUT_NAME], {INPUT_NAME: x})[0], exporter


def onnx_parity(caps: Any, tmp: Path) -> list[dict[str, Any]]:
    """(d): one trial's stored test probabilities against its ONNX export, same images."""
    import numpy as np
    import torch

    from trainers.data import prepare_data
    from trainers.loop import frame_probs
    from trainers.predictions import read_predictions

    gpu = caps.cuda_available
    config, result = _trial(tmp, gpu)
    pset = read_predictions(result.predictions_path)
    test = pset.frame[pset.frame["split"] == "test"]
    data = prepare_data(config.data, seed=config.seed)
    batches = list(data.loader("test", train=False, batch_size=64))
    images = torch.cat([b[0] for b in batches])
    rows = torch.cat([b[2] for b in batches]).numpy()
    onnx, exporter = _onnx_probs(config, result.checkpoint_dir, images, data.class_names, tmp)
    ids = data.manifest["sample_id"].astype(str).to_numpy()[rows]
    stored = frame_probs(test.set_index(test["sample_id"].astype(str)).loc[ids])
    worst = float(np.abs(stored - onnx).max())
    ok = worst <= PARITY_ATOL and len(ids) == len(test)
    where = (f"trained on the GPU ({caps.device_name}, autocast auto)" if gpu
             else "trained on the CPU under bf16 autocast")  # fmt: skip
    name = "stored test predictions vs ONNX export" + ("" if ok else " FAILED")
    return [
        _row(
            name,
            worst,
            "max |dp|",
            f"{len(ids)} test images; {where}; stored in exact fp32; onnxruntime {exporter}",
            target=f"<= {PARITY_ATOL:g}",
        )
    ]


# ---------------------------------------------------------------------------------- run


def run() -> list[dict[str, Any]]:
    """Every part that this machine can run; the GPU-only parts say when they were skipped."""
    from trainers.loop import probe_capabilities

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    caps = probe_capabilities()
    rows = [_row("device", caps.device_count, "GPUs", caps.describe())]
    with tempfile.TemporaryDirectory(prefix="wen-bench-gpu-") as tmp:
        parts = [("backbones", lambda: backbones(caps)),
                 ("shared search", lambda: shared_gpu_search(caps, Path(tmp))),
                 ("augmentation", lambda: augmentation(caps, Path(tmp))),
                 ("ONNX parity", lambda: onnx_parity(caps, Path(tmp)))]  # fmt: skip
        for label, part in parts:
            start = time.perf_counter()
            got = part()
            rows += got
            if not all(r["note"].startswith(SKIPPED) for r in got):
                rows.append(_row(f"{label}: time", time.perf_counter() - start, "s", ""))
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)
