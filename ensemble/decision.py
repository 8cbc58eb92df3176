"""What the exported model decides: its probabilities recalibrated, and its operating point.

After the method is chosen, two things are fitted for it on validation, both on its
*cross-fitted* probabilities (each validation cell predicted by the method fitted without its
fold), and judged on test only:

1. **Temperature scaling** (``ensemble.temperature_scaling``, Guo et al. 2017): one temperature
   T that minimises the log loss of ``softmax(log p / T)``. ``RUN/ensemble/calibration.csv``
   holds the test ECE and Brier score before and after, with 95% subject-bootstrap intervals;
   the exported graph applies T.
2. **The operating point** (binary, ``ensemble.operating_point``): argmax, Youden or a target
   sensitivity, on the recalibrated probabilities (``ensemble.operating``), so the threshold
   the export applies is on the probabilities the export outputs.

``chosen.json`` records both (``temperature``, ``operating_point``, ``threshold``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ensemble._metrics import binary_labels
from ensemble.calibration import (
    apply_temperature,
    calibration_target,
    brier_score,
    expected_calibration_error,
    fit_temperature,
    weighted_ece,
)
from ensemble.config import EnsembleSettings
from ensemble.operating import RATES, operating_point_table
from ensemble.protocol import ProtocolResult
from ensemble.stats import _setup, interval
from trainers._atomic import atomic_write_text
from trainers.metrics import positive_index
from trainers.run_layout import RUN_LAYOUT

__all__ = ["calibration_table", "finalise_chosen"]


def finalise_chosen(
    run_dir: Path,
    protocol: ProtocolResult,
    val: Any,
    test: Any,
    settings: EnsembleSettings,
    class_names: Sequence[str],
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Fit the chosen method's temperature and operating point; write their tables; return
    what chosen.json gains (``temperature``, ``operating_point``, ``threshold``)."""
    r = protocol.results[protocol.chosen]
    pos = positive_index(class_names, len(class_names))
    cf, test_probs, out = r.crossfit_probs, r.test_probs, {"temperature": None}
    if settings.temperature_scaling:
        t = fit_temperature(val.y, cf)
        out["temperature"] = t
        say(f"temperature scaling of {protocol.chosen}: T = {t:.3f} (fitted on held-out val)")
        if test is not None:
            table = calibration_table(test.y, test_probs, t, test.subject_ids, pos, settings)
            atomic_write_text(run_dir / RUN_LAYOUT.calibration, table.to_csv(index=False))
        cf = apply_temperature(cf, t)
        test_probs = apply_temperature(test_probs, t) if test_probs is not None else None
    if len(class_names) == 2 and test is not None:
        points = operating_point_table(
            protocol.chosen,
            (binary_labels(val.y, pos), cf[:, pos]),
            (binary_labels(test.y, pos), test_probs[:, pos], test.subject_ids),
            settings.target_sensitivity,
            settings.operating_point,
            n_boot=settings.bootstrap,
            seed=settings.seed,
        )
        atomic_write_text(run_dir / RUN_LAYOUT.operating_points, points.to_csv(index=False))
        out["operating_point"] = _operating_point(points, settings, out["temperature"])
        if settings.operating_point != "argmax":
            out["threshold"] = out["operating_point"]["threshold"]
    return out


def calibration_table(
    y: np.ndarray,
    probs: np.ndarray,
    temperature: float,
    subjects: Sequence[Any],
    pos: int,
    settings: EnsembleSettings,
) -> pd.DataFrame:
    """Test ECE and Brier score before and after temperature scaling, with 95% subject-
    bootstrap intervals (the same resamples for both)."""
    codes, counts, by_subject = _setup(
        np.asarray(y), subjects, probs.shape[1], settings.bootstrap, settings.seed, True
    )
    weights = counts[:, codes]  # [resamples, cells]: how often each cell is drawn
    known = np.asarray(y) >= 0
    rows = []
    for stage, p in (("before", probs), ("after", apply_temperature(probs, temperature))):
        target, score = calibration_target(np.asarray(y)[known], p[known], pos)
        w = weights[:, known]
        row = {
            "stage": stage,
            "temperature": temperature if stage == "after" else 1.0,
            "ece": expected_calibration_error(y, p, 10, pos),
            "brier": brier_score(y, p, pos),
        }
        row["ece_low"], row["ece_high"] = interval(weighted_ece(target, score, w, 10))
        brier = _brier_cells(np.asarray(y)[known], p[known], pos)
        row["brier_low"], row["brier_high"] = interval((w @ brier) / w.sum(axis=1))
        unit = "subject" if by_subject else "cell (no subject ids)"
        row["how"] = (f"on test; T fitted on the held-out (cross-fitted) validation probabilities; "
                      f"95% {unit} bootstrap n={settings.bootstrap}")  # fmt: skip
        rows.append(row)
    return pd.DataFrame(rows)


def _brier_cells(y: np.ndarray, p: np.ndarray, pos: int) -> np.ndarray:
    """Each cell's Brier term, as ``brier_score`` sums them (positive class when binary)."""
    if p.shape[1] == 2:
        return (p[:, pos] - (y == pos)) ** 2
    onehot = np.eye(p.shape[1])[y]
    return ((p - onehot) ** 2).sum(axis=1)


def _operating_point(
    points: pd.DataFrame, settings: EnsembleSettings, temperature: float | None
) -> dict[str, Any]:
    """chosen.json's operating point: the configured rule's threshold and its test rates."""
    row = points[points["rule"] == settings.operating_point].iloc[0]
    out = {
        "rule": settings.operating_point,
        "how": row["how"],
        "threshold": float(row["threshold"]),
        "threshold_fitted_on": row["threshold_fitted_on"]
        + ("" if temperature is None else f", after temperature scaling (T = {temperature:.3f})"),
        "target_sensitivity": settings.target_sensitivity,
    }
    for rate in RATES:
        out[f"test_{rate}"] = [
            float(row[rate]),
            float(row[f"{rate}_low"]),
            float(row[f"{rate}_high"]),
        ]
    return out
