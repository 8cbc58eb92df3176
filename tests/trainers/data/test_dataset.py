"""prepare_data end to end on small synthetic datasets: splits, cache, loaders, bad files."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from trainers.config import DataConfig
from trainers.data import DataError, LeakageError, PreparedData, prepare_data
from trainers.data.cache import preprocess_image
from trainers.data.synth import synthesize

SYNTH = {"layout": "cnmc-kaggle", "subjects_per_class": 4, "cells_per_subject": 6, "size": 48}


def config(tmp: Path, **overrides: object) -> DataConfig:
    base: dict[str, object] = {
        "synthetic": SYNTH,
        "input_size": 32,
        "split": {"method": "official", "fold": 0},
        "cache_dir": str(tmp / "cache"),
    }
    base.update(overrides)
    return DataConfig.model_validate(base)


@pytest.fixture(scope="module")
def cache_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dataset")


@pytest.fixture(scope="module")
def prepared(cache_tmp: Path) -> PreparedData:
    return prepare_data(config(cache_tmp), seed=0)


def epoch(loader: torch.utils.data.DataLoader) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    images, labels, rows = zip(*loader, strict=True)
    return torch.cat(images), torch.cat(labels), torch.cat(rows)


# ------------------------------------------------------------------------------ end to end


def test_prepare_data_end_to_end(prepared: PreparedData) -> None:
    m = prepared.manifest
    assert prepared.class_names == ["hem", "all"]
    assert prepared.input_size == 32
    assert set(m["split"]) == {"train", "val", "test", "final"}
    assert (m.loc[m["source_split"] == "test", "split"] == "test").all()
    assert prepared.store is not None and len(prepared.store) == len(m)
    # subjects never cross splits (the audit ran, and passes again)
    for a, b in [("train", "val"), ("train", "test"), ("val", "test")]:
        sa = set(m.loc[m["split"] == a, "subject_id"].dropna())
        sb = set(m.loc[m["split"] == b, "subject_id"].dropna())
        assert not sa & sb

    loader = prepared.loader("train", train=True, batch_size=8, seed=0)
    images, labels, rows = next(iter(loader))
    assert images.shape == (8, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.dtype == torch.int64 and rows.dtype == torch.int64
    assert (m["split"].to_numpy()[rows.numpy()] == "train").all()
    np.testing.assert_array_equal(labels.numpy(), m["label"].to_numpy()[rows.numpy()])


def test_eval_loader_is_fixed_order_without_augmentation(prepared: PreparedData) -> None:
    expected = prepared.split_indices("val")
    assert (np.diff(expected) > 0).all()
    images, labels, rows = epoch(prepared.loader("val", train=False, batch_size=5, seed=3))
    np.testing.assert_array_equal(rows.numpy(), expected)
    for k in (0, len(expected) - 1):
        row = int(rows[k])
        direct = preprocess_image(prepared.manifest["path"].iat[row], prepared.crop, 32)
        np.testing.assert_array_equal(images[k].permute(1, 2, 0).numpy(), direct)
    again = epoch(prepared.loader("val", train=False, batch_size=7, seed=9))
    assert torch.equal(again[0], images) and torch.equal(again[2], rows)


def test_oversampling_equalises_classes_each_epoch(prepared: PreparedData) -> None:
    train_rows = prepared.split_indices("train")
    labels_in = prepared.manifest["label"].to_numpy()[train_rows]
    counts_in = Counter(labels_in.tolist())
    assert counts_in[0] < counts_in[1]  # synthetic hem subjects have half the cells
    loader = prepared.loader("train", train=True, batch_size=8, seed=1)
    for _ in range(2):
        _, labels, rows = epoch(loader)
        counts = Counter(labels.tolist())
        assert counts[0] == counts[1] == max(counts_in.values())
        assert set(rows.tolist()) == set(train_rows.tolist())  # every original image is kept
    assert len(loader) == -(-2 * max(counts_in.values()) // 8)


def test_weighted_sampling_favours_the_minority(cache_tmp: Path) -> None:
    data = prepare_data(config(cache_tmp, balance="weighted"), seed=0)
    train_rows = data.split_indices("train")
    share_in = (data.manifest["label"].to_numpy()[train_rows] == 0).mean()
    loader = data.loader("train", train=True, batch_size=16, seed=0)
    shares = []
    for _ in range(4):
        _, labels, rows = epoch(loader)
        assert len(rows) == len(train_rows)
        shares.append((labels == 0).float().mean().item())
    assert np.mean(shares) > share_in + 0.05


def test_no_balancing_is_a_shuffled_epoch(cache_tmp: Path) -> None:
    data = prepare_data(config(cache_tmp, balance="none"), seed=0)
    _, _, rows = epoch(data.loader("train", train=True, batch_size=8, seed=0))
    assert sorted(rows.tolist()) == data.split_indices("train").tolist()
    assert rows.tolist() != sorted(rows.tolist())


def test_train_loader_is_seeded(prepared: PreparedData) -> None:
    a = prepared.loader("train", train=True, batch_size=8, seed=5)
    b = prepared.loader("train", train=True, batch_size=8, seed=5)
    ea, eb = epoch(a), epoch(b)
    assert all(torch.equal(x, y) for x, y in zip(ea, eb, strict=True))
    # the next epoch draws anew; set_epoch goes back to a given epoch
    second = epoch(a)
    assert not torch.equal(second[2], ea[2])
    a.batch_sampler.sampler.set_epoch(0)
    assert torch.equal(epoch(a)[0], ea[0])
    other = epoch(prepared.loader("train", train=True, batch_size=8, seed=6))
    assert not torch.equal(other[2], ea[2])


def test_augmentation_applies_in_training_only(prepared: PreparedData) -> None:
    images, _, rows = epoch(prepared.loader("train", train=True, batch_size=8, seed=0))
    stored = torch.from_numpy(np.stack([prepared.store[int(r)] for r in rows])).permute(0, 3, 1, 2)
    changed = (images != stored).flatten(1).any(dim=1).float().mean().item()
    assert changed > 0.5  # flips and affine change most images


def test_same_batches_with_workers(prepared: PreparedData) -> None:
    zero = prepared.loader("train", train=True, batch_size=8, seed=2, num_workers=0)
    two = prepared.loader("train", train=True, batch_size=8, seed=2, num_workers=2)
    for _ in range(2):  # two epochs: the persistent workers follow the sampler's epochs
        a, b = epoch(zero), epoch(two)
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_without_cache_decodes_the_same_images(cache_tmp: Path, prepared: PreparedData) -> None:
    data = prepare_data(config(cache_tmp, cache=False), seed=0)
    assert data.store is None
    a = epoch(data.loader("test", train=False, batch_size=8))
    b = epoch(prepared.loader("test", train=False, batch_size=8))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    c = epoch(data.loader("train", train=True, batch_size=8, seed=4))
    d = epoch(prepared.loader("train", train=True, batch_size=8, seed=4))
    assert all(torch.equal(x, y) for x, y in zip(c, d, strict=True))


def test_unknown_split_and_empty_split(prepared: PreparedData) -> None:
    with pytest.raises(ValueError, match="valid names: train, val, test, final"):
        prepared.split_indices("validation")
    with pytest.raises(DataError, match="cannot be trained on"):
        prepared.loader("final", train=True, batch_size=4)


# ------------------------------------------------------------------------------ the cache


def test_cache_reused_and_invalidated(tmp_path: Path) -> None:
    root = synthesize(tmp_path / "data", "cnmc-kaggle", 4, 3, 40, seed=1)
    cfg = DataConfig(root=root, input_size=24, cache_dir=tmp_path / "cache")
    first = prepare_data(cfg, seed=0)
    assert first.store is not None and first.store.built
    again = prepare_data(cfg, seed=0)
    assert again.store is not None and not again.store.built
    assert again.store.path == first.store.path
    # another split reuses the same decoded images
    other_split = cfg.model_copy(update={"split": cfg.split.model_copy(update={"fold": 1})})
    assert not prepare_data(other_split, seed=0).store.built
    # a new crop: a new store
    cropped = cfg.model_copy(update={"crop": cfg.crop.model_copy(update={"fraction": 0.5})})
    new_crop = prepare_data(cropped, seed=0)
    assert new_crop.store.built and new_crop.store.path != first.store.path
    # changed data (one image rewritten): a new store, with the new pixels
    victim = Path(first.manifest["path"].iat[0])
    from PIL import Image

    Image.fromarray(np.full((40, 40, 3), 7, dtype=np.uint8)).save(victim, format="BMP")
    changed = prepare_data(cfg, seed=0)
    assert changed.store.built and changed.store.path != first.store.path
    row = int(np.flatnonzero(changed.manifest["path"].to_numpy() == str(victim))[0])
    assert (changed.store[row] == 7).all()


# ------------------------------------------------------------------------------ bad files


@pytest.fixture
def broken_root(tmp_path: Path) -> tuple[Path, Path]:
    root = synthesize(tmp_path / "data", "cnmc-kaggle", 4, 3, 40, seed=2)
    victim = sorted((root / "training_data").rglob("*.bmp"))[1]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 3])  # truncated: header fine, pixels missing
    return root, victim


def test_bad_file_is_refused_with_the_fix(broken_root: tuple[Path, Path], tmp_path: Path) -> None:
    root, victim = broken_root
    with pytest.raises(DataError) as info:
        prepare_data(DataConfig(root=root, input_size=24, cache_dir=tmp_path / "c"), seed=0)
    msg = str(info.value)
    assert victim.name in msg
    assert f"wen data check {root}" in msg and "data.skip_bad_files=true" in msg


def test_skip_bad_files_drops_and_logs(
    broken_root: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root, victim = broken_root
    cfg = DataConfig(root=root, input_size=24, cache_dir=tmp_path / "c", skip_bad_files=True)
    with caplog.at_level(logging.WARNING, logger="wen.data"):
        data = prepare_data(cfg, seed=0)
    assert str(victim.resolve()) not in set(data.manifest["path"])
    skipped = [r for r in caplog.records if "skipping bad file" in r.getMessage()]
    assert len(skipped) == 1 and victim.name in skipped[0].getMessage()
    assert data.store is not None and len(data.store) == len(data.manifest)
    # the remembered check gives the same answer without decoding again
    import trainers.data.check as check_module

    def no_second_check(manifest):  # type: ignore[no-untyped-def]
        raise AssertionError("check_manifest ran again on unchanged data")

    caplog.clear()
    with pytest.MonkeyPatch.context() as mp, caplog.at_level(logging.WARNING, logger="wen.data"):
        mp.setattr(check_module, "check_manifest", no_second_check)
        again = prepare_data(cfg, seed=0)
    assert len(again.manifest) == len(data.manifest) and not again.store.built
    assert any("skipping bad file" in r.getMessage() for r in caplog.records)


def test_prepare_data_runs_the_leakage_audit(
    cache_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `wen data check` already refuses subjects in two folds, so plant the leak in the split
    import trainers.data.dataset as dataset_module
    from trainers.data.splits import assign_splits

    def leaky(frame, split):  # type: ignore[no-untyped-def]
        out = assign_splits(frame, split)
        subject = out.loc[out["split"] == "val", "subject_id"].iat[0]
        row = out.index[(out["split"] == "val") & (out["subject_id"] == subject)][0]
        out.loc[row, "split"] = "train"
        return out

    monkeypatch.setattr(dataset_module, "assign_splits", leaky)
    with pytest.raises(LeakageError, match="is in train and val"):
        prepare_data(config(cache_tmp), seed=0)


def test_refusal_shows_at_most_20_problems() -> None:
    from trainers.data.dataset import _refuse
    from trainers.data.layouts import Problem

    problems = [Problem(f"img_{i}.bmp", "undecodable image") for i in range(25)]
    msg = str(_refuse(Path("/data/x"), problems))
    assert "25 problem(s)" in msg and "img_19.bmp" in msg and "img_20.bmp" not in msg
    assert "... and 5 more" in msg
