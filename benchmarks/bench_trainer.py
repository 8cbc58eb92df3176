"""Trial training throughput against a bare PyTorch loop, side by side.

Same synthetic data (one ``prepare_data`` call: decoded-image cache, oversampling, no
augmentation so the data path is cheap and the loop's own overhead shows), same model
(timm ``resnet18``, random weights, 2 classes), same batch size (32 at 64 px), same
optimizer (Adamax) and thread count:

(a) the trial's epoch: the parts ``trainers.train`` builds (``_build_parts``: the model with
    its head, device-side normalisation, cross-entropy, Adamax, the per-batch cyclic
    schedule) run by ``train_one_epoch`` under the trial's runtime settings (deterministic
    algorithms, thread count) - exactly the code a trial runs each epoch, minus evaluation;
(b) a bare loop: ``for x, y, _ in loader: normalise; forward; cross_entropy; backward; step``
    on a plain timm model, no scheduler, default PyTorch settings.

Epochs alternate a, b, b, a, a, b, ... so that load from other processes and warm-up hit both
alike; the ratio is the median of the per-pair ratios after one warm-up pair. Target: (a)
within 5% of (b). On a machine with CUDA both also run there with bf16 autocast and
channels-last; without one a row says GPU throughput is unmeasured. ``WEN_BENCH_QUICK=1``
runs fewer pairs on less data.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

BACKBONE = "resnet18"
SIZE = 64
BATCH = 32
THREADS = 2


def _config(cache: Path, epochs: int, device: str) -> Any:
    """The benchmark trial: synthetic C-NMC-like data in ``cache``."""
    from trainers.config import load_config

    quick = os.environ.get("WEN_BENCH_QUICK") == "1"
    raw = {
        "name": "bench",
        "seed": 0,
        "data": {
            "synthetic": {
                "layout": "cnmc-kaggle",
                "subjects_per_class": 4,
                "cells_per_subject": 40 if quick else 80,
                "size": 96,
            },
            "synthetic_dir": str(cache / "synthetic"),
            "cache_dir": str(cache / "decoded"),
            "input_size": SIZE,
            "batch_size": BATCH,
            "augmentation": "none",
            "balance": "oversample",
        },
        "model": {"backbone": BACKBONE},
        "schedule": {"name": "cyclic"},
        "train": {"epochs": epochs, "threads": THREADS, "device": device, "keep_checkpoints": 1},
    }
    return load_config(raw)


def _trial_epoch(parts: Any, trial: Any, device: Any, epoch: int) -> float:
    """images/s of one training epoch exactly as a trial runs it (evaluation left out)."""
    import torch

    from trainers.loop import _runtime, epoch_seed, train_one_epoch

    with _runtime(trial.train.threads, trial.train.deterministic, device):
        torch.manual_seed(epoch_seed(trial.seed, epoch))
        parts.loaders["train"].batch_sampler.sampler.set_epoch(epoch)
        stats = train_one_epoch(
            parts.model, parts.loaders["train"], parts.optimizer, parts.scheduler, parts.loss_fn,
            inputs=parts.inputs, amp_dtype=parts.amp_dtype, scaler=parts.scaler,
        )  # fmt: skip
        if device.type == "cuda":
            torch.cuda.synchronize()
    return stats["images"] / stats["seconds"]


class _Bare:
    """A plain PyTorch training loop over the same loader."""

    def __init__(self, loader: Any, num_classes: int, device: Any) -> None:
        import timm
        import torch

        from trainers.models import model_data_config

        torch.manual_seed(0)
        self.loader, self.device = loader, device
        self.amp = device.type == "cuda"
        self.model = timm.create_model(BACKBONE, pretrained=False, num_classes=num_classes).to(
            device
        )
        if self.amp:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.Adamax(self.model.parameters(), lr=2e-4)
        norm = model_data_config(BACKBONE)
        self.mean = torch.tensor(norm["mean"], device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(norm["std"], device=device).view(1, 3, 1, 1)

    def epoch(self, epoch: int) -> float:
        import torch

        old = torch.get_num_threads()
        torch.set_num_threads(THREADS)
        try:
            self.loader.batch_sampler.sampler.set_epoch(epoch)
            self.model.train()
            n, start = 0, time.perf_counter()
            for x, y, _ in self.loader:
                x = (x.to(self.device).float() / 255 - self.mean) / self.std
                y = y.to(self.device)
                if self.amp:
                    x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                    loss = torch.nn.functional.cross_entropy(self.model(x), y)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                n += len(y)
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            return n / (time.perf_counter() - start)
        finally:
            torch.set_num_threads(old)


def _compare(device_name: str, pairs: int) -> tuple[float, float, float]:
    """Median trial and bare images/s, and the median per-pair ratio."""
    import torch

    from trainers.data import prepare_data
    from trainers.loop import _build_parts, resolve_device

    with tempfile.TemporaryDirectory(prefix="wen-bench-trainer-") as tmp:
        trial = _config(Path(tmp), pairs + 1, device_name)
        device = resolve_device(device_name)
        data = prepare_data(trial.data, seed=trial.seed)
        torch.manual_seed(trial.seed)
        parts = _build_parts(trial, data, device)
        bare = _Bare(data.loader("train", train=True, batch_size=BATCH, seed=trial.seed),
                     len(data.class_names), device)  # fmt: skip
        trial_rates, bare_rates = [], []
        for i in range(pairs + 1):
            if i % 2 == 0:  # alternate the order: a b | b a | a b ...
                t, b = _trial_epoch(parts, trial, device, i), bare.epoch(i)
            else:
                b, t = bare.epoch(i), _trial_epoch(parts, trial, device, i)
            if i > 0:  # the first pair warms up both (allocator, kernels, caches)
                trial_rates.append(t)
                bare_rates.append(b)
    ratio = statistics.median(t / b for t, b in zip(trial_rates, bare_rates))
    return statistics.median(trial_rates), statistics.median(bare_rates), ratio


def run() -> list[dict[str, Any]]:
    """Rows: trial and bare CPU throughput, their ratio, and the GPU figures (or why none)."""
    import torch

    quick = os.environ.get("WEN_BENCH_QUICK") == "1"
    pairs = 4 if quick else 8
    setup = f"{BACKBONE}, {SIZE} px, batch {BATCH}, {THREADS} threads, Adamax, no augmentation"
    trial, bare, ratio = _compare("cpu", pairs)
    rows = [
        {"name": "trainer: trial training throughput (CPU)", "value": trial, "unit": "images/s",
         "target": "", "note": f"train_one_epoch with the trial's parts and settings; {setup}"},
        {"name": "trainer: bare PyTorch loop throughput (CPU)", "value": bare, "unit": "images/s",
         "target": "", "note": f"same loader, model and optimizer; {setup}"},
        {"name": "trainer: trial / bare loop (CPU)", "value": ratio, "unit": "ratio",
         "target": ">= 0.95", "note": f"median of {pairs} alternating epoch pairs"},
    ]  # fmt: skip
    if torch.cuda.is_available():
        g_trial, _, g_ratio = _compare("cuda", pairs)
        rows += [
            {"name": "trainer: trial training throughput (GPU)", "value": g_trial, "unit": "images/s",
             "target": "", "note": f"bf16 autocast + channels-last; {torch.cuda.get_device_name()}"},
            {"name": "trainer: trial / bare loop (GPU)", "value": g_ratio, "unit": "ratio",
             "target": ">= 0.95", "note": "bare loop also bf16 + channels-last"},
        ]  # fmt: skip
    else:
        rows.append(
            {"name": "trainer: trial training throughput (GPU)", "value": float("nan"),
             "unit": "images/s", "target": "",
             "note": "unmeasured: this machine has no CUDA device; run `make bench` on a GPU host"}
        )  # fmt: skip
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)
