"""Synthetic datasets: layouts on disk, determinism, exact label noise, caching, difficulty."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trainers.config import SyntheticSpec, config_hash
from trainers.data import synth as synth_module
from trainers.data.layouts import read_manifest
from trainers.data.synth import MARKER, ensure_synthetic, read_synthetic_info, synthesize


def _files(root: Path) -> dict[str, bytes]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in files}


@pytest.mark.parametrize(
    ("layout", "suffix", "fmt"),
    [
        ("cnmc-kaggle", ".bmp", "BMP"),
        ("cnmc-tcia", ".bmp", "BMP"),
        ("all4", ".jpg", "JPEG"),
        ("imagefolder", ".png", "PNG"),
    ],
)
def test_writes_real_image_files_of_the_requested_size(
    tmp_path: Path, layout: str, suffix: str, fmt: str
) -> None:
    root = synthesize(tmp_path / "d", layout, 4, 3, 40, seed=0)
    images = [p for p in root.rglob("*") if p.suffix in {".bmp", ".jpg", ".png"}]
    assert images and all(p.suffix == suffix for p in images)
    for p in images[:5]:
        with Image.open(p) as im:
            assert (im.format, im.mode, im.size) == (fmt, "RGB", (40, 40))
            pixels = np.asarray(im)
        # a cell centred on black: dark corners, a coloured centre
        assert pixels[:3, :3].max() < 10 and pixels[17:23, 17:23].mean() > 30


def test_cnmc_layout_has_folds_prelim_csv_final_set_and_2_to_1_imbalance(tmp_path: Path) -> None:
    root = synthesize(tmp_path / "d", "cnmc-kaggle", 8, 6, 32, seed=1)
    m = read_manifest(root)
    assert m.problems == []
    f = m.frame
    train, test, final = (f[f.source_split == s] for s in ("train", "test", "final"))
    assert sorted(train.fold.unique()) == [0, 1, 2]
    for fold in (0, 1, 2):
        assert set(train[train.fold == fold].class_name) == {"hem", "all"}
    assert train.groupby("subject_id").fold.nunique().max() == 1  # each subject in one fold
    assert not set(train.subject_id) & set(test.subject_id)  # prelim subjects are separate
    assert set(test.class_name) == {"hem", "all"}
    numbered = r"validation_data/C-NMC_test_prelim_phase_data/\d+\.bmp"
    assert test.sample_id.str.fullmatch(numbered).all()
    assert len(final) > 0 and (final.label == -1).all() and final.subject_id.isna().all()
    labelled = f[f.label >= 0]
    ratio = (labelled.label == 1).sum() / (labelled.label == 0).sum()
    assert 1.8 <= ratio <= 2.2
    assert labelled.subject_id.str.startswith("H").eq(labelled.label == 0).all()


def test_same_seed_same_files_other_seed_other_files(tmp_path: Path) -> None:
    a = _files(synthesize(tmp_path / "a", "cnmc-tcia", 4, 3, 32, seed=7))
    b = _files(synthesize(tmp_path / "b", "cnmc-tcia", 4, 3, 32, seed=7))
    c = _files(synthesize(tmp_path / "c", "cnmc-tcia", 4, 3, 32, seed=8))
    assert a == b
    assert a.keys() == c.keys() and a != c


@pytest.mark.parametrize("layout", ["cnmc-kaggle", "all4", "imagefolder"])
def test_label_noise_flips_exactly_the_recorded_labels(tmp_path: Path, layout: str) -> None:
    clean = read_manifest(synthesize(tmp_path / "clean", layout, 4, 5, 32, seed=2)).frame
    noisy_root = synthesize(tmp_path / "noisy", layout, 4, 5, 32, seed=2, label_noise=0.2)
    noisy = read_manifest(noisy_root).frame
    info = read_synthetic_info(noisy_root)
    n_labelled = int((clean.label >= 0).sum())
    assert info["n_labelled"] == n_labelled
    assert info["n_flipped"] == round(0.2 * n_labelled) > 0
    # the images are the same (true-class morphology); only labels (names, folders, CSV) move
    true_label = dict(zip(clean.content_hash, clean.label))
    assert set(true_label) == set(noisy.content_hash)
    changed = noisy[[true_label[h] != lab for h, lab in zip(noisy.content_hash, noisy.label)]]
    assert len(changed) == info["n_flipped"]
    assert sorted(changed.sample_id) == info["flipped"]
    assert read_synthetic_info(tmp_path / "clean")["n_flipped"] == 0


def test_bad_arguments_state_the_rule(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="subjects_per_class >= 4"):
        synthesize(tmp_path / "a", "cnmc-kaggle", 2, 3, 32, seed=0)
    with pytest.raises(ValueError, match="valid names"):
        synthesize(tmp_path / "b", "cnmc", 4, 3, 32, seed=0)
    with pytest.raises(ValueError, match="label_noise"):
        synthesize(tmp_path / "c", "all4", 1, 3, 32, seed=0, label_noise=0.7)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        synthesize(tmp_path / "full", "all4", 1, 3, 32, seed=0)


def _cell_features(path: str) -> list[float]:
    """Two stain-free morphology features (nucleus share of the cell, coarse chromatin) and
    three that carry the subject (cell size, mean colour)."""
    from scipy import ndimage

    pixels = np.asarray(Image.open(path), dtype=np.float32) / 255
    cell = pixels.sum(2) > 0.25
    green = pixels[..., 1]
    nucleus = cell & (green < 0.6 * np.percentile(green[cell], 95))
    lum = pixels.mean(2)
    coarse = ndimage.uniform_filter(lum, 5)[nucleus].std() / (lum[nucleus].mean() + 1e-3)
    return [nucleus.sum() / cell.sum(), coarse, np.sqrt(cell.sum()), *pixels[cell].mean(0)]


def test_learnable_not_trivial_and_a_subject_leaking_split_scores_higher(tmp_path: Path) -> None:
    """Morphology alone predicts the class of unseen subjects well but not perfectly; a model
    that also sees stain and size scores clearly higher when subjects leak across the split."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GroupKFold, StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    root = synthesize(tmp_path / "d", "imagefolder", 12, 12, 64, seed=0)
    f = read_manifest(root).frame
    x = np.array([_cell_features(p) for p in f.path])
    y, groups = (f.class_name == "all").to_numpy().astype(int), f.subject_id.to_numpy()

    def auc(model: object, features: np.ndarray, cv: object) -> float:
        by_subject = groups if isinstance(cv, GroupKFold) else None
        p = cross_val_predict(model, features, y, cv=cv, groups=by_subject, method="predict_proba")
        return roc_auc_score(y, p[:, 1])

    morphology = auc(make_pipeline(StandardScaler(), LogisticRegression()), x[:, :2], GroupKFold(5))
    assert 0.7 < morphology < 0.97
    forest = RandomForestClassifier(n_estimators=100, min_samples_leaf=2, random_state=0, n_jobs=2)
    grouped = auc(forest, x, GroupKFold(5))
    leaky = auc(forest, x, StratifiedKFold(5, shuffle=True, random_state=0))
    assert leaky > grouped + 0.04


