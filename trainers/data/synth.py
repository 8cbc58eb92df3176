"""Synthetic stained-cell datasets written in the real layouts, for tests, demos and CI.

Each image is one cell centred on black, like C-NMC-2019: a pale cytoplasm around a dark,
textured nucleus. Everything is drawn from seeded generators, one stream per subject and per
image, so a seed gives the same files. ``data.synthetic.preset`` chooses the difficulty model
(:data:`SYNTH_PRESETS`, :mod:`trainers.data.synth_presets`):

``morphology`` (the default, the original generator; its files never change): the class sets
the cell's morphology - nucleus size, nucleus/cytoplasm ratio, contour irregularity, chromatin
grain and contrast, nucleoli - each about one within-class SD apart, with heavy overlap, so
the task is learnable but not trivial. Each subject (patient) has its own stain colour,
brightness and cell size, strong enough that a split that puts one subject's cells on both
sides scores visibly higher than a split by subject: the same trap the real data sets. Its
best achievable score is unknown (tiny CNNs from scratch reach val AUC 0.55-0.68).

The latent presets draw each cell from an explicit model whose best score is known:

* **Cues.** Each cell has one latent value per cue, ``z = d * (grade - 1/2) + sqrt(r) * u +
  sqrt(1 - r) * e`` (grade 0 = hem/Benign ... 1 = all/Pro; ``u`` one standard normal per
  subject, ``e`` one per cell), so given the class every cue is N(mean, 1), independent of
  the others. The *strength* ``d`` is the class mean shift in within-class SDs; ``r`` is the
  subject's share of the within-class variance (its stain batch, its cells' shape): the subject
  nuisance that enters the cues (0.1 in both presets: at 0.25 a 12-subject test set often
  lost one cue's evidence altogether). The renderer makes each latent a big pixel effect a
  tiny CNN reads easily at 64 px: ``shape`` = the nucleus' radius share of the cell (0.60 +
  0.05 per SD); ``stain`` = the whole cell's hue (0.025 turn per SD, nucleus and cytoplasm alike, so
  nothing in the image is a colour reference); ``density`` = the whole cell's intensity (7%
  darker per SD for a higher grade, on black); ``texture`` = the contrast of 1 px chromatin
  grain (x exp(0.25) per SD), class-free in both presets (tiny CNNs, test_convnext above
  all, do not learn it in 8 epochs of a few hundred cells).
* **What destroys which cue** (:attr:`~trainers.data.synth_presets.Cue.destroyed_when`, and
  the marker lists the augmentation presets): ``stain-jitter`` (hue +-0.3 turn) the stain
  cue, ``brightness-jitter`` (factors 0.4-1.6) the density cue, ``texture-blur`` the texture;
  nothing destroys shape.
* **Nuisance** free of class: each subject's cell size (log-SD 0.03) and each cell's size
  (0.02; more would hide the density and shape cues from a CNN, which pools area and
  intensity together), contour, nucleus position, cytoplasm granules and sensor noise.

=================  ==========================================  ================================
preset             strengths d (subject share r)               what it is for
=================  ==========================================  ================================
``complementary``  stain 1.5 (0.1), density 2.2 (0.1),         members trained with
                   shape 0.6 (0.1); ceiling AUC 0.973          stain-jitter and
                   (C-NMC, 2:1)                                brightness-jitter see different
                                                               evidence: their average gains
``single-cue``     shape 2.73 (0.1), sqrt(1.5^2+2.2^2+0.6^2)   the same ceiling on one cue no
                                                               augmentation destroys: no member
                                                               knows what another does not
=================  ==========================================  ================================

Measured at the demo's scale (cnmc-kaggle, 24 subjects a class, 16 cells per ALL subject,
96 px -> 64 px, 8 epochs, validation = fold 0, data seeds 0-2): members of the five tiny
backbones reach val AUC 0.83-0.97; the average of two members trained with different
augmentations beats the better one in 80-100% of such pairs on validation (by 0.02-0.03 on
average) and in 50-80% on the 12-subject test set, of two with the same augmentation in at
most 20%; on ``single-cue`` members reach their fold's Bayes AUC and no average gains.

**The ceiling.** For a latent preset the marker records ``ceiling``: the cell-level accuracy
and AUC (:func:`trainers.metrics.score`'s definitions) of the Bayes-optimal classifier of one
cell's latent cue values - the posterior of independent N(mean, 1) cues with the labelled
images' class shares as priors, argmax for accuracy - against the labels with their noise,
estimated by Monte Carlo on the generator's own model (200,000 cells in subjects, stream
``[seed, 7]``; binomial SE for accuracy, SE over 10 chunks for the AUC). For two classes it
equals the closed form Phi(sqrt(sum d^2) / sqrt(2)) (a test checks it, label noise
included: acc' = (1 - eps) acc + eps (1 - acc)). No classifier of the images can beat it in
expectation: the renderer only adds nuisance. ``ceiling_realised`` scores the same classifier
on the images actually drawn, per split (C-NMC: ``fold_0..2``, ``test``): a validation fold of
a dozen subjects varies from seed to seed (complementary, 24 subjects a class: fold 0 AUC
0.96-0.98 over seeds 0-2, the test set 0.93-0.98), so compare a member with its own split's
figure. :func:`ceiling`
gives the record without writing images, :func:`cell_latents` every image's latents.

``label_noise`` flips an exact, recorded number of labels (the image keeps its true-class
look, its name and folder take the flipped class): part of both ceilings.

The generator writes ``.wen-synthetic.json`` at the root last; it records the spec (with the
preset), the flipped samples and, for a latent preset, the cues (strength, subject share,
pixels, destroying augmentations), the nuisance and the ceilings, and marks the dataset
complete (a hidden file, so readers skip it).

>>> import tempfile
>>> root = synthesize(Path(tempfile.mkdtemp()) / "d", "cnmc-kaggle", 4, 2, 32, seed=0)
>>> sorted(p.name for p in root.iterdir())
['.wen-synthetic.json', 'testing_data', 'training_data', 'validation_data']
"""

