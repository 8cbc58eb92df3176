"""Synthetic prediction files: members of different skill, trained on 2 folds, by subject."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trainers.predictions import prediction_frame, write_predictions

CLASS_NAMES = ["hem", "all"]  # "all" (index 1) is the positive class
# backbone -> skill (separation of the classes' logits); two configurations (lr) each
SKILLS = {"resnet18": 1.2, "vgg16": 0.8, "mobilenet": 0.4}
LRS = (1e-3, 1e-4)


def synthetic_subjects(n_per_class: int, cells: int, prefix: str) -> tuple[list, list, np.ndarray]:
    """Sample ids, subject ids and labels: each subject's cells share the subject's class."""
    samples, subjects, labels = [], [], []
    for c in (0, 1):
        for s in range(n_per_class):
            subj = f"{prefix}{c}{s:02d}"
            for i in range(cells):
                samples.append(f"{subj}_{i:03d}.bmp")
                subjects.append(subj)
                labels.append(c)
    return samples, subjects, np.array(labels)


def _logits(
    labels: np.ndarray, subjects: list, skill: float, rng: np.random.Generator
) -> np.ndarray:
    subj_effect = {s: rng.normal(0, 0.6) for s in set(subjects)}
    margin = skill * (2 * labels - 1) + np.array([subj_effect[s] for s in subjects])
    margin = margin + rng.normal(0, 1.0, len(labels))
    return np.stack([-margin / 2, margin / 2], axis=1).astype(np.float32)


def write_run(
    run: Path,
    *,
    seed: int = 0,
    n_val_per_class: int = 6,
    n_test_per_class: int = 5,
    cells: int = 8,
    skills: dict[str, float] | None = None,
    lrs: tuple[float, ...] = LRS,
    folds: int = 2,
) -> Path:
    """Write RUN/predictions/<trial>.parquet for every (backbone, lr, fold); return RUN."""
    rng = np.random.default_rng(seed)
    pool = synthetic_subjects(n_val_per_class, cells, "v")
    test = synthetic_subjects(n_test_per_class, cells, "t")
    pool_subjects = sorted(set(pool[1]))
    fold_of = {s: i % folds for i, s in enumerate(pool_subjects)}
    n = 0
    for backbone, skill in (skills or SKILLS).items():
        for lr in lrs:
            for fold in range(folds):
                trial = f"t{n:03d}"
                n += 1
                in_fold = np.array([fold_of[s] == fold for s in pool[1]])
                v_samples = [s for s, k in zip(pool[0], in_fold) if k]
                v_subjects = [s for s, k in zip(pool[1], in_fold) if k]
                v_labels = pool[2][in_fold]
                config = {
                    "model": {"backbone": backbone},
                    "optim": {"lr": lr},
                    "data": {"split": {"method": "group_kfold", "fold": fold, "n_folds": folds}},
                }
                frames = [
                    prediction_frame(
                        trial_id=trial,
                        backbone=backbone,
                        config_hash=f"h{n}",
                        fold=fold,
                        epoch=3,
                        split="val",
                        sample_ids=v_samples,
                        subject_ids=v_subjects,
                        labels=v_labels,
                        logits=_logits(v_labels, v_subjects, skill, rng),
                    ),
                    prediction_frame(
                        trial_id=trial,
                        backbone=backbone,
                        config_hash=f"h{n}",
                        fold=fold,
                        epoch=3,
                        split="test",
                        sample_ids=test[0],
                        subject_ids=test[1],
                        labels=test[2],
                        logits=_logits(test[2], test[1], skill, rng),
                    ),
                ]
                write_predictions(
                    run / "predictions" / f"{trial}.parquet",
                    pd.concat(frames, ignore_index=True),
                    CLASS_NAMES,
                    config,
                )
    return run


@pytest.fixture
def synthetic_run(tmp_path: Path) -> Path:
    """A run folder with 3 backbones x 2 configurations x 2 folds of prediction files."""
    return write_run(tmp_path / "run")


@pytest.fixture
def skilled_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """P [3 members, 120 samples, 2 classes], labels and subjects; members differ in skill."""
    rng = np.random.default_rng(3)
    samples, subjects, y = synthetic_subjects(6, 10, "s")
    P = []
    for skill in (2.0, 1.0, 0.3):
        logits = _logits(y, subjects, skill, rng).astype(np.float64)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        P.append(e / e.sum(axis=1, keepdims=True))
    return np.stack(P), y, np.array(subjects, dtype=object)


def write_snapshots(run: Path, epochs: tuple[int, ...] = (2, 3), seed: int = 5) -> list[str]:
    """Write a snapshot of every trial of ``run`` at each of ``epochs`` into
    RUN/predictions/snapshots/; the epoch-3 snapshot repeats the trial's best-epoch file
    (the fake trials' best epoch is 3, a trough), the others are noisier. Returns their ids."""
    from trainers.predictions import read_prediction_dir

    rng = np.random.default_rng(seed)
    ids = []
    for pset in read_prediction_dir(run / "predictions"):
        for epoch in epochs:
            frame = pset.frame.copy()
            sid = f"{pset.trial_id}@e{epoch}"
            frame["trial_id"], frame["epoch"], frame["cycle"] = sid, epoch, epoch
            if epoch != 3:
                logits = np.stack(frame["logits"].to_numpy()) * 0.5
                logits = logits + rng.normal(0, 0.8, logits.shape).astype(np.float32)
                e = np.exp(logits - logits.max(axis=1, keepdims=True))
                frame["logits"] = list(logits.astype(np.float32))
                frame["probs"] = list((e / e.sum(axis=1, keepdims=True)).astype(np.float32))
            path = run / "predictions" / "snapshots" / f"{sid}.parquet"
            write_predictions(path, frame, pset.class_names, pset.config, pset.trial_id)
            ids.append(sid)
    return ids
