"""The trial loop end to end on synthetic data: reports, checkpoints, predictions, resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from trainers import TrialResult, load_config, train
from trainers.config import LossConfig, ModelConfig
from trainers.loop import DeviceInputs, _is_better, build_loss, build_model
from trainers.predictions import read_predictions

RAW: dict[str, Any] = {
    "name": "looptest",
    "seed": 3,
    "data": {
        "synthetic": {
            "layout": "cnmc-kaggle",
            "subjects_per_class": 4,
            "cells_per_subject": 4,
            "size": 40,
        },
        "input_size": 32,
        "batch_size": 8,
        "augmentation": "paper",
    },
    "model": {"backbone": "test_resnet", "head": "dense512", "dropout": 0.2},
    "schedule": {"name": "cyclic", "mode": "triangular2", "half_cycle_epochs": 1},
    "train": {"epochs": 3, "keep_checkpoints": 1, "threads": 2},
}
REPORT_KEYS = {
    "epoch", "train_loss", "lr", "lr_trace", "val_loss", "val_wfs", "val_acc", "val_ba",
    "val_auc", "val_kappa", "val_f1", "val_wp", "val_wr", "best_epoch",
}  # fmt: skip


class Stop(Exception):
    """Simulates a trial killed after an epoch."""


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrialResult, list[dict], Path]:
    out = tmp_path_factory.mktemp("full")
    reports: list[dict] = []
    result = train(load_config(RAW), reports.append, out_dir=out)
    return result, reports, out


def test_reports_one_dict_per_epoch(full_run: tuple[TrialResult, list[dict], Path]) -> None:
    result, reports, out = full_run
    assert [r["epoch"] for r in reports] == [1, 2, 3]
    for r in reports:
        assert REPORT_KEYS <= set(r)
        assert all(np.isfinite(r[k]) for k in ("train_loss", "lr", "val_loss", "val_acc"))
        assert r["lr_trace"] and all(isinstance(v, float) for v in r["lr_trace"])
        assert Path(r["checkpoint_dir"]).name == f"epoch_{r['epoch']:04d}"
    # the cyclic schedule is stepped per batch: epoch 1 climbs from base_lr to max_lr
    trace = reports[0]["lr_trace"]
    assert trace[0] == pytest.approx(1e-7) and trace == sorted(trace)
    kept = ("lr_trace", "snapshot")
    assert result.history == [{k: v for k, v in r.items() if k not in kept} for r in reports]


def test_best_checkpoint_is_kept_and_others_pruned(
    full_run: tuple[TrialResult, list[dict], Path],
) -> None:
    result, reports, out = full_run
    wfs = [r["val_wfs"] for r in reports]
    assert result.best_epoch == 1 + int(np.argmax(wfs))  # first epoch with the highest val WFS
    assert result.best_metrics["val_wfs"] == max(wfs)
    kept = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert kept == sorted({f"epoch_{result.best_epoch:04d}", "epoch_0003"})
    assert result.checkpoint_dir == out / "checkpoints" / f"epoch_{result.best_epoch:04d}"


def test_predictions_written_for_val_test_final(
    full_run: tuple[TrialResult, list[dict], Path],
) -> None:
    result, _, out = full_run
    assert result.predictions_path == out / "predictions" / f"{result.trial_id}.parquet"
    pset = read_predictions(result.predictions_path)  # validates the schema
    frame = pset.frame
    assert set(frame["split"]) == {"val", "test", "final"}
    assert pset.class_names == ["hem", "all"]
    assert (frame["epoch"] == result.best_epoch).all()
    assert (frame["config_hash"] == result.config_hash).all()
    assert (frame.loc[frame["split"] == "final", "label"] == -1).all()
    assert (frame.loc[frame["split"] != "final", "label"] >= 0).all()
    assert pset.config["model"]["backbone"] == "test_resnet"
    # the best checkpoint's validation predictions reproduce its reported metrics
    val = frame[frame["split"] == "val"]
    acc = float((np.stack(val["probs"].to_numpy()).argmax(1) == val["label"].to_numpy()).mean())
    assert acc == pytest.approx(result.best_metrics["val_acc"])
    assert set(result.test_metrics) >= {"wfs", "auc", "ba"}


def test_a_trial_with_n_cycles_writes_n_snapshots(tmp_path: Path) -> None:
    # half a cycle per half epoch: a whole cycle, so a trough, at the end of every epoch
    raw = {**RAW, "schedule": {**RAW["schedule"], "half_cycle_epochs": 0.5}}
    reports: list[dict] = []
    result = train(load_config(raw), reports.append, out_dir=tmp_path)
    assert [s.epoch for s in result.snapshots] == [1, 2, 3]
    assert [r["snapshot"].epoch for r in reports] == [1, 2, 3]  # each before its report
    files = sorted((tmp_path / "predictions" / "snapshots").glob("*.parquet"))
    assert [f.name for f in files] == [f"{result.trial_id}@e{e}.parquet" for e in (1, 2, 3)]
    for snap, report in zip(result.snapshots, reports):
        pset = read_predictions(snap.predictions)
        assert pset.is_snapshot and pset.snapshot_of == result.trial_id
        assert pset.trial_id == snap.id and pset.source_trial == result.trial_id
        assert set(pset.frame["epoch"]) == {snap.epoch} and set(pset.frame["cycle"]) == {snap.epoch}
        assert set(pset.frame["split"]) == {"val", "test", "final"}
        # the snapshot predicts with the weights the epoch's validation report scored
        val = pset.split("val")
        acc = np.mean(np.stack(val["probs"].to_numpy()).argmax(1) == val["label"].to_numpy())
        assert acc == pytest.approx(report["val_acc"])
    # the best-epoch file stays one file, apart from the snapshots
    assert not read_predictions(result.predictions_path).is_snapshot


def test_snapshot_weights_reproduce_its_predictions(
    full_run: tuple[TrialResult, list[dict], Path],
) -> None:
    from trainers.data import prepare_data
    from trainers.loop import build_loaders, exact_fp32, predict
    from trainers.models import model_data_config
    from trainers.trained import load_trained_model

    result, reports, _ = full_run
    (snap,) = result.snapshots  # 3 epochs with a 2-epoch cycle: one trough, at epoch 2
    assert snap.epoch == 2 and snap.cycle == 1 and "snapshot" in reports[1]
    pset = read_predictions(snap.predictions)
    meta = {"config": pset.config, "class_names": pset.class_names, "trial_id": snap.id}
    trained = load_trained_model(meta, snap.weights)
    cfg = load_config(RAW).trial_part()
    data = prepare_data(cfg.data, seed=cfg.seed)
    loader = build_loaders(data, batch_size=8, eval_batch_size=8, seed=0, num_workers=0)["val"]
    norm = model_data_config("test_resnet")
    inputs = DeviceInputs(norm["mean"], norm["std"], torch.device("cpu"), False)
    with exact_fp32():
        logits, _, rows = predict(trained.model, loader, inputs=inputs)
    ids = data.manifest.iloc[rows]["sample_id"].astype(str).to_numpy()
    stored = pset.split("val").set_index("sample_id").loc[ids]
    np.testing.assert_allclose(logits, np.stack(stored["logits"].to_numpy()), atol=1e-5)


def test_no_snapshots_without_cycles_or_when_switched_off(tmp_path: Path) -> None:
    off = {**RAW, "train": {**RAW["train"], "epochs": 2, "snapshots": False}}
    assert train(load_config(off), out_dir=tmp_path / "off").snapshots == []
    cosine = {**RAW, "schedule": {"name": "cosine"}, "train": {**RAW["train"], "epochs": 2}}
    assert train(load_config(cosine), out_dir=tmp_path / "cosine").snapshots == []
    assert not (tmp_path / "cosine" / "predictions" / "snapshots").exists()


def test_resume_gives_the_same_next_epoch(
    full_run: tuple[TrialResult, list[dict], Path], tmp_path: Path
) -> None:
    result, reports, _ = full_run
    seen: list[dict] = []

    def die_after_two(metrics: dict) -> None:
        seen.append(metrics)
        if metrics["epoch"] == 2:
            raise Stop

    with pytest.raises(Stop):
        train(load_config(RAW), die_after_two, out_dir=tmp_path)
    # deterministic on CPU: the interrupted run matched the full run so far
    for a, b in zip(seen, reports[:2]):
        assert a["train_loss"] == b["train_loss"] and a["val_loss"] == b["val_loss"]
    # what a killed attempt was writing when it died: gone when the next attempt starts
    leftovers = [tmp_path / "checkpoints" / ".epoch_0003.tmp-k1ll3d",
                 tmp_path / "snapshots" / "x@e3" / ".model.safetensors.abc.tmp"]  # fmt: skip
    leftovers[0].mkdir()
    leftovers[1].parent.mkdir(parents=True)
    leftovers[1].write_bytes(b"partial")
    resumed: list[dict] = []
    again = train(
        load_config(RAW), resumed.append, out_dir=tmp_path,
        resume_from=tmp_path / "checkpoints" / "epoch_0002",
    )  # fmt: skip
    assert [r["epoch"] for r in resumed] == [3]
    for key in ("train_loss", "lr", "val_loss", "val_wfs", "val_acc", "val_auc", "val_kappa"):
        assert resumed[0][key] == reports[2][key], key
    assert resumed[0]["lr_trace"] == reports[2]["lr_trace"]
    assert again.best_epoch == result.best_epoch
    assert [h["epoch"] for h in again.history] == [1, 2, 3]
    assert not any(p.exists() for p in leftovers)


def test_model_input_size_is_checked_before_training() -> None:
    with pytest.raises(ValueError, match="inception_resnet_v2 needs inputs of at least 75 px"):
        build_model(ModelConfig(backbone="inception_resnet_v2"), 2, 64)


def test_loss_class_weights_and_smoothing() -> None:
    labels = np.array([0, 0, 0, 1])
    loss = build_loss(
        LossConfig(class_weights="balanced", label_smoothing=0.1), labels, 2, torch.device("cpu")
    )
    assert loss.weight.tolist() == pytest.approx([4 / 6, 2.0])
    assert loss.label_smoothing == 0.1
    explicit = build_loss(LossConfig(class_weights=[1.0, 3.0]), labels, 2, torch.device("cpu"))
    assert explicit.weight.tolist() == [1.0, 3.0]
    with pytest.raises(ValueError, match="3 values for 2 classes"):
        build_loss(LossConfig(class_weights=[1.0, 2.0, 3.0]), labels, 2, torch.device("cpu"))
    with pytest.raises(ValueError, match="needs every class"):
        build_loss(LossConfig(class_weights="balanced"), np.zeros(4, int), 2, torch.device("cpu"))


def test_device_inputs_normalise_like_torchvision() -> None:
    from torchvision.transforms.v2 import functional as F

    x = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    got = DeviceInputs(mean, std, torch.device("cpu"))(x)
    want = F.normalize(x.float() / 255, list(mean), list(std))
    torch.testing.assert_close(got, want)


def test_selection_direction() -> None:
    assert _is_better(0.8, 0.7, "wfs") and not _is_better(0.6, 0.7, "wfs")
    assert _is_better(0.2, 0.3, "loss") and not _is_better(0.4, 0.3, "loss")
    assert _is_better(float("nan"), None, "wfs") and not _is_better(float("nan"), 0.1, "auc")
    assert _is_better(0.1, float("nan"), "auc")


# ------------------------------------------------- precision of stored numbers, device aug


def _fp32_logits(
    cfg: Any, checkpoint: Path, split: str, amp_dtype: torch.dtype | None = None
) -> np.ndarray:
    """The best checkpoint's logits on ``split``, recomputed here (fp32 unless ``amp_dtype``)."""
    from trainers.checkpoint import load_checkpoint
    from trainers.data import prepare_data
    from trainers.loop import predict
    from trainers.models import model_data_config

    data = prepare_data(cfg.data, seed=cfg.seed)
    model = build_model(cfg.model, len(data.class_names), cfg.data.input_size)
    load_checkpoint(checkpoint, model)
    norm = model_data_config(cfg.model.backbone)
    inputs = DeviceInputs(norm["mean"], norm["std"], torch.device("cpu"))
    loader = data.loader(split, train=False, batch_size=16)
    return predict(model, loader, inputs=inputs, amp_dtype=amp_dtype)[0]