from __future__ import annotations

import colorsys
import csv
import json
import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from trainers._atomic import staged_folder
from trainers.config import min_synthetic_subjects
from trainers.data.synth_presets import (
    CUE_ORDER,
    CUES,
    SYNTH_PRESETS,
    SynthPreset,
    bayes_ceiling,
    bayes_posterior,
    class_means,
    combine_latents,
    difficulty_record,
    realised_scores,
)
from trainers.data.layouts import (
    ALL4_CLASSES,
    CNMC_CLASSES,
    FINAL_DIR,
    PRELIM_CSV,
    PRELIM_DIR,
    SUBJECTS_CSV,
)

if TYPE_CHECKING:
    from trainers.config import SyntheticSpec

__all__ = [
    "MARKER",
    "SYNTH_LAYOUTS",
    "SYNTH_PRESETS",
    "ceiling",
    "cell_latents",
    "ensure_synthetic",
    "read_synthetic_info",
    "synthesize",
]

MARKER = ".wen-synthetic.json"
SYNTH_LAYOUTS = ("cnmc-kaggle", "cnmc-tcia", "all4", "imagefolder")
_FOLDS = 3
_ANGLES = 512  # resolution of the contour radius tables (radius as a function of angle)


# ------------------------------------------------------------------------------ drawing


@dataclass(frozen=True)
class _SubjectLook:
    """Per-subject nuisance effects: stain, brightness and cell size (not class-dependent)."""

    nucleus_rgb: np.ndarray
    cytoplasm_rgb: np.ndarray
    brightness: float
    scale: float


def _draw_subject(rng: np.random.Generator) -> _SubjectLook:
    # Giemsa-like purple nucleus, pale lilac cytoplasm; each subject's stain batch differs
    nucleus = np.array([0.45, 0.22, 0.58]) * np.exp(rng.normal(0.0, 0.16, 3))
    cytoplasm = np.array([0.74, 0.64, 0.86]) * np.exp(rng.normal(0.0, 0.12, 3))
    return _SubjectLook(
        nucleus_rgb=nucleus.astype(np.float32),
        cytoplasm_rgb=np.clip(cytoplasm, 0.0, 1.0).astype(np.float32),
        brightness=float(np.exp(rng.normal(0.0, 0.12))),
        scale=float(np.exp(rng.normal(0.0, 0.10))),
    )


@dataclass(frozen=True)
class _Polar:
    """Distance and angle bin of every pixel of a (2S+1)^2 grid from its centre.

    Any circle-like shape centred near the image centre is a window of this grid at an
    integer offset, so no image pays for its own arctan2 (the slowest step by far).
    """

    radius: np.ndarray  # float32
    angle_bin: np.ndarray  # int32 in [0, _ANGLES)
    noise: np.ndarray  # float32 unit-SD sensor noise tile, windows of it are reused per image


@lru_cache(maxsize=4)
def _polar(size: int) -> _Polar:
    span = np.arange(-size, size + 1, dtype=np.float32)
    dx, dy = np.meshgrid(span, span)
    theta = np.arctan2(dy, dx)
    angle_bin = ((theta + math.pi) * (_ANGLES / (2 * math.pi))).astype(np.int32) % _ANGLES
    noise = np.random.default_rng(12345).standard_normal((3, 2 * size, 2 * size), dtype=np.float32)
    return _Polar(np.hypot(dx, dy), angle_bin, noise)


def _patch(
    grid: np.ndarray, size: int, cx: int, cy: int, box: tuple[int, int, int, int]
) -> np.ndarray:
    """The part of a centred (2S+1)^2 grid over the image box (y0, y1, x0, x1), centre (cx, cy)."""
    y0, y1, x0, x1 = box
    cx, cy = min(max(cx, 0), size - 1), min(max(cy, 0), size - 1)
    return grid[size - cy + y0 : size - cy + y1, size - cx + x0 : size - cx + x1]


