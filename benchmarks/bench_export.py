"""Exported-ensemble inference on CPU: onnxruntime against eager PyTorch, images/s at batch 32.

The ensemble is what ``wen export`` writes: a run folder is assembled with three timm
backbones of the study's kind (``resnet18``, ``efficientnet_b0``, ``mobilenetv3_large_100``;
random weights, 2 classes, 224 px) as one-trial members under ``sap`` weights, then
``ensemble.export.export_ensemble`` exports it. Both backends get the same pre-processed
float32 batch of 32 and the same thread count:

(a) ``ensemble.onnx`` on onnxruntime's CPU provider (graph optimisations on, as
    ``wen predict`` runs it);
(b) the eager PyTorch module ``wen predict --backend torch`` rebuilds from the safetensors
    files, under ``torch.inference_mode``.

Batches alternate a, b, b, a, ... so load from other processes hits both alike; each figure
is the median over batches after one warm-up pair, the ratio the median of per-pair ratios.
Target: onnxruntime at least 1.3x eager PyTorch. ``WEN_BENCH_QUICK=1``: 128 px, fewer pairs.
``WEN_BENCH_THREADS`` sets the thread count (default 2, the reference machine).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

QUICK = os.environ.get("WEN_BENCH_QUICK", "") not in ("", "0")
BACKBONES = ("resnet18", "efficientnet_b0", "mobilenetv3_large_100")
SIZE = 128 if QUICK else 224
BATCH = 32
PAIRS = 3 if QUICK else 5
THREADS = int(os.environ.get("WEN_BENCH_THREADS", "2"))
CLASSES = ["hem", "all"]


def _row(name: str, value: float, unit: str, target: str = "", note: str = "") -> dict[str, Any]:
    return {"name": name, "value": float(value), "unit": unit, "target": target, "note": note}


def build_run(root: Path) -> Path:
    """A run folder with ``models/`` and ``ensemble/`` as ``wen search``/``wen ensemble``
    write them, for :data:`BACKBONES` under equal (``sap``) weights."""
    import torch
    from safetensors.torch import save

    from trainers.config import TrialConfig
    from trainers.models import create_model
    from trainers.run_layout import RUN_LAYOUT, publish_member

    run = root / "run"
    members = []
    for i, backbone in enumerate(BACKBONES):
        trial = f"m{i}-{backbone}"
        config = TrialConfig.model_validate(
            {
                "data": {"input_size": SIZE, "root": str(root / "images")},
                "model": {"backbone": backbone},
            }
        )
        torch.manual_seed(i)
        model = create_model(backbone, len(CLASSES))
        publish_member(
            run,
            trial,
            save({k: v.contiguous() for k, v in model.state_dict().items()}),
            {"trial_id": trial, "class_names": CLASSES, "config": config.model_dump(mode="json")},
        )
        members.append({"name": trial, "trial_ids": [trial], "backbone": backbone})
    weights = {m["name"]: 1 / len(members) for m in members}
    (run / RUN_LAYOUT.ensemble).mkdir()
    (run / RUN_LAYOUT.ensemble_weights).write_text(
        json.dumps(
            {"members": members, "methods": {"sap": {"weights": weights, "threshold": None}}}
        )
    )
    (run / RUN_LAYOUT.chosen).write_text(
        json.dumps(
            {
                "method": "sap",
                "threshold": None,
                "class_names": CLASSES,
                "members": [{**m, "weight": weights[m["name"]]} for m in members],
            }
        )
    )
    (run / RUN_LAYOUT.comparison).write_text("method,split,how\nsap,test,benchmark: no metrics\n")
    return run


def _timed(fn: Any, x: Any) -> float:
    start = time.perf_counter()
    fn(x)
    return time.perf_counter() - start


def _alternating_pairs(
    run_ort: Any, x: Any, run_torch: Any, xt: Any
) -> tuple[list[float], list[float]]:
    """Seconds per batch of each backend, timed in pairs whose order alternates."""
    t_ort, t_torch = [], []
    for i in range(PAIRS + 1):  # the first pair warms up (allocators, kernels)
        order = ("ort", "torch") if i % 2 == 0 else ("torch", "ort")
        pair = {}
        for which in order:
            pair[which] = _timed(run_ort, x) if which == "ort" else _timed(run_torch, xt)
        if i:
            t_ort.append(pair["ort"])
            t_torch.append(pair["torch"])
    return t_ort, t_torch


def bench_backends() -> list[dict[str, Any]]:
    import onnxruntime as ort
    import torch

    from ensemble.export import export_ensemble, load_ensemble_module

    old_threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            run = build_run(Path(tmp))
            start = time.perf_counter()
            model_dir = export_ensemble(run, say=lambda _m: None)
            export_s = time.perf_counter() - start

            options = ort.SessionOptions()
            options.intra_op_num_threads = THREADS
            options.inter_op_num_threads = 1
            session = ort.InferenceSession(
                str(model_dir / "ensemble.onnx"), options, providers=["CPUExecutionProvider"]
            )
            module = load_ensemble_module(model_dir)
            x = np.random.default_rng(0).random((BATCH, 3, SIZE, SIZE), dtype=np.float32)
            xt = torch.from_numpy(x)

            def run_ort(batch: np.ndarray) -> Any:
                return session.run(["probs"], {"image": batch})[0]

            def run_torch(batch: torch.Tensor) -> Any:
                with torch.inference_mode():
                    return module(batch)

            diff = float(np.abs(run_ort(x) - run_torch(xt).numpy()).max())
            t_ort, t_torch = _alternating_pairs(run_ort, x, run_torch, xt)
    finally:
        torch.set_num_threads(old_threads)
    return _backend_rows(t_ort, t_torch, diff, export_s)


def _backend_rows(
    t_ort: list[float], t_torch: list[float], diff: float, export_s: float
) -> list[dict[str, Any]]:
    """The benchmark's rows from the timed pairs."""
    ratios = [b / a for a, b in zip(t_ort, t_torch)]
    what = (
        f"{len(BACKBONES)} members ({', '.join(BACKBONES)}), {SIZE} px, batch {BATCH}, "
        f"{THREADS} thread(s)"
    )
    return [
        _row(
            "export_onnxruntime_images_per_s",
            BATCH / statistics.median(t_ort),
            "images/s",
            note=f"ensemble.onnx, CPUExecutionProvider; {what}",
        ),
        _row(
            "export_torch_eager_images_per_s",
            BATCH / statistics.median(t_torch),
            "images/s",
            note=f"eager PyTorch (inference_mode); {what}",
        ),
        _row(
            "export_onnxruntime_speedup",
            statistics.median(ratios),
            "x",
            ">= 1.3",
            f"median of {len(ratios)} alternating pairs; max |prob diff| {diff:.1e}",
        ),
        _row(
            "export_seconds",
            export_s,
            "s",
            note="export_ensemble: load, ONNX (dynamo), TorchScript, parity check",
        ),
    ]


def run() -> list[dict[str, Any]]:
    return bench_backends()


if __name__ == "__main__":
    from benchmarks.__main__ import format_table

    print(format_table(run()))
