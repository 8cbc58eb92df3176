"""One trial as a pure function: ``train(config, report=callback) -> TrialResult``.

No Ray here: the search stage wraps :func:`train` and forwards ``report``'s dicts to whatever
its tuner calls reporting. The steps are short functions with explicit arguments
(:func:`build_model`, :func:`build_loaders`, :func:`train_one_epoch`, :func:`evaluate`,
:func:`predict`) so tests and benchmarks can call each one alone.

>>> from trainers.config import load_config
>>> cfg = load_config("configs/train_smoke.yaml", ["train.epochs=1"])  # doctest: +SKIP
>>> result = train(cfg, out_dir=Path("runs/smoke"))                    # doctest: +SKIP
>>> result.best_epoch, result.predictions_path.name                    # doctest: +SKIP
(1, 'test_resnet-....parquet')
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from trainers._atomic import remove_leftovers
from trainers.checkpoint import (
    MODEL_FILE,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    save_model_weights,
)
from trainers.config import LossConfig, ModelConfig, TrainConfig, TrialConfig, config_hash
from trainers.errors import WenError
from trainers.metrics import score
from trainers.models import backbone_problem, create_model, model_data_config
from trainers.optim import (
    create_optimizer,
    create_scheduler,
    current_lr,
    cycle_of,
    trough_epochs,
)
from trainers.predictions import prediction_frame, write_predictions
from trainers.run_layout import RUN_LAYOUT, snapshot_id

if TYPE_CHECKING:
    from torch.utils.data import DataLoader

    from trainers.data import PreparedData

__all__ = [
    "DeviceCapabilities",
    "DeviceInputs",
    "GPUUnavailableError",
    "Snapshot",
    "TrialResult",
    "build_loaders",
    "build_loss",
    "build_model",
    "evaluate",
    "exact_fp32",
    "predict",
    "probe_capabilities",
    "resolve_amp",
    "resolve_augment_on",
    "resolve_device",
    "train",
    "train_one_epoch",
]

log = logging.getLogger("wen.train")

Report = Callable[[dict[str, Any]], None]
EVAL_SPLITS = ("val", "test", "final")


@dataclass
class TrialResult:
    """What one trial leaves behind.

    ``best_metrics`` is the report of the best epoch; ``test_metrics`` scores the best
    checkpoint's test predictions (empty without a labelled test split).
    """

    trial_id: str
    best_epoch: int
    best_metrics: dict[str, Any]
    history: list[dict[str, Any]]
    predictions_path: Path | None
    checkpoint_dir: Path | None
    config_hash: str
    test_metrics: dict[str, float] = field(default_factory=dict)
    snapshots: list[Snapshot] = field(default_factory=list)


@dataclass(frozen=True)
class Snapshot:
    """The weights at one learning-rate trough, written as a prediction file of their own.

    ``id`` is ``<trial_id>@e<epoch>`` (``trainers.run_layout.snapshot_id``); ``weights`` the
    safetensors file of those weights, ``OUT/snapshots/<id>/model.safetensors`` under the
    trial's folder (the search stage moves it to ``RUN/models/<id>/``); ``test_metrics``
    scores its test predictions.
    """

    id: str
    trial_id: str
    epoch: int
    cycle: int
    predictions: Path
    weights: Path
    test_metrics: dict[str, float] = field(default_factory=dict)


# ------------------------------------------------------------------------------- runtime


class GPUUnavailableError(WenError, RuntimeError):
    """A trial was given a GPU (``train.device=cuda`` or GPUs from Ray) and cannot use CUDA."""


@dataclass(frozen=True)
class DeviceCapabilities:
    """What this process can do with CUDA; :func:`probe_capabilities` measures it.

    Tests build one by hand to exercise every device and precision branch on the CPU.
    ``torch_cuda_version`` is the CUDA version torch was built for (``torch.version.cuda``,
    None on a CPU-only build); ``driver_cuda_version`` the newest CUDA the installed NVIDIA
    driver supports (None when no driver answers); ``visible_devices`` is
    ``CUDA_VISIBLE_DEVICES`` as set (None when unset).

    >>> DeviceCapabilities(cuda_available=False).describe()
    'CUDA unavailable (0 device(s)); torch built for CUDA none, driver supports CUDA unknown'
    """

    cuda_available: bool
    device_count: int = 0
    bf16_native: bool = False
    torch_cuda_version: str | None = None
    driver_cuda_version: str | None = None
    visible_devices: str | None = None
    device_name: str | None = None

    def describe(self) -> str:
        """One line for logs and error messages."""
        state = "available" if self.cuda_available else "unavailable"
        name = f" {self.device_name}," if self.device_name else ""
        return (
            f"CUDA {state} ({self.device_count} device(s)){name}; torch built for CUDA "
            f"{self.torch_cuda_version or 'none'}, driver supports CUDA "
            f"{self.driver_cuda_version or 'unknown'}"
        )


def _cuda_version_text(version: int) -> str | None:
    """``12040 -> "12.4"`` (the CUDA API's integer encoding); None for 0 or less (no driver)."""
    if version <= 0:
        return None
    return f"{version // 1000}.{(version % 1000) // 10}"


def driver_cuda_version() -> str | None:
    """The newest CUDA version the installed NVIDIA driver supports, or None when unknown.

    Asks, in turn, torch's own binding (older torch), ``cuda.bindings`` (a dependency of
    torch's CUDA wheels) and NVML (``pynvml``); none of them needs a working CUDA context, so
    this answers even when torch cannot use the GPU. Every failure means "unknown".
    """
    getter = getattr(torch._C, "_cuda_getDriverVersion", None)
    if getter is not None:
        with contextlib.suppress(Exception):
            return _cuda_version_text(int(getter()))
    with contextlib.suppress(Exception):
        from cuda.bindings import runtime

        err, version = runtime.cudaDriverGetVersion()
        if int(err) == 0:
            return _cuda_version_text(int(version))
    with contextlib.suppress(Exception):
        import pynvml

        pynvml.nvmlInit()
        try:
            return _cuda_version_text(int(pynvml.nvmlSystemGetCudaDriverVersion()))
        finally:
            pynvml.nvmlShutdown()
    return None


def probe_capabilities() -> DeviceCapabilities:
    """Measure this process's CUDA capabilities (cheap; no kernel is launched)."""
    import warnings

    with warnings.catch_warnings():
        # "CUDA initialization: the driver is too old" etc.: the error message says it better
        warnings.simplefilter("ignore")
        available = bool(torch.cuda.is_available())
    count = torch.cuda.device_count() if available else 0
    bf16 = False
    name = None
    if available and count:
        bf16 = bool(torch.cuda.is_bf16_supported(including_emulation=False))
        name = torch.cuda.get_device_name(0)
    return DeviceCapabilities(
        cuda_available=available,
        device_count=count,
        bf16_native=bf16,
        torch_cuda_version=torch.version.cuda,
        driver_cuda_version=driver_cuda_version(),
        visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
        device_name=name,
    )


def gpus_allotted(env: dict[str, str] | None = None) -> bool:
    """Whether ``CUDA_VISIBLE_DEVICES`` names a GPU (Ray sets it to a trial's GPU ids).

    Unset, empty or ``-1`` mean none (Ray sets it empty for a trial with no GPU).
    """
    value = (os.environ if env is None else env).get("CUDA_VISIBLE_DEVICES")
    return value is not None and value.strip() not in ("", "-1")


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".") if p.isdigit())