def _contour_table(
    radius: float, amplitude: float, harmonics: range, rng: np.random.Generator
) -> np.ndarray:
    """Radius as a function of angle: a circle bent by random low harmonics (k=2 elongates)."""
    theta = np.linspace(-math.pi, math.pi, _ANGLES, endpoint=False)
    k = np.asarray(harmonics, dtype=np.float64)[:, None]
    weights = amplitude * rng.normal(size=(len(k), 1)) / k**0.8
    phases = rng.uniform(0, 2 * math.pi, size=(len(k), 1))
    bend = (weights * np.cos(k * theta + phases)).sum(axis=0)
    return (radius * (1.0 + np.clip(bend, -0.45, 0.45))).astype(np.float32)


def _shape_alpha(
    polar: _Polar,
    size: int,
    centre: tuple[int, int],
    box: tuple[int, int, int, int],
    table: np.ndarray,
    edge: float,
) -> np.ndarray:
    """Soft-edged mask (0..1) over ``box`` of a shape with contour radius ``table[angle]``."""
    radius = _patch(polar.radius, size, *centre, box)
    limit = table[_patch(polar.angle_bin, size, *centre, box)]
    return np.clip((limit - radius) * (1.0 / edge) + 0.5, 0.0, 1.0)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], grain: float) -> np.ndarray:
    """Zero-mean, unit-SD noise with blobs about ``grain`` pixels wide (bicubic upsampling)."""
    h, w = shape
    rows = max(2, int(math.ceil(h / max(grain, 1.0))) + 1)
    cols = max(2, int(math.ceil(w / max(grain, 1.0))) + 1)
    low = rng.standard_normal((rows, cols)).astype(np.float32)
    big = np.asarray(Image.fromarray(low, mode="F").resize((w, h), Image.BICUBIC))
    return (big - big.mean()) * (1.0 / (big.std() + 1e-6))


def _place_cell(
    rng: np.random.Generator, polar: _Polar, size: int, cell_r: float, bend: float, edge: float
) -> tuple[int, int, tuple[int, int, int, int], tuple[int, int], np.ndarray]:
    """A cell of radius ``cell_r`` near the image centre: its centre, bounding box, box shape
    and soft mask (the contour bent by ``bend``; draws from ``rng`` in a fixed order, so a
    seed gives the same files)."""
    s = float(size)
    shift = np.clip(rng.normal(0.0, 0.015 * s, 2), -0.04 * s, 0.04 * s)
    cx, cy = int(round((s - 1) / 2 + shift[0])), int(round((s - 1) / 2 + shift[1]))
    cell_table = _contour_table(cell_r, bend, range(2, 5), rng)
    half = int(math.ceil(float(cell_table.max()) + 2 * edge))
    box = (max(0, cy - half), min(size, cy + half + 1), max(0, cx - half), min(size, cx + half + 1))
    shape = (box[1] - box[0], box[3] - box[2])
    return cx, cy, box, shape, _shape_alpha(polar, size, (cx, cy), box, cell_table, edge)


def _render_cell(
    rng: np.random.Generator, size: int, grade: float, look: _SubjectLook
) -> np.ndarray:
    """One cell on black as uint8 (size, size, 3); ``grade`` 0 = normal ... 1 = most malignant.

    Every class signal below moves its mean by about one within-class SD, so classes overlap
    heavily; the subject's stain and size are drawn independently of the class. All drawing
    happens inside the cell's bounding box (about a third of the image).
    """
    s = float(size)
    polar = _polar(size)
    nucleus_r = s * 0.165 * look.scale * (1.0 + 0.16 * grade) * math.exp(rng.normal(0.0, 0.11))
    ratio = float(np.clip(0.62 + 0.07 * grade + rng.normal(0.0, 0.07), 0.40, 0.92))
    cell_r = min(nucleus_r / ratio, 0.42 * s)
    nucleus_r = min(nucleus_r, 0.95 * cell_r)
    irregular = (0.05 + 0.03 * grade) * math.exp(rng.normal(0.0, 0.40))
    grain = s * (0.036 - 0.010 * grade) * math.exp(rng.normal(0.0, 0.30))
    contrast = float(np.clip(0.30 - 0.06 * grade + rng.normal(0.0, 0.07), 0.05, 0.6))
    n_nucleoli = int(rng.poisson(0.5 + 0.8 * grade))
    edge = max(1.0, s / 180.0)

    # cell near the centre; random contour phases stand in for rotation
    cx, cy, box, shape, cell_alpha = _place_cell(rng, polar, size, cell_r, 0.06, edge)

    offset = rng.uniform(0.0, 0.6) * max(cell_r - nucleus_r, 0.0)
    direction = rng.uniform(0, 2 * math.pi)
    nx = int(round(cx + offset * math.cos(direction)))
    ny = int(round(cy + offset * math.sin(direction)))
    nucleus_table = _contour_table(nucleus_r, irregular, range(2, 8), rng)
    nucleus_alpha = _shape_alpha(polar, size, (nx, ny), box, nucleus_table, edge) * cell_alpha

    chromatin = np.clip(1.0 - contrast * _smooth_noise(rng, shape, grain), 0.2, 1.6)
    for _ in range(n_nucleoli):  # pale nucleoli, more of them in blasts
        r0, a0 = rng.uniform(0, 0.55) * nucleus_r, rng.uniform(0, 2 * math.pi)
        sigma = max(0.6, nucleus_r * rng.uniform(0.07, 0.13))
        px, py = int(round(nx + r0 * math.cos(a0))), int(round(ny + r0 * math.sin(a0)))
        dist = _patch(polar.radius, size, px, py, box)
        chromatin += 0.5 * np.exp(dist * dist * (-0.5 / sigma**2))
    granules = 1.0 + 0.06 * _smooth_noise(rng, shape, s / 40.0)

    # channel by channel: broadcasting (H, W, 1) x (3,) is several times slower than three planes
    jitter = np.exp(rng.normal(0.0, 0.03, 3)) * look.brightness
    cytoplasm = (cell_alpha - nucleus_alpha) * granules
    nucleus = nucleus_alpha * chromatin
    oy = int(rng.integers(0, 2 * size - shape[0] + 1))
    ox = int(rng.integers(0, 2 * size - shape[1] + 1))
    sensor = cell_alpha * 0.015
    image = np.zeros((size, size, 3), dtype=np.uint8)
    region = image[box[0] : box[1], box[2] : box[3]]
    for c in range(3):
        plane = cytoplasm * np.float32(look.cytoplasm_rgb[c] * jitter[c])
        plane += nucleus * np.float32(look.nucleus_rgb[c] * jitter[c])
        plane += polar.noise[c, oy : oy + shape[0], ox : ox + shape[1]] * sensor
        np.clip(plane, 0.0, 1.0, out=plane)
        region[..., c] = plane * 255.0 + 0.5
    return image


