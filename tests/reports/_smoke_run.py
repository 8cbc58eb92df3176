"""A smoke run folder built with the real writers of each stage.

Until ``wen search configs/smoke.yaml`` runs end to end in the test suite, the run folder is
assembled here from the stages' own public functions, so the report reads real files:

* a synthetic C-NMC-like dataset (``trainers.data.prepare_data``) and its official splits;
* four trials of three tiny timm backbones: real ``trainers.models.create_model`` networks
  published into ``models/`` with ``trainers.run_layout.publish_member``, the function the
  search stage writes them with (``search/trainable.py: _publish``); every path comes from
  ``trainers.run_layout.RUN_LAYOUT``;
* prediction files written with ``trainers.predictions.write_predictions``. Their
  probabilities are drawn (seeded) so that each member errs on different cells -- an
  untrained tiny network predicts one class everywhere, which would leave no cell where one
  member is wrong and the ensemble right;
* TensorBoard logs with the tags the search stage writes, including ``lr/step`` from a real
  torch ``CyclicLR`` in ``triangular2`` mode;
* ``results.csv``/``.parquet``, ``config.yaml`` and ``command.txt`` in the search stage's format;
* ``RUN/ensemble/`` from ``ensemble.run_ensemble`` itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

BACKBONES = {
    "t_res_a": "test_resnet",
    "t_res_b": "test_resnet",
    "t_eff": "test_efficientnet",
    "t_cnx": "test_convnext",
}
LRS = {"t_res_a": 1e-3, "t_res_b": 3e-4, "t_eff": 2e-3, "t_cnx": 5e-4}
ERROR_RATE = {"t_res_a": 0.2, "t_res_b": 0.45, "t_eff": 0.25, "t_cnx": 0.3}
MAX_EPOCHS = 6
EPOCHS_RUN = {"t_res_a": 6, "t_res_b": 2, "t_eff": 6, "t_cnx": 4}
ITERS_PER_EPOCH = 5
INPUT_SIZE = 64


def trial_config(tmp: Path, trial: str) -> dict[str, Any]:
    """The resolved trial config of one trial (what ``models/<id>/config.json`` holds)."""
    from trainers.config import TrialConfig

    raw = {
        "name": "smoke",
        "seed": 0,
        "data": {
            "synthetic": {
                "layout": "cnmc-kaggle",
                "subjects_per_class": 9,
                "cells_per_subject": 8,
                "size": 96,
                "seed": 0,
            },
            "synthetic_dir": str(tmp / "dataset"),
            "crop": {"fraction": 0.75},
            "input_size": INPUT_SIZE,
            "cache": False,
        },
        "model": {"backbone": BACKBONES[trial]},
        "optim": {"lr": LRS[trial]},
        "schedule": {"base_lr": 1e-6, "max_lr": 2e-3, "half_cycle_epochs": 1},
        "train": {"epochs": MAX_EPOCHS},
    }
    return TrialConfig.model_validate(raw).model_dump(mode="json")


def _probs(labels: np.ndarray, error_rate: float, rng: np.random.Generator) -> np.ndarray:
    """Two-class probabilities: right with confidence ~0.75, wrong with ~0.3 on the truth."""
    wrong = rng.random(len(labels)) < error_rate
    p_true = np.where(
        wrong, rng.uniform(0.05, 0.45, len(labels)), rng.uniform(0.55, 0.97, len(labels))
    )
    probs = np.empty((len(labels), 2), dtype=np.float32)
    probs[np.arange(len(labels)), labels] = p_true
    probs[np.arange(len(labels)), 1 - labels] = 1 - p_true
    return probs


def _lr_trace(epochs: int) -> list[float]:
    import torch

    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adamax([param], lr=2e-4)
    sched = torch.optim.lr_scheduler.CyclicLR(
        opt,
        base_lr=1e-6,
        max_lr=2e-3,
        step_size_up=ITERS_PER_EPOCH,
        mode="triangular2",
        cycle_momentum=False,
    )
    trace = []
    for _ in range(epochs * ITERS_PER_EPOCH):
        trace.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return trace


def build_smoke_run(tmp: Path) -> Path:
    """Assemble the run folder ``tmp/runs/smoke`` (see module docs); return it."""
    import torch
    from safetensors.torch import save
    from torch.utils.tensorboard import SummaryWriter

    from ensemble import EnsembleSettings, run_ensemble
    from trainers.config import DataConfig
    from trainers.data import prepare_data
    from trainers.models import create_model
    from trainers.predictions import prediction_frame, write_predictions
    from trainers.run_layout import RUN_LAYOUT, publish_member

    run = tmp / "runs" / "smoke"
    run.mkdir(parents=True)
    base = trial_config(tmp, "t_res_a")
    data = prepare_data(DataConfig.model_validate(base["data"]), seed=0)
    manifest = data.manifest
    class_names = list(data.class_names)
    rng = np.random.default_rng(0)
    rows = []
    for i, (trial, backbone) in enumerate(BACKBONES.items()):
        config = trial_config(tmp, trial)
        torch.manual_seed(i)
        model = create_model(backbone, len(class_names))
        frames = []
        for split in ("val", "test"):
            part = manifest[manifest["split"] == split]
            labels = part["label"].to_numpy()
            probs = _probs(labels, ERROR_RATE[trial], rng)
            frames.append(
                prediction_frame(
                    trial_id=trial,
                    backbone=backbone,
                    config_hash=f"h{i}",
                    fold=0,
                    epoch=EPOCHS_RUN[trial],
                    split=split,
                    sample_ids=list(part["sample_id"]),
                    subject_ids=list(part["subject_id"]),
                    labels=labels,
                    logits=np.log(probs),
                    probs=probs,
                )
            )
        frame = pd.concat(frames, ignore_index=True)
        write_predictions(run / RUN_LAYOUT.prediction(trial), frame, class_names, config)
        val = frame[frame["split"] == "val"]
        from trainers.metrics import score

        metrics = score(val["label"].to_numpy(), np.stack(val["probs"].to_numpy()), class_names)
        weights = save({k: v.contiguous() for k, v in model.state_dict().items()})
        publish_member(
            run,
            trial,
            weights,
            {
                "trial_id": trial,
                "best_epoch": EPOCHS_RUN[trial],
                "best_metrics": metrics,
                "config_hash": f"h{i}",
                "class_names": class_names,
                "config": config,
            },
        )
        writer = SummaryWriter(str(run / RUN_LAYOUT.tensorboard_dir(trial)))
        trace = _lr_trace(EPOCHS_RUN[trial])
        for epoch in range(1, EPOCHS_RUN[trial] + 1):
            writer.add_scalar("train/train_loss", 0.7 / epoch + 0.1 * rng.random(), epoch)
            writer.add_scalar("val/val_loss", 0.8 / epoch + 0.2 * rng.random(), epoch)
            writer.add_scalar(
                "val/val_wfs", min(1.0, metrics["wfs"] * epoch / EPOCHS_RUN[trial]), epoch
            )
            chunk = trace[(epoch - 1) * ITERS_PER_EPOCH : epoch * ITERS_PER_EPOCH]
            writer.add_scalar("trial/lr", chunk[-1], epoch)
            for j, lr in enumerate(chunk):
                writer.add_scalar("lr/step", lr, (epoch - 1) * ITERS_PER_EPOCH + j)
        writer.close()
        rows.append(
            {
                "trial_id": trial,
                "status": "TERMINATED",
                "stopped_early": EPOCHS_RUN[trial] < MAX_EPOCHS,
                "fold": 0,
                "best_epoch": EPOCHS_RUN[trial],
                "epochs_run": EPOCHS_RUN[trial],
                "time_total_s": 10.0 + i,
                "node_ip": "127.0.0.1",
                "node_id": "node0",
                "predictions": str(run / RUN_LAYOUT.prediction(trial)),
                "error": None,
                "model.backbone": backbone,
                "optim.lr": LRS[trial],
                "val_wfs": metrics["wfs"],
                "val_acc": metrics["acc"],
                "val_ba": metrics["ba"],
                "val_auc": metrics["auc"],
                "val_kappa": metrics["kappa"],
                "val_f1": metrics["f1"],
                "val_loss": metrics["logloss"],
                "train_loss": 0.3,
            }
        )
    results = pd.DataFrame(rows)
    results.to_csv(run / RUN_LAYOUT.results_csv, index=False)
    results.to_parquet(run / RUN_LAYOUT.results_parquet, index=False)
    whole = dict(base)
    whole["search"] = {
        "space": {
            "model.backbone": {"type": "choice", "values": sorted(set(BACKBONES.values()))},
            "optim.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2},
        },
        "scheduler": {"name": "asha", "grace_cycles": 1},
        "seed": 0,
    }
    whole["ensemble"] = {"bootstrap": 50, "n_trials": 10, "crossfit_folds": 2, "seed": 0}
    (run / RUN_LAYOUT.config).write_text(yaml.safe_dump(whole, sort_keys=False))
    (run / RUN_LAYOUT.command).write_text("wen search configs/smoke.yaml --name smoke\n")
    settings = EnsembleSettings.model_validate(whole["ensemble"])
    run_ensemble(run, settings, progress=False, say=lambda _msg: None)
    return run