def cuda_problem(caps: DeviceCapabilities) -> str:
    """Why CUDA is unusable, with both CUDA versions and the fix (for a CUDA-less ``caps``)."""
    versions = (f"torch {torch.__version__} is built for CUDA {caps.torch_cuda_version or 'none'}"
                f", the NVIDIA driver supports CUDA {caps.driver_cuda_version or 'unknown (no driver answered)'}")  # fmt: skip
    if caps.torch_cuda_version is None:
        return (
            f"this torch is a CPU-only build ({versions}): install a CUDA build of torch "
            "(pip install -c constraints.txt torch from the CUDA wheel index)"
        )
    if (
        caps.driver_cuda_version is not None
        and _version_tuple(caps.driver_cuda_version) < _version_tuple(caps.torch_cuda_version)[:2]
    ):
        return (
            f"the NVIDIA driver is older than torch's CUDA build ({versions}): upgrade the "
            f"driver to one supporting CUDA {caps.torch_cuda_version}, or install a torch "
            f"built for CUDA {caps.driver_cuda_version} or older"
        )
    if caps.visible_devices is not None and caps.visible_devices.strip() in ("", "-1"):
        return (
            f"CUDA_VISIBLE_DEVICES={caps.visible_devices!r} hides every GPU ({versions}): "
            "unset it or give the GPU ids"
        )
    if caps.driver_cuda_version is None:
        return (
            f"no NVIDIA driver answered ({versions}): install the driver, or run on a "
            "machine with a GPU (nvidia-smi must list it)"
        )
    return (
        f"torch sees no usable CUDA device ({versions}, CUDA_VISIBLE_DEVICES="
        f"{caps.visible_devices!r}): check `nvidia-smi` and the GPU ids"
    )


def resolve_device(
    name: str,
    caps: DeviceCapabilities | None = None,
    *,
    expect_gpu: bool = False,
) -> torch.device:
    """The trial's device for ``train.device=name``; a GPU that cannot be used is an error.

    ``auto`` -> CUDA when usable, else CPU, unless the trial was given a GPU
    (``expect_gpu``: Ray allotted it one): then, as for ``cuda``, an unusable CUDA raises
    :class:`GPUUnavailableError` saying why (:func:`cuda_problem`), instead of training on the
    CPU without a word. ``cpu`` is always the CPU. ``caps`` defaults to
    :func:`probe_capabilities`.
    """
    if name not in ("auto", "cpu", "cuda"):
        raise ValueError(f"unknown train.device {name!r}; valid names: auto, cpu, cuda")
    if name == "cpu":
        if expect_gpu:
            log.warning("this trial was given a GPU but train.device=cpu: it trains on the CPU")
        return torch.device("cpu")
    caps = caps or probe_capabilities()
    if caps.cuda_available and caps.device_count > 0:
        return torch.device("cuda")
    if name == "cuda" or expect_gpu:
        why = (
            "train.device=cuda"
            if name == "cuda"
            else (
                "the trial was given a GPU (CUDA_VISIBLE_DEVICES="
                f"{caps.visible_devices!r}) with train.device=auto"
            )
        )
        raise GPUUnavailableError(
            f"{why}, but CUDA cannot be used: {cuda_problem(caps)}. Or, to train on the CPU on "
            "purpose, set train.device=cpu and search.resources.gpus=0"
        )
    return torch.device("cpu")