# ----------------------------------------------------------------- drawing the cue presets


@dataclass(frozen=True)
class _CueLook:
    """A subject of a latent-cue preset: its shift of each cue's latent (standard normal, in
    :data:`~trainers.data.synth_presets.CUE_ORDER`), brightness, cell size, and the log-SD of
    each of its cells' own size."""

    shift: np.ndarray
    brightness: float
    scale: float
    cell_scale_sd: float


def _draw_cue_subject(rng: np.random.Generator, preset: SynthPreset) -> _CueLook:
    return _CueLook(
        shift=rng.standard_normal(len(CUE_ORDER)),
        brightness=float(np.exp(rng.normal(0.0, preset.brightness_sd))),
        scale=float(np.exp(rng.normal(0.0, preset.scale_sd))),
        cell_scale_sd=preset.cell_scale_sd,
    )


# the cue presets' colours before the stain cue's hue rotation and the subject's brightness
_CUE_NUCLEUS = np.array([0.40, 0.19, 0.51], dtype=np.float32)
_CUE_CYTOPLASM = np.array([0.63, 0.54, 0.70], dtype=np.float32)
_GRAIN = 0.012  # chromatin grain of the texture cue, a share of the side: about 1 px at 64 px


def _hue_rotated(rgb: np.ndarray, turns: float) -> np.ndarray:
    """``rgb`` with its HSV hue rotated by ``turns`` (what a hue jitter does to every pixel)."""
    h, sat, v = colorsys.rgb_to_hsv(*(float(c) for c in rgb))
    return np.array(colorsys.hsv_to_rgb((h + turns) % 1.0, sat, v), dtype=np.float32)


def _cue_parameters(z: np.ndarray) -> tuple[float, float, float, float]:
    """Nucleus/cell radius ratio, chromatin contrast, hue rotation (turns) and intensity factor
    of latents ``z`` (in :data:`~trainers.data.synth_presets.CUE_ORDER`)."""
    shape, texture, stain, density = (CUES[name] for name in CUE_ORDER)
    ratio = float(np.clip(shape.base + shape.per_sd * float(z[0]), 0.30, 0.90))
    contrast = float(np.clip(texture.base * math.exp(texture.per_sd * float(z[1])), 0.02, 0.6))
    hue = stain.base + stain.per_sd * float(z[2])
    return ratio, contrast, hue, math.exp(density.base + density.per_sd * float(z[3]))


