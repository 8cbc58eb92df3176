"""The synthetic generator's difficulty model: cues, presets, and the Bayes ceiling.

A preset of :mod:`trainers.data.synth` (``data.synthetic.preset``) is one :class:`SynthPreset`
in :data:`SYNTH_PRESETS`; the module doc of :mod:`trainers.data.synth` describes the model
and the preset table. Here: the :class:`Cue` table (what each latent does to the pixels and
which augmentation specs destroy it), the presets' strengths, the latent draw shared by the
generator and the Monte Carlo (:func:`combine_latents`), and :func:`bayes_ceiling`.

>>> preset = SYNTH_PRESETS.get("complementary")
>>> sorted(preset.strengths)
['density', 'shape', 'stain']
>>> destroyed_by(preset)["stain"]
['stain-jitter']
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from trainers._registry import Registry
from trainers.data.augment import AUGMENTATIONS, AugmentSpec, preset_spec
from trainers.metrics import ovr_scores, positive_index

__all__ = [
    "CUES",
    "CUE_ORDER",
    "SYNTH_PRESETS",
    "Cue",
    "SynthPreset",
    "bayes_ceiling",
    "bayes_posterior",
    "class_means",
    "destroyed_by",
    "difficulty_record",
    "realised_scores",
]


@dataclass(frozen=True)
class Cue:
    """One class cue: what its latent value does to the pixels, and what destroys it.

    The cue's pixel parameter is ``base`` at latent 0 and moves by ``per_sd`` per within-class
    SD of the latent (``pixels`` says how); ``destroys`` says whether an augmentation spec
    destroys the cue, in words in ``destroyed_when``.
    """

    name: str
    pixels: str
    base: float
    per_sd: float
    destroyed_when: str
    destroys: Callable[[AugmentSpec], bool]


#: the cues in the order of a cell's latent vector
CUE_ORDER = ("shape", "texture", "stain", "density")

CUES: dict[str, Cue] = {
    "shape": Cue(
        "shape",
        "the nucleus' radius as a share of the cell's, base + per_sd x z (area share about "
        "0.36); survives flips, rotation, zoom, blur and colour changes",
        0.60,
        0.05,
        "never (no augmentation preset changes the nucleus' share of the cell)",
        lambda spec: False,
    ),
    "texture": Cue(
        "texture",
        "the contrast of the nucleus' chromatin grain, about 1 px wide at a 64 px input: "
        "contrast = base x exp(per_sd x z); class-free in the presets, as tiny CNNs from "
        "scratch hardly learn it in 8 epochs",
        0.16,
        0.25,
        "a blur of at least 1 px SD at the model's input (texture-blur)",
        lambda spec: spec.blurs and min(spec.blur) >= 1.0,
    ),
    "stain": Cue(
        "stain",
        "the hue of the whole cell's stain (nucleus and cytoplasm alike, so no part of the "
        "image is a colour reference), rotated by base + per_sd x z of a turn",
        0.0,
        0.025,
        "a hue jitter of at least 0.25 turn, ten times the cue's per-SD shift (stain-jitter)",
        lambda spec: spec.hue >= 0.25,
    ),
    "density": Cue(
        "density",
        "the intensity of the whole cell's stain (every channel, nucleus and cytoplasm, and the "
        "sensor noise with them: black background, so no reference), x exp(base + per_sd x z): "
        "a higher grade stains denser, 7% darker per SD",
        0.0,
        -0.07,
        "a brightness jitter of at least 0.4 (factors 0.6-1.4, a log-SD four times the cue's "
        "per-SD change; brightness-jitter: 0.6)",
        lambda spec: spec.brightness >= 0.4,
    ),
}


@dataclass(frozen=True)
class SynthPreset:
    """One generator preset: the cues' strengths and the subject nuisance.

    A preset with no ``strengths`` is the original ``morphology`` generator (no latent model,
    no known ceiling). ``strengths[cue]`` is ``d``, ``subject_share[cue]`` is ``r`` (see the
    module doc); ``brightness_sd`` and ``scale_sd`` are per-subject log-SDs of a brightness
    factor and of the cells' size, ``cell_scale_sd`` that of each cell's own size: nuisance
    outside the latents (a brightness nuisance would blur the density cue, so it is 0).
    """

    name: str
    description: str
    strengths: dict[str, float] = field(default_factory=dict)
    subject_share: dict[str, float] = field(default_factory=dict)
    brightness_sd: float = 0.0
    scale_sd: float = 0.03
    cell_scale_sd: float = 0.02

    @property
    def latent(self) -> bool:
        """Whether cells are drawn from the latent cue model (else: the morphology renderer)."""
        return bool(self.strengths)

    def vector(self, values: dict[str, float]) -> np.ndarray:
        """``values`` per cue as a vector in :data:`CUE_ORDER` (absent cues: 0)."""
        return np.array([values.get(name, 0.0) for name in CUE_ORDER], dtype=np.float64)


#: name -> preset (``data.synthetic.preset``)
SYNTH_PRESETS: Registry[SynthPreset] = Registry("synthetic preset", key="data.synthetic.preset")

_PRESETS = (
    SynthPreset(
        "morphology",
        "the original generator: subtle morphology (nucleus size and ratio, contour, chromatin, "
        "nucleoli), each about one SD between classes, strong per-subject stain and size; "
        "best achievable score unknown",
    ),
    SynthPreset(
        "complementary",
        "three independent cues: stain hue and stain density strong (density the stronger, as "
        "tiny CNNs read an intensity less well than a hue), shape weak; stain-jitter destroys "
        "the hue, brightness-jitter the density, so members trained with the two see different "
        "evidence and their average beats either",
        strengths={"stain": 1.5, "density": 2.2, "shape": 0.6},
        subject_share={"stain": 0.1, "density": 0.1, "shape": 0.1},
    ),
    SynthPreset(
        "single-cue",
        "one cue (shape) carrying the strength of complementary's three (sqrt of their squares, "
        "so the same ceiling); no augmentation destroys it, so no member knows what another "
        "does not",
        strengths={"shape": math.sqrt(1.5**2 + 2.2**2 + 0.6**2)},
        subject_share={"shape": 0.1},
    ),
)
for _preset in _PRESETS:
    SYNTH_PRESETS.register(_preset.name)(_preset)


def destroyed_by(preset: SynthPreset) -> dict[str, list[str]]:
    """For each cue of ``preset``: the augmentation presets that destroy it."""
    return {
        cue: [name for name in AUGMENTATIONS.names() if CUES[cue].destroys(preset_spec(name))]
        for cue in CUE_ORDER
        if cue in preset.strengths
    }


# ---------------------------------------------------------------------------- the latents


def class_means(preset: SynthPreset, grades: Sequence[float]) -> np.ndarray:
    """[classes, cues]: each class's mean latent, ``d_j * (grade - 1/2)``."""
    return (np.asarray(grades, dtype=np.float64)[:, None] - 0.5) * preset.vector(preset.strengths)


