"""The operating point of a binary ensemble: a decision threshold chosen on validation.

Three rules, each applied to the chosen method's *cross-fitted* validation probabilities (each
validation cell predicted by the method fitted without its fold, so the threshold is chosen on
probabilities that behave like unseen data's):

* ``argmax``: the class with the higher probability (threshold 0.5);
* ``youden``: the threshold that maximises Youden's J = sensitivity + specificity - 1
  (Youden 1950), i.e. balanced accuracy (``ensemble.protocol.tune_threshold`` by ``ba``);
* ``sensitivity``: the highest threshold whose validation sensitivity reaches the target
  (default 0.95), the usual screening choice.

On test, each rule's sensitivity, specificity, PPV and NPV come with 95% subject-bootstrap
intervals (the resampling of ``ensemble.stats``), in ``RUN/ensemble/operating_points.csv``.
The configured rule (``ensemble.operating_point``) is the one the export and ``wen predict``
apply.

>>> y = np.array([0, 0, 1, 1]); p = np.array([0.1, 0.6, 0.4, 0.9])
>>> threshold_for("sensitivity", y, p, target_sensitivity=1.0)
0.4
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ensemble.protocol import tune_threshold
from ensemble.stats import _setup, interval

__all__ = ["RULES", "operating_point_table", "rule_text", "threshold_for"]

RULES = ("argmax", "youden", "sensitivity")
RATES = ("sensitivity", "specificity", "ppv", "npv")


def threshold_for(
    rule: str, y: np.ndarray, p_pos: np.ndarray, target_sensitivity: float = 0.95
) -> float:
    """The decision threshold on the positive class's probability that ``rule`` picks on
    (``y``, ``p_pos``); cells with ``p_pos >= threshold`` are called positive. ``y``: 1
    positive, 0 negative, -1 unknown (left out)."""
    known = y >= 0
    y, p_pos = y[known], p_pos[known]
    if rule == "argmax":
        return 0.5
    if rule == "youden":
        probs = np.stack([1.0 - p_pos, p_pos], axis=1)
        return tune_threshold(y, probs, "ba", ["negative", "positive"])
    if rule == "sensitivity":
        if not 0.0 < target_sensitivity <= 1.0:
            raise ValueError(
                f"ensemble.target_sensitivity must be in (0, 1], got {target_sensitivity}"
            )
        positives = np.sort(p_pos[y == 1])[::-1]
        if positives.size == 0:
            raise ValueError("the sensitivity rule needs positive cells in the validation set")
        k = math.ceil(target_sensitivity * positives.size - 1e-9)
        return float(positives[max(k, 1) - 1])
    raise ValueError(f"ensemble.operating_point must be one of {list(RULES)}, got {rule!r}")


def rule_text(rule: str, target_sensitivity: float) -> str:
    """How a rule chooses its threshold, in words."""
    return {
        "argmax": "argmax (threshold 0.5)",
        "youden": "Youden's J (sensitivity + specificity - 1) maximised on validation",
        "sensitivity": f"the highest threshold with validation sensitivity >= "
        f"{target_sensitivity:g}",
    }[rule]


def _subject_counts(
    y: np.ndarray, called: np.ndarray, codes: np.ndarray, n_groups: int
) -> np.ndarray:
    """Per subject: [tp, fn, tn, fp] of the labelled cells."""
    out = np.zeros((n_groups, 4))
    known = y >= 0
    for j, mask in enumerate(
        ((y == 1) & called, (y == 1) & ~called, (y == 0) & ~called, (y == 0) & called)
    ):
        np.add.at(out[:, j], codes[mask & known], 1.0)
    return out


def _rates(totals: np.ndarray) -> dict[str, np.ndarray]:
    """Sensitivity, specificity, PPV, NPV from [.., 4] totals (NaN where undefined)."""
    tp, fn, tn, fp = (totals[..., j] for j in range(4))
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "sensitivity": tp / (tp + fn),
            "specificity": tn / (tn + fp),
            "ppv": tp / (tp + fp),
            "npv": tn / (tn + fn),
        }


def operating_point_table(
    method: str,
    val: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray, Sequence[Any]],
    target_sensitivity: float,
    chosen_rule: str,
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per rule: the threshold chosen on ``val`` = (y, p_pos) and, on ``test`` =
    (y, p_pos, subject ids), sensitivity, specificity, PPV and NPV with 95% intervals."""
    y_val, p_val = val
    y_test, p_test, subjects = test
    codes, counts, by_subject = _setup(np.asarray(y_test), subjects, 2, n_boot, seed, stratify=True)
    n_groups = counts.shape[1]
    rows = []
    for rule in RULES:
        t = threshold_for(rule, y_val, p_val, target_sensitivity)
        per_subject = _subject_counts(y_test, p_test >= t, codes, n_groups)
        point = _rates(per_subject.sum(axis=0))
        boot = _rates(counts @ per_subject)
        row: dict[str, Any] = {
            "method": method, "rule": rule, "how": rule_text(rule, target_sensitivity),
            "threshold": t, "chosen": rule == chosen_rule,
            "threshold_fitted_on": "val_crossfit (held-out validation probabilities)",
        }  # fmt: skip
        for name in RATES:
            row[name] = float(point[name])
            row[f"{name}_low"], row[f"{name}_high"] = interval(boot[name])
        unit = "subject" if by_subject else "cell (no subject ids)"
        row["intervals"] = f"95% {unit} bootstrap n={n_boot}, stratified by class, on test"
        rows.append(row)
    return pd.DataFrame(rows)