def resolve_amp(
    precision: str, device: torch.device, caps: DeviceCapabilities | None = None
) -> torch.dtype | None:
    """Autocast dtype for training: None means fp32.

    ``auto``: on CUDA, bf16 where the GPU computes it natively (Ampere and newer), else fp16
    (with a GradScaler, see :func:`needs_grad_scaler`): T4 and V100 only emulate bf16, slower
    than fp32; on the CPU fp32. ``caps`` defaults to :func:`probe_capabilities` (read only for
    ``auto`` on CUDA).
    """
    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise ValueError(
            f"unknown train.precision {precision!r}; valid names: auto, fp32, bf16, fp16"
        )
    if precision == "auto":
        if device.type != "cuda":
            return None
        caps = caps or probe_capabilities()
        return torch.bfloat16 if caps.bf16_native else torch.float16
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def needs_grad_scaler(amp_dtype: torch.dtype | None, device: torch.device) -> bool:
    """fp16 on CUDA needs loss scaling (its range underflows small gradients); bf16 does not."""
    return amp_dtype == torch.float16 and device.type == "cuda"


def resolve_augment_on(augment_on: str, device: torch.device) -> str:
    """``data.augment_on`` -> ``loader`` or ``device``: ``auto`` is ``device`` on CUDA only.

    On the CPU the per-image path in the loader is the faster one (measured with
    ``python -m benchmarks gpu``; see ``DataConfig.augment_on``).
    """
    if augment_on not in ("auto", "loader", "device"):
        raise ValueError(
            f"unknown data.augment_on {augment_on!r}; valid names: auto, loader, device"
        )
    if augment_on == "auto":
        return "device" if device.type == "cuda" else "loader"
    return augment_on


@contextlib.contextmanager
def exact_fp32() -> Iterator[None]:
    """fp32 that is fp32 on CUDA too: no TF32 in convolutions or matrix products.

    cuDNN runs fp32 convolutions in TF32 (10-bit mantissa) by default on Ampere and newer,
    which moves probabilities by about 1e-3; stored predictions must match the exported
    model (1e-4), so they are computed with TF32 off. The caller's settings come back after.
    """
    # the legacy flags, not the per-operator ``fp32_precision`` API of torch >= 2.9: after
    # setting the new one, reading ``cudnn.allow_tf32`` raises (mixed APIs), and libraries do
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    old = (cudnn.allow_tf32, matmul.allow_tf32)
    cudnn.allow_tf32, matmul.allow_tf32 = False, False
    try:
        yield
    finally:
        cudnn.allow_tf32, matmul.allow_tf32 = old