def _render_cue_cell(
    rng: np.random.Generator, size: int, z: np.ndarray, look: _CueLook
) -> np.ndarray:
    """One cell of a latent-cue preset as uint8 (size, size, 3); its cues set by latents ``z``.

    Everything but the cues is class-free nuisance: the cell's size (the subject's and its
    own), contour, the nucleus' position, cytoplasm granules, brightness and sensor noise.
    """
    s = float(size)
    polar = _polar(size)
    ratio, contrast, hue, intensity = _cue_parameters(z)
    cell_r = min(s * 0.27 * look.scale * math.exp(rng.normal(0.0, look.cell_scale_sd)), 0.40 * s)
    nucleus_r = ratio * cell_r
    edge = max(1.0, s / 180.0)
    cx, cy, box, shape, cell_alpha = _place_cell(rng, polar, size, cell_r, 0.05, edge)
    offset = rng.uniform(0.0, 0.35) * (cell_r - nucleus_r)
    direction = rng.uniform(0, 2 * math.pi)
    nx = int(round(cx + offset * math.cos(direction)))
    ny = int(round(cy + offset * math.sin(direction)))
    nucleus_table = _contour_table(nucleus_r, 0.05, range(2, 6), rng)
    nucleus_alpha = _shape_alpha(polar, size, (nx, ny), box, nucleus_table, edge) * cell_alpha
    chromatin = np.clip(1.0 - contrast * _smooth_noise(rng, shape, s * _GRAIN), 0.1, 1.9)
    granules = 1.0 + 0.04 * _smooth_noise(rng, shape, s / 25.0)

    bright = look.brightness * intensity
    cytoplasm = (cell_alpha - nucleus_alpha) * granules
    nucleus = nucleus_alpha * chromatin
    oy = int(rng.integers(0, 2 * size - shape[0] + 1))
    ox = int(rng.integers(0, 2 * size - shape[1] + 1))
    sensor = cell_alpha * np.float32(0.015 * bright)
    image = np.zeros((size, size, 3), dtype=np.uint8)
    region = image[box[0] : box[1], box[2] : box[3]]
    nucleus_rgb = _hue_rotated(_CUE_NUCLEUS, hue) * bright
    cytoplasm_rgb = _hue_rotated(_CUE_CYTOPLASM, hue) * bright
    for c in range(3):
        plane = cytoplasm * np.float32(cytoplasm_rgb[c])
        plane += nucleus * np.float32(nucleus_rgb[c])
        plane += polar.noise[c, oy : oy + shape[0], ox : ox + shape[1]] * sensor
        np.clip(plane, 0.0, 1.0, out=plane)
        region[..., c] = plane * 255.0 + 0.5
    return image


# ------------------------------------------------------------------------------- planning


@dataclass
class _Cell:
    """One image to write: which subject, true and (maybe flipped) class, where it goes."""

    index: int
    subject: int
    true_class: int
    label: int
    split: str  # train / test / final
    fold: int
    rel: str = ""
    original_name: str = ""


@dataclass
class _Subject:
    index: int
    name: str
    true_class: int
    split: str
    fold: int
    cells: int


# how malignant each class looks: 0 = normal ... 1 = most malignant (all4 is graded)
_GRADE = {"hem": 0.0, "all": 1.0, "Benign": 0.0, "Early": 1 / 3, "Pre": 2 / 3, "Pro": 1.0}


def _grades(layout: str) -> list[float]:
    """Grade of each class index, in the layout's class order (imagefolder: all=0, hem=1)."""
    return [_GRADE[name] for name in _class_names(layout)]


def _class_names(layout: str) -> list[str]:
    if layout == "all4":
        return list(ALL4_CLASSES)
    if layout == "imagefolder":
        return ["all", "hem"]  # sorted folder names, as the imagefolder reader sees them
    return list(CNMC_CLASSES)


