"""The synthetic difficulty model: presets, the recorded Bayes ceiling, cues in the pixels, and
complementary versus single-cue evidence for members trained with different augmentations."""

from __future__ import annotations

import colorsys
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage
from scipy.stats import norm

from trainers._registry import UnknownNameError
from trainers.checks import check_names
from trainers.config import ConfigError, SyntheticSpec, load_config
from trainers.data import synth as synth_module
from trainers.data.augment import create_augmentation, preset_spec
from trainers.data.synth import (
    MARKER,
    SYNTH_PRESETS,
    ceiling,
    cell_latents,
    ensure_synthetic,
    read_synthetic_info,
    synthesize,
)
from trainers.data.synth_presets import (
    CUE_ORDER,
    CUES,
    SynthPreset,
    bayes_ceiling,
    destroyed_by,
)

# sha256 over (relative path, bytes) of every file but the marker of
# synthesize(.., "cnmc-kaggle", 4, 2, 32, seed=0): the morphology preset's files never change
MORPHOLOGY_DIGEST = "5fca7200fe8fdc9d89986b61c651b904fcc7e80a87d98b4ebe94ae9b2c053176"


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != MARKER:
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_presets_are_a_registry_and_an_unknown_name_lists_the_valid_ones(tmp_path: Path) -> None:
    assert SYNTH_PRESETS.names() == ["complementary", "morphology", "single-cue"]
    assert SyntheticSpec().preset == "morphology"
    with pytest.raises(UnknownNameError, match="valid names: complementary, morphology"):
        synthesize(tmp_path / "a", "all4", 1, 1, 32, seed=0, preset="easy")
    with pytest.raises(ConfigError, match=r"data.synthetic.preset: unknown synthetic preset 'x'"):
        load_config(
            {
                "data": {"synthetic": {"preset": "x"}, "input_size": 32},
                "model": {"backbone": "test_resnet"},
            },
            checks=check_names,
        )


def test_the_morphology_preset_writes_the_same_files_as_before(tmp_path: Path) -> None:
    root = synthesize(tmp_path / "d", "cnmc-kaggle", 4, 2, 32, seed=0)
    assert _digest(root) == MORPHOLOGY_DIGEST, "the default generator's files changed"
    info = read_synthetic_info(root)
    assert info["preset"] == "morphology" and "ceiling" not in info
    assert ceiling(SyntheticSpec(layout="cnmc-kaggle", subjects_per_class=4)) is None


def test_a_marker_from_before_presets_still_matches_its_spec(tmp_path: Path) -> None:
    spec = SyntheticSpec(layout="all4", subjects_per_class=1, cells_per_subject=2, size=24)
    root = ensure_synthetic(spec, tmp_path / "d")
    marker = root / MARKER
    info = read_synthetic_info(root)
    del info["preset"]  # written by an older generator: morphology is what it drew
    marker.write_text(json.dumps(info))
    assert ensure_synthetic(spec, root) == root
    with pytest.raises(FileExistsError, match="another spec"):
        ensure_synthetic(spec.model_copy(update={"preset": "complementary"}), root)


def test_the_marker_records_cues_destroyers_and_the_ceiling(tmp_path: Path) -> None:
    spec = SyntheticSpec(
        layout="cnmc-kaggle",
        subjects_per_class=4,
        cells_per_subject=2,
        size=32,
        preset="complementary",
        label_noise=0.1,
    )
    info = read_synthetic_info(ensure_synthetic(spec, tmp_path / "d"))
    cues = info["difficulty"]["cues"]
    preset = SYNTH_PRESETS.get("complementary")
    assert {k: v["strength"] for k, v in cues.items()} == pytest.approx(preset.strengths)
    assert cues["stain"]["destroyed_by"] == ["stain-jitter"]
    assert cues["density"]["destroyed_by"] == ["brightness-jitter"]
    assert cues["shape"]["destroyed_by"] == []
    recorded = info["ceiling"]
    assert recorded == ceiling(spec)  # the public function gives what the marker holds
    assert {"accuracy", "auc", "accuracy_se", "auc_se", "n_monte_carlo", "seed", "how"} <= set(
        recorded
    )
    assert 0.5 < recorded["accuracy"] < 1 and 0.5 < recorded["auc"] < 1
    assert 0 < recorded["accuracy_se"] < 0.01 and 0 < recorded["auc_se"] < 0.01
    realised = info["ceiling_realised"]  # the same classifier on the images drawn, per split
    assert {"fold_0", "fold_1", "fold_2", "test", "labelled"} <= set(realised)
    assert realised["labelled"]["n"] == info["n_labelled"]