def combine_latents(
    preset: SynthPreset, means: np.ndarray, subject: np.ndarray, cell: np.ndarray
) -> np.ndarray:
    """Latent values from class means and standard-normal subject and cell draws (any shape
    ending in the cue axis): ``mean + sqrt(r) * subject + sqrt(1 - r) * cell``."""
    share = preset.vector(preset.subject_share)
    return means + np.sqrt(share) * subject + np.sqrt(1.0 - share) * cell


# ---------------------------------------------------------------------------- the ceiling


def _posterior(z: np.ndarray, means: np.ndarray, priors: np.ndarray) -> np.ndarray:
    """P(class | one cell's latents): given the class the cues are independent N(mean, 1)."""
    logits = -0.5 * ((z[:, None, :] - means[None]) ** 2).sum(-1) + np.log(priors)[None]
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


def bayes_posterior(
    preset: SynthPreset, grades: Sequence[float], priors: Sequence[float], z: np.ndarray
) -> np.ndarray:
    """[cells, classes]: the Bayes posterior of each row of latent cues ``z`` [cells, cues]."""
    p = np.asarray(priors, dtype=np.float64)
    return _posterior(np.asarray(z, dtype=np.float64), class_means(preset, grades), p / p.sum())


def realised_scores(
    labels: np.ndarray, post: np.ndarray, class_names: Sequence[str]
) -> tuple[float, float | None]:
    """Accuracy and AUC of posteriors ``post`` against ``labels`` (AUC None with one class)."""
    if len(np.unique(labels)) < post.shape[1]:
        return float((post.argmax(axis=1) == labels).mean()), None
    acc, auc = _acc_auc(labels, post, class_names)
    return acc, round(auc, 4)


def _noisy(labels: np.ndarray, eps: float, k: int, rng: np.random.Generator) -> np.ndarray:
    """Each label flipped with probability ``eps`` to one of the other classes, uniformly."""
    flip = rng.random(len(labels)) < eps
    other = (labels + rng.integers(1, k, size=len(labels))) % k if k > 1 else labels
    return np.where(flip, other, labels)