def epoch_seed(seed: int, epoch: int) -> int:
    """A seed for epoch ``epoch`` of a trial seeded ``seed`` (independent streams per epoch)."""
    digest = hashlib.sha256(f"wen-epoch:{seed}:{epoch}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def augment_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch``'s device-side augmentation (a stream apart from dropout's)."""
    digest = hashlib.sha256(f"wen-augment:{seed}:{epoch}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def _runtime(threads: int | None, deterministic: bool, device: torch.device) -> Iterator[None]:
    """Thread count and determinism for the trial; the caller's settings come back after."""
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    old_benchmark = torch.backends.cudnn.benchmark
    if threads is None and os.environ.get("OMP_NUM_THREADS", "").isdigit():
        threads = int(os.environ["OMP_NUM_THREADS"])  # Ray sets this to the trial's CPUs
    try:
        if threads:
            torch.set_num_threads(threads)
        if deterministic:
            if device.type == "cuda":
                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            # warn_only: a model with an op lacking a deterministic kernel still trains
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        else:
            torch.backends.cudnn.benchmark = device.type == "cuda"
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det)
        torch.backends.cudnn.benchmark = old_benchmark


class DeviceInputs:
    """uint8 NCHW batches -> normalised float tensors on the device (normalising there is free).

    With ``augment`` (a :class:`~trainers.data.batch_augment.BatchAugment`) and a generator,
    the batch is augmented on the device first (``data.augment_on: device``); float input is
    read as [0, 1] (what the batch augmentation returns), integer input as 0-255.

    >>> prep = DeviceInputs((0.5,) * 3, (0.5,) * 3, torch.device("cpu"))
    >>> round(prep(torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)).max().item(), 6)
    1.0
    >>> prep(torch.ones(1, 3, 2, 2)).max().item()
    1.0
    """

    def __init__(
        self,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        device: torch.device,
        channels_last: bool = False,
    ) -> None:
        self.device = device
        self.channels_last = channels_last
        # (x / 255 - mean) / std folded into one multiply-add
        std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.scale = (1.0 / (255.0 * std_t)).to(device)
        self.shift = (-torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) / std_t).to(device)

    def __call__(
        self,
        images: torch.Tensor,
        augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        x = images.to(self.device, non_blocking=True)
        if augment is not None:
            if generator is None:
                raise ValueError("augmenting on the device needs a seeded CPU torch.Generator")
            x = augment(x, generator)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if x.is_floating_point():
            return torch.addcmul(self.shift, x.float(), self.scale * 255.0)
        return torch.addcmul(self.shift, x.float(), self.scale)


# ------------------------------------------------------------------------------- builders


def build_model(model: ModelConfig, num_classes: int, input_size: int) -> nn.Module:
    """The network of ``model`` for ``num_classes`` classes; checks the input size first."""
    problem = backbone_problem(model.backbone, input_size)
    if problem:
        raise ValueError(problem)
    return create_model(
        model.backbone,
        num_classes,
        head=model.head,
        head_hidden=model.head_hidden,
        dropout=model.dropout,
        pretrained=model.pretrained,
        pretrained_path=model.pretrained_path,
        pre_logits=model.pre_logits,
    )


def build_loaders(
    data: PreparedData,
    *,
    batch_size: int,
    eval_batch_size: int | None,
    seed: int,
    num_workers: int,
    augment_on: str = "loader",
    pin_memory: bool = False,
) -> dict[str, DataLoader]:
    """``train`` (rebalanced) plus every non-empty ``val``/``test``/``final`` loader.

    ``augment_on="loader"`` augments training images per image in the loader;
    ``"device"`` leaves them to the trainer (:class:`DeviceInputs` with a batch augmentation).
    """
    loaders = {
        "train": data.loader("train", train=True, batch_size=batch_size, seed=seed,
                             num_workers=num_workers, augment=augment_on, pin_memory=pin_memory)
    }  # fmt: skip
    for split in EVAL_SPLITS:
        if len(data.split_indices(split)):
            loaders[split] = data.loader(
                split,
                train=False,
                batch_size=eval_batch_size or 2 * batch_size,
                seed=seed,
                num_workers=num_workers,
                pin_memory=pin_memory,
            )
    if "val" not in loaders:
        raise ValueError(
            "the validation split is empty: checkpoints are chosen on validation metrics; "
            "change data.split (for example data.split.method=group_holdout)"
        )
    return loaders


def build_loss(
    loss: LossConfig, train_labels: np.ndarray, num_classes: int, device: torch.device
) -> nn.Module:
    """Cross-entropy with optional class weights (``balanced``: n / (k * count)) and smoothing."""
    weights = None
    if loss.class_weights == "balanced":
        counts = np.bincount(np.asarray(train_labels, dtype=np.int64), minlength=num_classes)
        if (counts == 0).any():
            raise ValueError(
                f"loss.class_weights=balanced needs every class in the training split, got "
                f"counts {counts.tolist()}: use explicit weights or fix the split"
            )
        weights = counts.sum() / (num_classes * counts)
    elif isinstance(loss.class_weights, list):
        if len(loss.class_weights) != num_classes:
            raise ValueError(
                f"loss.class_weights has {len(loss.class_weights)} values for {num_classes} "
                "classes: give one weight per class"
            )
        weights = np.asarray(loss.class_weights, dtype=np.float64)
    weight_t = (
        torch.tensor(weights, dtype=torch.float32, device=device) if weights is not None else None
    )
    return nn.CrossEntropyLoss(weight=weight_t, label_smoothing=loss.label_smoothing)


def _autocast(
    device: torch.device, amp_dtype: torch.dtype | None
) -> contextlib.AbstractContextManager:
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


# ------------------------------------------------------------------------------- epochs


def optimizer_step(
    loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None
) -> None:
    """Zero the gradients, backpropagate ``loss`` and step, through ``scaler`` under fp16."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    loss_fn: nn.Module,
    *,
    inputs: DeviceInputs,
    amp_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    max_steps: int | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, Any]:
    """One pass over ``loader``; the schedule steps once per batch.

    ``augment`` (with a seeded CPU ``generator``) augments each whole batch on the device
    before normalising, for a loader built with ``augment="device"``. Returns ``train_loss`` (mean over images), ``lr`` (at the end), ``lr_trace`` (per step),
    ``steps``, ``images``, ``seconds``.
    """
    model.train()
    device = inputs.device
    total = torch.zeros(
        (), dtype=torch.float64, device=device
    )  # summed on device: no sync per step
    n_images, steps, trace = 0, 0, []
    n_batches = len(loader) if max_steps is None else min(len(loader), max_steps)
    start = time.perf_counter()
    for images, labels, _ in loader:
        if steps >= n_batches:
            break
        x = inputs(images, augment, generator)
        y = labels.to(device, non_blocking=True)
        with _autocast(device, amp_dtype):
            loss = loss_fn(model(x), y)
        optimizer_step(loss, optimizer, scaler)
        trace.append(current_lr(optimizer))
        scheduler.step()
        total += loss.detach().double() * len(y)
        n_images += len(y)
        steps += 1
        if on_batch is not None:
            on_batch(steps, n_batches)
    if steps == 0:
        raise RuntimeError("the training loader gave no batches: is the training split empty?")
    train_loss = float(total.item()) / n_images
    if not math.isfinite(train_loss):
        raise FloatingPointError(
            f"training loss is {train_loss}: lower optim.lr or schedule.max_lr, or use fp32"
        )
    return {
        "train_loss": train_loss,
        "lr": current_lr(optimizer),
        "lr_trace": trace,
        "steps": steps,
        "images": n_images,
        "seconds": time.perf_counter() - start,
    }


@torch.no_grad()
def predict(
    model: nn.Module,
    loader: DataLoader,
    *,
    inputs: DeviceInputs,
    amp_dtype: torch.dtype | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logits (float32 [n, k]), labels and manifest rows of every batch of ``loader``.

    ``amp_dtype`` runs the forward pass under autocast (inference benchmarks); the trainer's
    own evaluation and stored predictions pass None, under :func:`exact_fp32`.
    """
    model.eval()
    logits, labels, rows = [], [], []
    for images, y, idx in loader:
        with _autocast(inputs.device, amp_dtype):
            out = model(inputs(images))
        logits.append(out.float().cpu())
        labels.append(y)
        rows.append(idx)
    return (
        torch.cat(logits).numpy().astype(np.float32, copy=False),
        torch.cat(labels).numpy().astype(np.int64, copy=False),
        torch.cat(rows).numpy().astype(np.int64, copy=False),
    )


def evaluate(
    model: nn.Module,
    loader: DataLoader,
    *,
    inputs: DeviceInputs,
    class_names: list[str],
    amp_dtype: torch.dtype | None = None,
    prefix: str = "val_",
) -> dict[str, float]:
    """``val_loss`` (plain cross-entropy) and the study's metrics on ``loader``'s images.

    The trainer calls it with ``amp_dtype=None`` under :func:`exact_fp32`, so validation
    metrics are the fp32 model's, the same numbers its stored predictions give.
    """
    logits, labels, _ = predict(model, loader, inputs=inputs, amp_dtype=amp_dtype)
    probs = torch.softmax(torch.from_numpy(logits).double(), dim=1).numpy()
    metrics = score(labels, probs, class_names)
    known = labels >= 0
    loss = float("nan")
    if known.any():
        ce = nn.functional.cross_entropy(
            torch.from_numpy(logits[known]).double(), torch.from_numpy(labels[known])
        )
        loss = float(ce)
    out = {f"{prefix}loss": loss}
    out.update({f"{prefix}{k}": v for k, v in metrics.items() if k != "logloss"})
    return out


# ----------------------------------------------------------------------------- selection


def _is_better(value: float, best: float | None, metric: str) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return best is None
    if best is None or math.isnan(best):
        return True
    return value < best if metric == "loss" else value > best


def _checkpoint_path(root: Path, epoch: int) -> Path:
    return root / f"epoch_{epoch:04d}"


def _prune_checkpoints(root: Path, keep: int, best_epoch: int) -> None:
    """Keep the ``keep`` latest checkpoints and the best one; delete the rest."""
    done = sorted(p for p in root.glob("epoch_*") if p.is_dir())
    latest = set(done[-keep:])
    for p in done:
        if p not in latest and p != _checkpoint_path(root, best_epoch):
            shutil.rmtree(p, ignore_errors=True)


# --------------------------------------------------------------------------- predictions


def write_trial_predictions(
    model: nn.Module,
    loaders: dict[str, DataLoader],
    data: PreparedData,
    *,
    inputs: DeviceInputs,
    path: Path,
    meta: dict[str, Any],
    config_json: str,
    snapshot_of: str = "",
) -> tuple[Path, dict[str, float]]:
    """Predict val/test/final with ``model`` and write one Parquet file; also score ``test``.

    ``meta`` holds the schema's per-trial columns (trial_id, backbone, config_hash, fold,
    epoch, cycle); ``snapshot_of`` names the parent trial when the file is a snapshot.

    Always in float32 without autocast and without TF32 (:func:`exact_fp32`), whatever the
    training precision: the stored numbers are the fp32 model's, which is what ``wen export``
    writes, so every reported figure matches the exported model (to 1e-4).
    """
    import pandas as pd

    frames, test_metrics = [], {}
    manifest = data.manifest
    for split in EVAL_SPLITS:
        if split not in loaders:
            continue
        with exact_fp32():
            logits, labels, rows = predict(model, loaders[split], inputs=inputs, amp_dtype=None)
        sub = manifest.iloc[rows]
        subjects = [None if pd.isna(s) else str(s) for s in sub["subject_id"]]
        frame = prediction_frame(
            split=split,
            sample_ids=sub["sample_id"].astype(str).tolist(),
            subject_ids=subjects,
            labels=labels,
            logits=logits,
            **meta,
        )
        frames.append(frame)
        if split == "test" and (labels >= 0).any():
            test_metrics = score(labels, frame_probs(frame), data.class_names)
    write_predictions(
        path, pd.concat(frames, ignore_index=True), data.class_names, config_json, snapshot_of
    )
    return path, test_metrics


def frame_probs(frame: Any) -> np.ndarray:
    """The ``probs`` column of a prediction frame as an [n, k] array."""
    return np.stack(frame["probs"].to_numpy()).astype(np.float64)


# ---------------------------------------------------------------------------------- train


@dataclass
class _Parts:
    """Everything a trial builds before its first epoch."""

    model: nn.Module
    inputs: DeviceInputs
    loaders: dict[str, Any]
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler | None
    amp_dtype: torch.dtype | None
    class_names: list[str]
    augment: Any = None  # a BatchAugment when data.augment_on resolves to device


@dataclass
class _Progress:
    """Epoch history and the best epoch so far (stored in every checkpoint)."""

    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    best_value: float | None = None
    best_metrics: dict[str, Any] = field(default_factory=dict)

    def to_state(self) -> dict[str, Any]:
        return {"history": self.history, "best_epoch": self.best_epoch,
                "best_value": self.best_value, "best_metrics": self.best_metrics}  # fmt: skip


def _build_parts(
    trial: TrialConfig,
    data: PreparedData,
    device: torch.device,
    caps: DeviceCapabilities | None = None,
) -> _Parts:
    from trainers.data.batch_augment import create_batch_augmentation

    tc = trial.train
    amp_dtype = resolve_amp(tc.precision, device, caps)
    augment_on = resolve_augment_on(trial.data.augment_on, device)
    model = build_model(trial.model, len(data.class_names), trial.data.input_size).to(device)
    channels_last = device.type == "cuda" and tc.channels_last
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    norm = model_data_config(trial.model.backbone)
    loaders = build_loaders(
        data,
        batch_size=trial.data.batch_size,
        eval_batch_size=trial.data.eval_batch_size,
        seed=trial.seed,
        num_workers=trial.data.num_workers,
        augment_on=augment_on,
        pin_memory=device.type == "cuda",
    )
    train_labels = data.manifest["label"].to_numpy()[data.split_indices("train")]
    optimizer = create_optimizer(model.parameters(), trial.optim)
    iters = len(loaders["train"])
    if tc.max_steps_per_epoch is not None:
        iters = min(iters, tc.max_steps_per_epoch)
    log.info("device %s, autocast %s, augmentation %r on the %s", device,
             amp_dtype or "off (fp32)", trial.data.augmentation, augment_on)  # fmt: skip
    return _Parts(
        model=model,
        inputs=DeviceInputs(norm["mean"], norm["std"], device, channels_last),
        loaders=loaders,
        loss_fn=build_loss(trial.loss, train_labels, len(data.class_names), device),
        optimizer=optimizer,
        scheduler=create_scheduler(optimizer, trial.schedule, iters, tc.epochs),
        scaler=torch.amp.GradScaler("cuda") if needs_grad_scaler(amp_dtype, device) else None,
        amp_dtype=amp_dtype,
        class_names=list(data.class_names),
        augment=create_batch_augmentation(trial.data.augmentation)
        if augment_on == "device"
        else None,
    )


def _resume(path: Path, parts: _Parts) -> tuple[int, _Progress]:
    """Restore weights, optimizer, schedule, scaler and RNG; return the epoch to continue after."""
    state = load_checkpoint(path, parts.model, parts.optimizer, parts.scheduler)
    extra = state.get("extra") or {}
    progress = _Progress(**extra["progress"]) if "progress" in extra else _Progress()
    if parts.scaler is not None and extra.get("scaler"):
        parts.scaler.load_state_dict(extra["scaler"])
    if state.get("rng"):
        restore_rng_state(state["rng"])
    return int(state["epoch"]), progress


def _run_epoch(
    parts: _Parts,
    epoch: int,
    seed: int,
    max_steps: int | None,
    on_batch: Callable[[int, int], None] | None,
) -> dict[str, Any]:
    """Train epoch ``epoch`` (1-based) and evaluate on validation."""
    # Each epoch's randomness is a function of (seed, epoch) alone - dropout through torch's
    # generator, batches through the sampler's epoch - so a resumed run repeats an
    # uninterrupted one exactly.
    torch.manual_seed(epoch_seed(seed, epoch))
    sampler = getattr(parts.loaders["train"].batch_sampler, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch - 1)
    # device-side augmentation draws from its own stream, also a function of (seed, epoch)
    generator = torch.Generator().manual_seed(augment_seed(seed, epoch)) if parts.augment else None
    stats = train_one_epoch(
        parts.model, parts.loaders["train"], parts.optimizer, parts.scheduler, parts.loss_fn,
        inputs=parts.inputs, amp_dtype=parts.amp_dtype, scaler=parts.scaler,
        max_steps=max_steps, on_batch=on_batch, augment=parts.augment, generator=generator,
    )  # fmt: skip
    with exact_fp32():
        val = evaluate(parts.model, parts.loaders["val"], inputs=parts.inputs,
                       class_names=parts.class_names, amp_dtype=None)  # fmt: skip
    return {
        "epoch": epoch,
        "train_loss": stats["train_loss"],
        "lr": stats["lr"],
        **val,
        "images_per_s": stats["images"] / max(stats["seconds"], 1e-9),
        "lr_trace": stats["lr_trace"],
    }


def _select(progress: _Progress, metrics: dict[str, Any], select_metric: str) -> None:
    key = "val_loss" if select_metric == "loss" else f"val_{select_metric}"
    if _is_better(metrics[key], progress.best_value, select_metric):
        progress.best_epoch = metrics["epoch"]
        progress.best_value = metrics[key]
        progress.best_metrics = _scalars(metrics)


def _checkpoint(
    parts: _Parts, root: Path, metrics: dict[str, Any], progress: _Progress, keep: int
) -> Path:
    """Write this epoch's checkpoint (history included) and prune old ones."""
    path = _checkpoint_path(root, metrics["epoch"])
    after = _Progress(progress.history + [_scalars(metrics)], progress.best_epoch,
                      progress.best_value, progress.best_metrics)  # fmt: skip
    extra: dict[str, Any] = {"progress": after.to_state()}
    if parts.scaler is not None:
        extra["scaler"] = parts.scaler.state_dict()
    save_checkpoint(path, parts.model, parts.optimizer, parts.scheduler, metrics["epoch"],
                    _scalars(metrics), capture_rng_state(), extra)  # fmt: skip
    _prune_checkpoints(root, keep, progress.best_epoch)
    return path


def _default_trial_id(config: TrialConfig, chash: str) -> str:
    return f"{config.model.backbone}-s{config.seed}-{chash[:8]}"


def train(
    config: TrialConfig,
    report: Report | None = None,
    *,
    out_dir: Path,
    trial_id: str | None = None,
    resume_from: Path | None = None,
    predictions_dir: Path | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    expect_gpu: bool | None = None,
    capabilities: DeviceCapabilities | None = None,
) -> TrialResult:
    """Train one trial, keep the best checkpoint, write its predictions; see the module doc.

    ``report`` gets one dict per epoch: ``epoch, train_loss, lr, lr_trace, val_loss, val_wfs,
    val_acc, val_ba, val_auc, val_kappa, val_f1, val_wp, val_wr, images_per_s, best_epoch`` and
    ``checkpoint_dir`` when a checkpoint was written that epoch. ``resume_from`` continues from
    a checkpoint folder written by an earlier call with the same config. ``on_batch(step,
    steps)`` is called after every training batch (progress bars).

    ``expect_gpu`` says the trial was given a GPU (the search stage passes it; None: a GPU
    named by ``CUDA_VISIBLE_DEVICES``, as Ray sets it, counts); with it, or with
    ``train.device=cuda``, a CUDA that cannot be used raises :class:`GPUUnavailableError`
    before any data is read, instead of training on the CPU. ``capabilities`` replaces
    :func:`probe_capabilities` (tests).
    """
    from trainers.data import prepare_data

    trial = config if type(config) is TrialConfig else config.trial_part()
    chash = config_hash(trial)
    trial_id = trial_id or _default_trial_id(trial, chash)
    ckpt_root = Path(out_dir) / "checkpoints"
    _remove_dead_attempts_files(Path(out_dir))
    tc = trial.train
    caps = capabilities or probe_capabilities()
    expect = gpus_allotted() if expect_gpu is None else expect_gpu
    device = resolve_device(tc.device, caps, expect_gpu=expect)
    with _runtime(tc.threads, tc.deterministic, device):
        seed_everything(trial.seed)
        data = prepare_data(trial.data, seed=trial.seed)
        parts = _build_parts(trial, data, device, caps)
        start, progress = (
            (0, _Progress()) if resume_from is None else _resume(Path(resume_from), parts)
        )
        # a trial's own folder uses the run's name for its predictions
        pred_dir = Path(predictions_dir or Path(out_dir) / RUN_LAYOUT.predictions)
        writer = _PredictionWriter(parts, data, trial, trial_id, chash, pred_dir)
        troughs = set(trough_epochs(trial.schedule, tc.epochs)) if tc.snapshots else set()
        if start in troughs and not writer.has_snapshot(start):
            # resumed from a trough's checkpoint whose snapshot was never written (the trial
            # died between the two): its weights are the snapshot's, so write it now
            writer.snapshot(start, Path(out_dir) / "snapshots")
        for epoch in range(start + 1, tc.epochs + 1):
            metrics = _run_epoch(parts, epoch, trial.seed, tc.max_steps_per_epoch, on_batch)
            _record_epoch(parts, progress, metrics, epoch, tc, ckpt_root)
            if epoch in troughs:
                # before the report: a trial the scheduler stops there keeps this snapshot
                metrics["snapshot"] = writer.snapshot(epoch, Path(out_dir) / "snapshots")
            if report is not None:
                report(metrics)
        best_dir = _checkpoint_path(ckpt_root, progress.best_epoch)
        load_checkpoint(best_dir, parts.model)
        pred_path, test_metrics = writer.best(progress.best_epoch)
    return TrialResult(
        trial_id=trial_id,
        best_epoch=progress.best_epoch,
        best_metrics=progress.best_metrics,
        history=progress.history,
        predictions_path=pred_path,
        checkpoint_dir=best_dir,
        config_hash=chash,
        test_metrics=test_metrics,
        snapshots=writer.written,
    )


def _remove_dead_attempts_files(out_dir: Path) -> None:
    """One attempt of a trial writes its folder at a time, so a temporary file or staged
    folder there is what a killed attempt was writing when it died (every visible
    checkpoint and snapshot is complete)."""
    remove_leftovers(out_dir / "checkpoints")
    snapshots = out_dir / "snapshots"
    for folder in [snapshots, *(snapshots.iterdir() if snapshots.is_dir() else [])]:
        remove_leftovers(folder)


def _record_epoch(
    parts: _Parts,
    progress: _Progress,
    metrics: dict[str, Any],
    epoch: int,
    tc: TrainConfig,
    ckpt_root: Path,
) -> None:
    """Select the best epoch so far, checkpoint when due, and add the epoch to the history."""
    _select(progress, metrics, tc.select_metric)
    metrics["best_epoch"] = progress.best_epoch
    # which tensors the trial fine-tunes: the pretrained file, or a random start
    metrics["init_weights"] = getattr(parts.model, "init_weights", None) or "random"
    if epoch % tc.checkpoint_every == 0 or epoch == tc.epochs or progress.best_epoch == epoch:
        path = _checkpoint(parts, ckpt_root, metrics, progress, tc.keep_checkpoints)
        metrics["checkpoint_dir"] = str(path)
    progress.history.append(_scalars(metrics))


@dataclass
class _PredictionWriter:
    """Writes a trial's prediction files: the best epoch's and one snapshot per LR trough."""

    parts: _Parts
    data: PreparedData
    trial: TrialConfig
    trial_id: str
    chash: str
    pred_dir: Path
    written: list[Snapshot] = field(default_factory=list)

    def _meta(self, file_id: str, epoch: int) -> dict[str, Any]:
        split = self.trial.data.split
        return {
            "trial_id": file_id,
            "backbone": self.trial.model.backbone,
            "config_hash": self.chash,
            "fold": split.fold if split.method != "group_holdout" else -1,
            "epoch": epoch,
            "cycle": cycle_of(self.trial.schedule, epoch),
        }

    def _write(
        self, file_id: str, epoch: int, path: Path, snapshot_of: str = ""
    ) -> tuple[Path, dict[str, float]]:
        return write_trial_predictions(
            self.parts.model, self.parts.loaders, self.data, inputs=self.parts.inputs,
            path=path, meta=self._meta(file_id, epoch),
            config_json=self.trial.model_dump_json(), snapshot_of=snapshot_of,
        )  # fmt: skip

    def best(self, best_epoch: int) -> tuple[Path, dict[str, float]]:
        """The best epoch's predictions (already loaded into the model) as the trial's file."""
        return self._write(self.trial_id, best_epoch, self.pred_dir / f"{self.trial_id}.parquet")

    def _snapshot_path(self, epoch: int) -> Path:
        return RUN_LAYOUT.snapshot_under(self.pred_dir, snapshot_id(self.trial_id, epoch))

    def has_snapshot(self, epoch: int) -> bool:
        """Whether the snapshot of ``epoch`` is already written (a resumed trial's)."""
        return self._snapshot_path(epoch).is_file()

    def snapshot(self, epoch: int, weights_root: Path) -> Snapshot:
        """The current weights' predictions and weights as snapshot ``<trial_id>@e<epoch>``.

        The weights are written first: a snapshot whose prediction file exists has its
        weights on disk too (still under ``weights_root``, or already moved on by a search),
        so a trial killed in between rewrites both when it resumes (see :func:`train`).
        """
        sid = snapshot_id(self.trial_id, epoch)
        weights = save_model_weights(weights_root / sid / MODEL_FILE, self.parts.model)
        path, test_metrics = self._write(sid, epoch, self._snapshot_path(epoch), self.trial_id)
        snap = Snapshot(sid, self.trial_id, epoch, cycle_of(self.trial.schedule, epoch),
                        path, weights, test_metrics)  # fmt: skip
        self.written.append(snap)
        return snap


def _scalars(metrics: dict[str, Any]) -> dict[str, Any]:
    """The metrics without per-step traces and snapshot records (what history and
    checkpoints keep)."""
    return {k: v for k, v in metrics.items() if k not in ("lr_trace", "snapshot")}