def _closed_form(d: np.ndarray, prior_pos: float, eps: float) -> tuple[float, float]:
    """Bayes accuracy (prior-aware threshold) and AUC of two unit-variance Gaussian classes
    ``d`` apart, against labels flipped with probability ``eps``."""
    delta = float(np.linalg.norm(d))
    auc = norm.cdf(delta / math.sqrt(2))
    c = math.log((1 - prior_pos) / prior_pos) / delta
    acc = prior_pos * norm.cdf(delta / 2 - c) + (1 - prior_pos) * norm.cdf(delta / 2 + c)
    acc = (1 - eps) * acc + eps * (1 - acc)
    # noisy positives: true positives kept (a) and true negatives flipped (b); noisy negatives:
    # true negatives kept (c) and true positives flipped (e); a pair of like truths ties
    a, b = prior_pos * (1 - eps), (1 - prior_pos) * eps
    cc, e = (1 - prior_pos) * (1 - eps), prior_pos * eps
    auc = (a * cc * auc + (a * e + b * cc) / 2 + b * e * (1 - auc)) / ((a + b) * (cc + e))
    return acc, auc


@pytest.mark.parametrize("eps", [0.0, 0.15])
def test_the_monte_carlo_ceiling_matches_the_closed_form(eps: float) -> None:
    preset = SynthPreset(
        "small",
        "two cues",
        strengths={"texture": 0.9, "stain": 0.5},
        subject_share={"stain": 0.4},  # a subject shift leaves each cell's marginal as it is
    )
    got = bayes_ceiling(preset, [0.0, 1.0], [1, 2], ["hem", "all"], label_noise=eps, n=100_000)
    acc, auc = _closed_form(np.array([0.9, 0.5]), 2 / 3, eps)
    assert abs(got["accuracy"] - acc) < 4 * got["accuracy_se"] + 1e-4, (got, acc)
    assert abs(got["auc"] - auc) < 4 * got["auc_se"] + 1e-4, (got, auc)


def test_single_cue_has_the_ceiling_of_complementary_on_one_undestroyed_cue() -> None:
    one, many = SYNTH_PRESETS.get("single-cue"), SYNTH_PRESETS.get("complementary")
    assert list(one.strengths) == ["shape"] and len(many.strengths) == 3
    assert math.hypot(*one.strengths.values()) == pytest.approx(
        math.hypot(*many.strengths.values())
    )
    assert destroyed_by(one) == {"shape": []}
    a = bayes_ceiling(one, [0, 1], [1, 2], ["hem", "all"], n=50_000)
    b = bayes_ceiling(many, [0, 1], [1, 2], ["hem", "all"], n=50_000)
    assert abs(a["auc"] - b["auc"]) < 4 * math.hypot(a["auc_se"], b["auc_se"])


# ------------------------------------------------------------------- the cues in the pixels