def _acc_auc(
    labels: np.ndarray, post: np.ndarray, class_names: Sequence[str]
) -> tuple[float, float]:
    """Accuracy of the argmax and the AUC as :func:`trainers.metrics.score` defines it (binary:
    of the positive class; more classes: macro one-vs-rest), without the other metrics."""
    from sklearn.metrics import roc_auc_score

    acc = float((post.argmax(axis=1) == labels).mean())
    if post.shape[1] == 2:
        pos = positive_index(class_names, 2)
        return acc, float(roc_auc_score(labels == pos, post[:, pos]))
    scores = ovr_scores(post)
    return acc, float(roc_auc_score(labels, scores, multi_class="ovr", average="macro"))


def _mc_sample(
    preset: SynthPreset,
    grades: Sequence[float],
    priors: np.ndarray,
    cells_per_subject: int,
    n: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(true labels, latents) of ``n`` cells drawn as the generator draws them: subjects of a
    class, each with its own latent shift, ``cells_per_subject`` cells each; and the means."""
    means = class_means(preset, grades)
    n_subjects = math.ceil(n / cells_per_subject)
    subject_class = rng.choice(len(priors), size=n_subjects, p=priors)
    subject_shift = rng.standard_normal((n_subjects, len(CUE_ORDER)))
    which = np.repeat(np.arange(n_subjects), cells_per_subject)[:n]
    cells = rng.standard_normal((n, len(CUE_ORDER)))
    z = combine_latents(preset, means[subject_class[which]], subject_shift[which], cells)
    return subject_class[which], z, means


def bayes_ceiling(
    preset: SynthPreset,
    grades: Sequence[float],
    priors: Sequence[float],
    class_names: Sequence[str],
    label_noise: float = 0.0,
    cells_per_subject: int = 16,
    n: int = 200_000,
    seed: int = 0,
) -> dict:
    """Cell-level accuracy and AUC of the Bayes-optimal classifier of one cell's latent cues.

    ``n`` cells are drawn from the generator's model (classes with probabilities ``priors``,
    per-subject shifts, per-cell draws), labelled with ``label_noise`` flips, and scored with
    the definitions of :func:`trainers.metrics.score` (binary: AUC of the positive class; more
    classes: macro one-vs-rest) against the Bayes posterior, which uses the priors (so accuracy
    is that of the prior-aware decision). Standard errors: binomial for accuracy, over 10 equal
    chunks for the AUC. The random stream is ``numpy.random.default_rng([seed, 7])``.
    """
    rng = np.random.default_rng([seed, 7])
    p = np.asarray(priors, dtype=np.float64) / float(np.sum(priors))
    truth, z, means = _mc_sample(preset, grades, p, cells_per_subject, n, rng)
    labels = _noisy(truth, label_noise, len(p), rng)
    post = _posterior(z, means, p)
    acc, auc = _acc_auc(labels, post, class_names)
    chunks = [_acc_auc(lab, pr, class_names)[1] for lab, pr in
              zip(np.array_split(labels, 10), np.array_split(post, 10), strict=True)]  # fmt: skip
    return {
        "accuracy": round(acc, 5),
        "auc": round(auc, 5),
        "accuracy_se": round(math.sqrt(acc * (1.0 - acc) / n), 5),
        "auc_se": round(float(np.std(chunks, ddof=1) / math.sqrt(len(chunks))), 5),
        "n_monte_carlo": n,
        "seed": [seed, 7],
        "how": (
            "Monte Carlo on the generator's latent model: cells drawn by class (the labelled "
            "images' class shares), per-subject and per-cell latent draws, labels flipped with "
            "the label noise; scored is the Bayes posterior of one cell's latent cue values "
            "(given the class the cues are independent N(d*(grade-1/2), 1), the subject shift "
            "included), argmax for accuracy. An upper bound for any classifier of the images."
        ),
    }


def difficulty_record(preset: SynthPreset) -> dict:
    """The marker's description of ``preset``: each cue's strength, subject share, pixels and
    the augmentation presets that destroy it, and the subject nuisance."""
    destroyers = destroyed_by(preset)
    cues = {
        name: {
            "strength": round(preset.strengths[name], 4),
            "subject_share": preset.subject_share.get(name, 0.0),
            "pixels": CUES[name].pixels,
            "per_sd": CUES[name].per_sd,
            "destroyed_by": destroyers[name],
        }
        for name in CUE_ORDER
        if name in preset.strengths
    }
    return {
        "description": preset.description,
        "cues": cues,
        "subject_nuisance": {
            "brightness_log_sd": preset.brightness_sd,
            "cell_size_log_sd": preset.scale_sd,
            "cell_size_log_sd_per_cell": preset.cell_scale_sd,
        },
    }