def _nucleus_share(image: np.ndarray) -> float:
    """Share of the cell's pixels that belong to the dark nucleus (green well below cytoplasm)."""
    pixels = image.astype(np.float32)
    cell = pixels.sum(2) > 60
    green = pixels[..., 1][cell]
    return float((green < 0.6 * np.percentile(green, 95)).mean())


def test_all4_grades_give_graded_morphology(tmp_path: Path) -> None:
    """The nucleus takes a growing share of the cell from Benign to Pro (one subject's stain)."""
    grades = synth_module._grades("all4")
    assert grades == sorted(grades) and len(grades) == 4
    look = synth_module._draw_subject(np.random.default_rng(0))
    shares = [
        float(
            np.mean(
                [
                    _nucleus_share(
                        synth_module._render_cell(np.random.default_rng([9, i]), 48, g, look)
                    )
                    for i in range(150)
                ]
            )
        )
        for g in grades
    ]
    assert shares == sorted(shares) and shares[3] - shares[0] > 0.05


def test_generation_of_450px_images_is_vectorised(tmp_path: Path) -> None:
    # 20 images at full C-NMC size; a per-pixel Python loop would take minutes, not a second
    root = synthesize(tmp_path / "d", "cnmc-kaggle", 4, 2, 450, seed=0)
    with Image.open(next(root.rglob("UID_*.bmp"))) as im:
        assert im.size == (450, 450)


def test_ensure_synthetic_generates_once_into_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEN_CACHE_DIR", str(tmp_path / "cache"))
    spec = SyntheticSpec(layout="all4", subjects_per_class=1, cells_per_subject=2, size=24, seed=4)
    root = ensure_synthetic(spec)
    assert root == tmp_path / "cache" / "synthetic" / config_hash(spec)
    info = read_synthetic_info(root)
    assert info["layout"] == "all4" and info["seed"] == 4
    calls = []
    monkeypatch.setattr(synth_module, "synthesize", lambda *a, **k: calls.append(a))
    assert ensure_synthetic(spec) == root and calls == []  # complete: not generated again
    leftovers = [p.name for p in root.parent.iterdir() if ".tmp-" in p.name]
    assert leftovers == []


def test_ensure_synthetic_into_a_directory_and_refusing_another_spec(tmp_path: Path) -> None:
    spec = SyntheticSpec(layout="imagefolder", subjects_per_class=1, cells_per_subject=2, size=24)
    target = tmp_path / "mine"
    target.mkdir()  # an empty folder is fine
    assert ensure_synthetic(spec, target) == target
    assert (target / "subjects.csv").is_file() and (target / MARKER).is_file()
    other = spec.model_copy(update={"seed": 1})
    with pytest.raises(FileExistsError, match="another spec"):
        ensure_synthetic(other, target)


def test_a_crash_leaves_no_dataset_that_looks_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = SyntheticSpec(layout="all4", subjects_per_class=1, cells_per_subject=2, size=24)
    real = synth_module.synthesize

    def crash(out: Path, *args: object, **kwargs: object) -> Path:
        real(out, *args, **kwargs)
        (out / MARKER).unlink()
        raise KeyboardInterrupt("killed half way")

    monkeypatch.setattr(synth_module, "synthesize", crash)
    target = tmp_path / "cache" / "d"
    with pytest.raises(KeyboardInterrupt):
        ensure_synthetic(spec, target)
    assert not target.exists()
    assert os.listdir(target.parent) == []  # the temporary folder is gone too
    monkeypatch.setattr(synth_module, "synthesize", real)
    root = ensure_synthetic(spec, target)
    assert json.loads((root / MARKER).read_text())["n_images"] == 8
