"""Settings of the ensemble stage (the ``ensemble:`` section of a config file)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from trainers.config import StrictModel

__all__ = ["EnsembleSettings"]


class EnsembleSettings(StrictModel):
    """How ``wen ensemble`` picks members, fits weights and judges them."""

    candidates: str = Field(
        "best-per-backbone",
        description=(
            "best-per-backbone, top-K (e.g. top-5) or trial ids a,b,c; with the prefix "
            "`snapshots:` the same rules draw from every trial's LR-trough snapshots too "
            "(snapshots:top-10), and snapshots:of-best takes the best trial's snapshots."
        ),
    )
    methods: list[str] | None = Field(None, description="Methods to compare (default: all).")
    objective: Literal["logloss", "wfs", "ba"] = Field(
        "logloss", description="What searched weights optimise on validation predictions."
    )
    n_trials: int = Field(200, ge=1, description="Optuna trials for searched weights.")
    sampler: Literal["tpe", "cmaes", "random"] = Field(
        "tpe", description="Optuna sampler for searched weights."
    )
    seed: int = Field(0, ge=0, description="Seed of samplers and the bootstrap.")
    bootstrap: int = Field(1000, ge=10, description="Subject-bootstrap resamples for intervals.")
    permutations: int = Field(
        2000, ge=100, description="Subject permutations of the paired WFS and BA tests."
    )
    crossfit_folds: int = Field(5, ge=2, description="Grouped folds that estimate overfitting.")
    select_by: Literal["wfs", "ba", "auc", "acc", "kappa", "logloss"] = Field(
        "wfs", description="Validation metric that chooses the method to export."
    )
    tune_threshold: bool = Field(
        False,
        description="Binary only: tune the decision threshold of each method on validation "
        "predictions (by select_by; ba when select_by does not depend on it) instead of argmax.",
    )
    operating_point: Literal["argmax", "youden", "sensitivity"] = Field(
        "argmax",
        description="Binary only: the decision rule the export and `wen predict` apply, its "
        "threshold chosen on the chosen method's held-out validation probabilities: argmax, "
        "youden (Youden's J) or sensitivity (the highest threshold reaching "
        "target_sensitivity). Overrides tune_threshold for the export.",
    )
    target_sensitivity: float = Field(
        0.95, gt=0.0, le=1.0, description="Validation sensitivity the `sensitivity` rule reaches."
    )
    temperature_scaling: bool = Field(
        True,
        description="Fit a temperature to the chosen method's held-out validation probabilities "
        "(log loss); the export applies it and calibration.csv shows test ECE/Brier before "
        "and after.",
    )
    greedy_rounds: int = Field(50, ge=1, description="Rounds of greedy forward selection.")
    search_max_members: int = Field(
        12,
        ge=1,
        description=(
            "Searched weights (optuna) run over at most this many candidates: the best by "
            "their own validation objective on the fitting data (the others weigh 0; the "
            "report's notes say so). Snapshots can give hundreds of candidates."
        ),
    )
    stacking_C: float = Field(
        1.0, gt=0.0, description="Inverse L2 strength of the logistic-regression stacker."
    )
    skip_bad_files: bool = Field(
        False,
        description="Skip (and report) bad or misaligned prediction files instead of failing.",
    )

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, value: list[str] | None) -> list[str] | None:
        """An unknown method name fails when the config loads, before any search or trial."""
        if value is None:
            return value
        from ensemble.methods import METHODS  # lazy: the registry imports numpy/scipy

        unknown = [name for name in value if name not in METHODS]
        if unknown:
            raise ValueError(
                f"unknown ensemble method(s) {unknown}; valid names: {', '.join(METHODS.names())}"
                ": fix the name or remove it"
            )
        return value