def _plan_subjects(layout: str, per_class: int, cells: int) -> list[_Subject]:
    names = _class_names(layout)
    subjects: list[_Subject] = []
    cnmc = layout.startswith("cnmc")
    for cls, cls_name in enumerate(names):
        malignant = cls_name == "all"
        # C-NMC: healthy subjects give about half as many cells, so images are ~2:1 ALL:hem
        n_cells = cells if (not cnmc or malignant) else max(1, math.ceil(cells / 2))
        n_test = max(1, round(per_class / 4)) if cnmc else 0
        for k in range(per_class + (1 if cnmc else 0)):
            if not cnmc:
                split, fold = "train", -1
            elif k < per_class - n_test:
                split, fold = "train", k % _FOLDS
            elif k < per_class:
                split, fold = "test", -1
            else:  # one extra subject per class for the small unlabelled final set
                split, fold = "final", -1
            number = k + 1
            if cnmc:
                name = f"H{number}" if not malignant else str(number)
            else:  # all4 keeps its subjects hidden (the real set has no ids), as the stain does
                name = f"{cls_name.upper()}{number:02d}"
            final_cells = max(1, cells // 2)
            subjects.append(
                _Subject(
                    len(subjects),
                    name,
                    cls,
                    split,
                    fold,
                    final_cells if split == "final" else n_cells,
                )
            )
    return subjects


def _flip(cells: list[_Cell], share: float, n_classes: int, rng: np.random.Generator) -> int:
    """Flip exactly round(share x labelled) labels; returns how many."""
    labelled = [c for c in cells if c.split != "final"]
    n_flip = int(round(share * len(labelled)))
    if n_flip == 0:
        return 0
    chosen = rng.choice(len(labelled), size=n_flip, replace=False)
    for i in sorted(chosen):
        cell = labelled[i]
        others = [k for k in range(n_classes) if k != cell.true_class]
        cell.label = int(others[rng.integers(len(others))])
    return n_flip


def _assign_paths(
    layout: str, cells: list[_Cell], subjects: list[_Subject], rng: np.random.Generator
) -> None:
    names = _class_names(layout)
    if layout in ("cnmc-kaggle", "cnmc-tcia"):
        if layout == "cnmc-kaggle":
            train = "training_data"
            prelim, final = f"validation_data/{PRELIM_DIR}", f"testing_data/{FINAL_DIR}"
        else:  # TCIA nests the test images in a folder of the same name
            train = "C-NMC_training_data"
            prelim, final = f"{PRELIM_DIR}/{PRELIM_DIR}", f"{FINAL_DIR}/{FINAL_DIR}"
        seen: dict[int, int] = {}
        for cell in cells:
            j = seen.get(cell.subject, 0)
            seen[cell.subject] = j + 1
            cls = names[cell.label if cell.label >= 0 else cell.true_class]
            subject = subjects[cell.subject].name
            cell.original_name = f"UID_{subject}_{j // 2 + 1}_{j % 2 + 1}_{cls}.bmp"
            if cell.split == "train":
                cell.rel = f"{train}/fold_{cell.fold}/{cls}/{cell.original_name}"
        for split, folder in (("test", prelim), ("final", final)):
            group = [c for c in cells if c.split == split]
            for number, pos in enumerate(rng.permutation(len(group)), start=1):
                group[pos].rel = f"{folder}/{number}.bmp"
    elif layout == "all4":
        for cls, cls_name in enumerate(names):
            group = [c for c in cells if c.label == cls]
            for number, pos in enumerate(rng.permutation(len(group)), start=1):
                group[pos].rel = f"Original/{cls_name}/WBC-{cls_name}-{number:03d}.jpg"
    else:
        seen = {}
        for cell in cells:
            j = seen.get(cell.subject, 0)
            seen[cell.subject] = j + 1
            cell.rel = f"{names[cell.label]}/{subjects[cell.subject].name}_{j + 1:03d}.png"


def _check_args(layout: str, per_class: int, cells: int, size: int, label_noise: float) -> None:
    if layout not in SYNTH_LAYOUTS:
        raise ValueError(
            f"unknown synthetic layout {layout!r}; valid names: {', '.join(SYNTH_LAYOUTS)}"
        )
    minimum = min_synthetic_subjects(layout)
    if per_class < minimum:
        raise ValueError(
            f"`subjects_per_class >= {minimum}` must hold for {layout}, got {per_class}"
            + (
                ": C-NMC layouts need three training folds plus a test subject per class"
                if minimum > 1
                else ""
            )
        )
    if cells < 1:
        raise ValueError(f"`cells_per_subject >= 1` must hold, got {cells}")
    if not 16 <= size <= 1024:
        raise ValueError(f"`16 <= size <= 1024` must hold, got size={size}")
    if not 0.0 <= label_noise < 0.5:
        raise ValueError(f"`0 <= label_noise < 0.5` must hold, got label_noise={label_noise}")


def _save(image: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pil = Image.fromarray(image, mode="RGB")
    suffix = path.suffix.lower()
    if suffix == ".jpg":
        pil.save(path, format="JPEG", quality=92)
    elif suffix == ".png":
        pil.save(path, format="PNG", compress_level=1)
    else:
        pil.save(path, format="BMP")


def _write_subjects_csv(out: Path, cells: list[_Cell], subjects: list[_Subject]) -> None:
    """The imagefolder layout's ``subjects.csv``: each image's subject."""
    with (out / SUBJECTS_CSV).open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "subject_id"])
        for cell in cells:
            writer.writerow([cell.rel, subjects[cell.subject].name])


def synthesize(
    out: Path,
    layout: str,
    subjects_per_class: int,
    cells_per_subject: int,
    size: int,
    seed: int,
    label_noise: float = 0.0,
    preset: str = "morphology",
) -> Path:
    """Write a synthetic dataset in ``layout`` to the empty (or new) folder ``out``.

    C-NMC layouts: per class, ``subjects_per_class`` labelled subjects - about a quarter in the
    preliminary test set (numbered files plus the labels CSV), the rest spread over
    ``fold_0..2`` - and one more per class in the unlabelled final set; healthy subjects give
    half as many cells (images ~2:1 ALL:hem). all4: four graded classes, no subject ids.
    imagefolder: classes ``all``/``hem`` with ``subjects.csv``. ``preset`` names the
    difficulty model (:data:`SYNTH_PRESETS`; an unknown name raises listing the valid ones).
    Returns ``out``.
    """
    _check_args(layout, subjects_per_class, cells_per_subject, size, label_noise)
    model = SYNTH_PRESETS.get(preset)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(
            f"synthetic output folder {str(out)!r} exists and is not empty; pick a new folder "
            "or delete it first"
        )
    out.mkdir(parents=True, exist_ok=True)
    subjects, cells, n_flipped = _plan(
        layout, subjects_per_class, cells_per_subject, seed, label_noise
    )
    z = _draw_images(out, layout, model, cells, subjects, size, seed)
    if layout.startswith("cnmc"):
        _write_prelim_csv(out, layout, cells)
    if layout == "imagefolder":
        _write_subjects_csv(out, cells, subjects)

    flipped = sorted(c.rel for c in cells if c.split != "final" and c.label != c.true_class)
    info = {
        "generator": "wen-search synthetic v1",
        "layout": layout,
        "subjects_per_class": subjects_per_class,
        "cells_per_subject": cells_per_subject,
        "size": size,
        "seed": seed,
        "label_noise": label_noise,
        "preset": preset,
        "n_images": len(cells),
        "n_labelled": sum(c.split != "final" for c in cells),
        "n_flipped": n_flipped,
        "flipped": flipped,
    }
    if z is not None:
        info["difficulty"] = difficulty_record(model)
        info["ceiling"] = _ceiling(model, layout, cells, cells_per_subject, label_noise, seed)
        info["ceiling_realised"] = _realised_ceiling(model, layout, cells, z)
    (out / MARKER).write_text(json.dumps(info, indent=1))
    return out