def test_stored_predictions_are_fp32_when_training_in_bf16(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trainers.loop as loop

    seen: list[tuple[Any, bool]] = []
    real_predict = loop.predict

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append((kwargs.get("amp_dtype"), torch.backends.cudnn.allow_tf32))
        return real_predict(*args, **kwargs)

    monkeypatch.setattr(loop, "predict", spy)
    raw = {**RAW, "train": {**RAW["train"], "epochs": 1, "precision": "bf16"}}
    cfg = load_config(raw)
    result = train(cfg, out_dir=tmp_path)
    # evaluation (1 epoch) and the three prediction splits: never autocast, never TF32
    assert len(seen) == 4 and all(s == (None, False) for s in seen), seen
    frame = read_predictions(result.predictions_path).frame
    stored = np.stack(frame.loc[frame["split"] == "test", "logits"].to_numpy())
    want = _fp32_logits(cfg, result.checkpoint_dir, "test")
    np.testing.assert_allclose(stored, want, rtol=0, atol=1e-5)
    # the check can tell: the same network under bf16 autocast gives other numbers
    bf16 = _fp32_logits(cfg, result.checkpoint_dir, "test", torch.bfloat16)
    assert np.abs(bf16 - want).max() > 1e-4


DEVICE_AUG: dict[str, Any] = {**RAW, "data": {**RAW["data"], "augment_on": "device", "augmentation": "strong"},
                              "train": {**RAW["train"], "epochs": 2}}  # fmt: skip


def test_device_augmentation_trains_repeatably_and_resumes(tmp_path: Path) -> None:
    first: list[dict] = []
    train(load_config(DEVICE_AUG), first.append, out_dir=tmp_path / "a")
    again: list[dict] = []
    train(load_config(DEVICE_AUG), again.append, out_dir=tmp_path / "b")
    assert [r["train_loss"] for r in first] == [r["train_loss"] for r in again]
    resumed: list[dict] = []
    train(load_config(DEVICE_AUG), resumed.append, out_dir=tmp_path / "a",
          resume_from=tmp_path / "a" / "checkpoints" / "epoch_0001")  # fmt: skip
    assert [r["epoch"] for r in resumed] == [2]
    assert resumed[0]["train_loss"] == first[1]["train_loss"]
    # the same trial augmented in the loader trains on other images, so another loss
    loader_cfg = {**DEVICE_AUG, "data": {**DEVICE_AUG["data"], "augment_on": "loader"}}
    other: list[dict] = []
    train(load_config(loader_cfg), other.append, out_dir=tmp_path / "c")
    assert other[0]["train_loss"] != first[0]["train_loss"]


def test_device_mode_loader_hands_out_plain_cache_slices(tmp_path: Path) -> None:
    from trainers.data import prepare_data
    from trainers.loop import build_loaders

    cfg = load_config(DEVICE_AUG)
    data = prepare_data(cfg.data, seed=cfg.seed)
    loaders = build_loaders(data, batch_size=8, eval_batch_size=None, seed=0, num_workers=0,
                            augment_on="device")  # fmt: skip
    images, labels, rows = next(iter(loaders["train"]))
    assert images.dtype == torch.uint8 and images.shape == (8, 3, 32, 32)
    want = torch.stack([data.dataset(None)[int(r)][0] for r in rows])
    assert torch.equal(images, want)  # un-augmented: the trainer augments on its device
    assert labels.dtype == torch.int64 and rows.dtype == torch.int64