def _dataset(tmp: Path, preset: str, subjects: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A written dataset at the demo's scale (96 px, centre crop 3/4, 64 px) read back with the
    generator's latents: images [n, 64, 64, 3], true classes (all = 1), latents [n, cues],
    ordered by subject (8 cells each, classes alternating)."""
    spec = SyntheticSpec(
        layout="imagefolder", subjects_per_class=subjects, cells_per_subject=8, preset=preset
    )
    root = ensure_synthetic(spec, tmp / preset)
    latents = cell_latents(spec)
    names = synth_module._class_names("imagefolder")
    order = np.argsort(
        [int(s[3:]) * 2 + (s[:3] == "HEM") for s in latents["subject"]], kind="stable"
    )
    images = []
    for i in order:
        with Image.open(root / latents["path"][i]) as im:
            images.append(np.asarray(im.crop((12, 12, 84, 84)).resize((64, 64), Image.BILINEAR)))
    classes = np.array([names[c] == "all" for c in latents["true_class"]], dtype=int)[order]
    return np.stack(images), classes, latents["z"][order]


def _features(image: np.ndarray) -> list[float]:
    """Hand-made reads of the four cues: nucleus share of the cell, log contrast of the
    nucleus' fine grain, mean hue and log mean intensity (HSV value) of the cell."""
    x = image.astype(np.float32) / 255
    lum = x.mean(2)
    cell = lum > 0.08
    nucleus = cell & (lum < 0.75 * np.percentile(lum[cell], 90))
    inner = ndimage.binary_erosion(nucleus, iterations=2)
    inner = inner if inner.sum() >= 5 else nucleus
    fine = lum - ndimage.uniform_filter(lum, 3)
    texture = fine[inner].std() / (lum[inner].mean() + 1e-3)
    hue = colorsys.rgb_to_hsv(*(float(x[..., c][cell].mean()) for c in range(3)))[0]
    value = float(x.max(2)[cell].mean())
    return [nucleus.sum() / max(cell.sum(), 1), math.log(texture + 1e-4), hue, math.log(value)]


def _augmented(images: np.ndarray, preset: str) -> np.ndarray:
    torch.manual_seed(0)
    aug = create_augmentation(preset, 64)
    chw = torch.from_numpy(images).permute(0, 3, 1, 2)
    return np.stack([aug(x).permute(1, 2, 0).numpy() for x in chw])


def _cue_correlations(images: np.ndarray, latents: np.ndarray) -> dict[str, float]:
    f = np.array([_features(im) for im in images])
    return {
        cue: float(np.corrcoef(f[:, j], latents[:, j])[0, 1]) for j, cue in enumerate(CUE_ORDER)
    }


def test_each_cue_is_in_the_pixels_and_only_its_augmentation_destroys_it(tmp_path: Path) -> None:
    # texture has no class strength in complementary, but it varies (nuisance) all the same
    images, _, latents = _dataset(tmp_path, "complementary", 12)
    clean = _cue_correlations(images, latents)
    assert min(abs(v) for v in clean.values()) > 0.85, clean  # the images carry every latent
    destroys = {"stain-jitter": "stain", "brightness-jitter": "density", "texture-blur": "texture"}
    for aug, cue in destroys.items():
        seen = _cue_correlations(_augmented(images, aug), latents)
        assert abs(seen[cue]) < 0.35, (aug, seen)
        kept = {k: v for k, v in seen.items() if k != cue}
        assert min(abs(v) for v in kept.values()) > 0.85, (aug, seen)
        # and the cue table, which the marker's destroyed_by comes from, says so
        assert [a for a in destroys if CUES[cue].destroys(preset_spec(a))] == [aug]


def _member(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray) -> np.ndarray:
    """A simple member: logistic regression on the hand-made features, its test logits."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0)).fit(train_x, train_y)
    return model.decision_function(test_x)


def _two_members(tmp: Path, name: str) -> tuple[float, float, float, float]:
    """Members trained on stain-jitter and brightness-jitter views of the same cells, scored on
    clean cells of other subjects: (within-class correlation of their logits, AUC of each, of
    the average of their standardised logits)."""
    from sklearn.metrics import roc_auc_score

    images, y, _ = _dataset(tmp, name, 30)
    train, test = slice(0, 320), slice(320, None)  # whole subjects: 8 cells each
    clean = np.array([_features(im) for im in images[test]])
    logits = []
    for aug in ("stain-jitter", "brightness-jitter"):
        seen = np.array([_features(im) for im in _augmented(images[train], aug)])
        logits.append(_member(seen, y[train], clean))
    a, b = logits
    within = np.mean([np.corrcoef(a[y[test] == c], b[y[test] == c])[0, 1] for c in (0, 1)])
    aucs = [roc_auc_score(y[test], s) for s in (a, b)]
    average = roc_auc_score(y[test], (a / a.std() + b / b.std()) / 2)
    return float(within), aucs[0], aucs[1], average


def test_single_cue_members_share_their_errors_complementary_members_do_not(
    tmp_path: Path,
) -> None:
    single = _two_members(tmp_path, "single-cue")
    complementary = _two_members(tmp_path, "complementary")
    assert single[0] > 0.8, single  # both members read the one shape cue: the same errors
    assert complementary[0] < single[0] - 0.5, (single, complementary)
    # averaging helps only where the members know different things
    assert complementary[3] > max(complementary[1:3]) + 0.02, complementary
    assert single[3] < max(single[1:3]) + 0.02, single