def _plan(
    layout: str, per_class: int, cells_per_subject: int, seed: int, label_noise: float
) -> tuple[list[_Subject], list[_Cell], int]:
    """Subjects, cells (with their labels, flipped or not, and paths) and the flip count."""
    subjects = _plan_subjects(layout, per_class, cells_per_subject)
    cells: list[_Cell] = []
    for subj in subjects:
        for _ in range(subj.cells):
            label = subj.true_class if subj.split != "final" else -1
            cells.append(
                _Cell(len(cells), subj.index, subj.true_class, label, subj.split, subj.fold)
            )
    n_classes = len(_class_names(layout))
    n_flipped = _flip(cells, label_noise, n_classes, np.random.default_rng([seed, 2]))
    _assign_paths(layout, cells, subjects, np.random.default_rng([seed, 3]))
    return subjects, cells, n_flipped


def _latents(
    model: SynthPreset, layout: str, cells: list[_Cell], subjects: list[_Subject], seed: int
) -> tuple[list[_CueLook], np.ndarray]:
    """Each subject's look and each cell's latent cues [cells, cues]: one seeded stream per
    subject (``[seed, 1, subject]``) and one per cell (``[seed, 5, cell]``)."""
    looks = [_draw_cue_subject(np.random.default_rng([seed, 1, s.index]), model) for s in subjects]
    means = class_means(model, _grades(layout))
    z = np.empty((len(cells), len(CUE_ORDER)))
    for cell in cells:
        noise = np.random.default_rng([seed, 5, cell.index]).standard_normal(len(CUE_ORDER))
        z[cell.index] = combine_latents(
            model, means[cell.true_class], looks[cell.subject].shift, noise
        )
    return looks, z


def _draw_images(
    out: Path,
    layout: str,
    model: SynthPreset,
    cells: list[_Cell],
    subjects: list[_Subject],
    size: int,
    seed: int,
) -> np.ndarray | None:
    """Render and save every cell, one seeded stream per image (``[seed, 4, cell]``); the
    cells' latent cues (None for the morphology renderer)."""
    if not model.latent:
        grades = _grades(layout)
        looks = [_draw_subject(np.random.default_rng([seed, 1, s.index])) for s in subjects]
        for cell in cells:
            rng = np.random.default_rng([seed, 4, cell.index])
            image = _render_cell(rng, size, grades[cell.true_class], looks[cell.subject])
            _save(image, out / cell.rel)
        return None
    cue_looks, z = _latents(model, layout, cells, subjects, seed)
    for cell in cells:
        rng = np.random.default_rng([seed, 4, cell.index])
        image = _render_cue_cell(rng, size, z[cell.index], cue_looks[cell.subject])
        _save(image, out / cell.rel)
    return z


def _priors(layout: str, cells: list[_Cell]) -> np.ndarray:
    """The labelled images' class shares."""
    names = _class_names(layout)
    labelled = [c.true_class for c in cells if c.split != "final"]
    return np.bincount(labelled, minlength=len(names)) / len(labelled)


def _ceiling(
    model: SynthPreset,
    layout: str,
    cells: list[_Cell],
    cells_per_subject: int,
    label_noise: float,
    seed: int,
) -> dict:
    """The Bayes ceiling of the labelled images (their class shares are the priors)."""
    return bayes_ceiling(
        model,
        _grades(layout),
        _priors(layout, cells).tolist(),
        _class_names(layout),
        label_noise=label_noise,
        cells_per_subject=cells_per_subject,
        seed=seed,
    )


def _split_name(cell: _Cell) -> str:
    return f"fold_{cell.fold}" if cell.split == "train" and cell.fold >= 0 else cell.split


def _realised_ceiling(model: SynthPreset, layout: str, cells: list[_Cell], z: np.ndarray) -> dict:
    """The Bayes classifier scored on the images actually drawn, per source split (C-NMC:
    ``fold_0..2`` and ``test``; otherwise ``train``) and on all labelled images, against their
    labels as written: what a validation or test figure of this dataset can reach."""
    names = _class_names(layout)
    post = bayes_posterior(model, _grades(layout), _priors(layout, cells), z)
    labels = np.array([c.label for c in cells])
    groups: dict[str, list[int]] = {}
    for cell in cells:
        if cell.split != "final":
            groups.setdefault(_split_name(cell), []).append(cell.index)
            groups.setdefault("labelled", []).append(cell.index)
    out: dict = {}
    for name, rows in sorted(groups.items()):
        acc, auc = realised_scores(labels[rows], post[rows], names)
        out[name] = {"n": len(rows), "accuracy": round(acc, 4), "auc": auc}
    out["how"] = (
        "the Bayes posterior of each image's own latent cues (as in the ceiling) scored against "
        "the labels written; cells of one subject are not independent, so a small split's "
        "figure varies from seed to seed by more than a binomial error"
    )
    return out


def cell_latents(spec: SyntheticSpec) -> dict[str, list | np.ndarray] | None:
    """The latent cue values of every image ``spec`` writes, recomputed without rendering;
    None for a preset without a latent model.

    Keys: ``path`` (relative to the dataset root), ``subject`` (name), ``split`` (train, test,
    final), ``fold``, ``true_class`` and ``label`` (after label noise; -1 unlabelled) as class
    indices, and ``z`` [images, cues] in :data:`~trainers.data.synth_presets.CUE_ORDER`. With
    them the Bayes classifier of any subset (a validation fold) can be scored.
    """
    model = SYNTH_PRESETS.get(spec.preset)
    if not model.latent:
        return None
    subjects, cells, _ = _plan(
        spec.layout, spec.subjects_per_class, spec.cells_per_subject, spec.seed, spec.label_noise
    )
    _, z = _latents(model, spec.layout, cells, subjects, spec.seed)
    return {
        "path": [c.rel for c in cells],
        "subject": [subjects[c.subject].name for c in cells],
        "split": [c.split for c in cells],
        "fold": [c.fold for c in cells],
        "true_class": [c.true_class for c in cells],
        "label": [c.label for c in cells],
        "z": z,
    }


def ceiling(spec: SyntheticSpec) -> dict | None:
    """The Bayes ceiling the generator records for ``spec`` (``ceiling`` in its marker), without
    writing images; None for a preset without a latent model (``morphology``).

    >>> from trainers.config import SyntheticSpec
    >>> c = ceiling(SyntheticSpec(preset="complementary", subjects_per_class=4))
    >>> 0.8 < c["auc"] < 1.0, c["n_monte_carlo"]
    (True, 200000)
    """
    model = SYNTH_PRESETS.get(spec.preset)
    if not model.latent:
        return None
    _, cells, _ = _plan(
        spec.layout, spec.subjects_per_class, spec.cells_per_subject, spec.seed, spec.label_noise
    )
    return _ceiling(model, spec.layout, cells, spec.cells_per_subject, spec.label_noise, spec.seed)


def _write_prelim_csv(out: Path, layout: str, cells: list[_Cell]) -> None:
    folder = "validation_data" if layout == "cnmc-kaggle" else PRELIM_DIR
    rows = sorted((c for c in cells if c.split == "test"), key=lambda c: int(Path(c.rel).stem))
    path = out / folder / PRELIM_CSV
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["Patient_ID", "new_names", "labels"])
        for cell in rows:
            writer.writerow([cell.original_name, Path(cell.rel).name, cell.label])


# ----------------------------------------------------------------------------- caching


def read_synthetic_info(root: Path) -> dict | None:
    """The generator's record (spec, counts, flipped samples); None when ``root`` has none."""
    marker = Path(root) / MARKER
    if not marker.is_file():
        return None
    try:
        return json.loads(marker.read_text())
    except (OSError, ValueError):
        return None


def _cache_root() -> Path:
    default = Path.home() / ".cache" / "wen-search"
    return Path(os.environ.get("WEN_CACHE_DIR") or default).expanduser()


def _spec_fields(spec: SyntheticSpec) -> dict:
    return {k: v for k, v in spec.model_dump(mode="json").items()}


#: what a marker written before a spec field existed means by its absence
_LEGACY_FIELDS = {"preset": "morphology"}


def _matches(info: dict | None, spec: SyntheticSpec) -> bool:
    return info is not None and all(
        info.get(k, _LEGACY_FIELDS.get(k)) == v for k, v in _spec_fields(spec).items()
    )


def ensure_synthetic(spec: SyntheticSpec, directory: Path | None = None) -> Path:
    """The folder of the synthetic dataset ``spec``, generated only when not already complete.

    Default folder: ``$WEN_CACHE_DIR/synthetic/<hash of spec>`` (``~/.cache/wen-search``).
    The dataset is written to a temporary sibling folder and renamed into place, so a crash
    never leaves a half dataset that looks complete; when two processes race, the first
    rename wins and the other's copy is discarded.
    """
    from trainers.config import config_hash

    if directory is not None:
        target = Path(directory)
    else:
        target = _cache_root() / "synthetic" / config_hash(spec)
    info = read_synthetic_info(target)
    if _matches(info, spec):
        return target
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        what = "a synthetic dataset with another spec" if info else "other files"
        raise FileExistsError(
            f"synthetic folder {str(target)!r} holds {what}; delete it or set "
            "data.synthetic_dir to a new folder"
        )
    try:
        # replace=False: the rename fails when a racing process put its copy there first
        with staged_folder(target, "synthetic dataset", replace=False) as tmp:
            synthesize(
                tmp,
                spec.layout,
                spec.subjects_per_class,
                spec.cells_per_subject,
                spec.size,
                spec.seed,
                spec.label_noise,
                spec.preset,
            )
    except OSError:
        if not _matches(read_synthetic_info(target), spec):
            raise
    return target
