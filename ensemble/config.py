"""Settings of the ensemble stage (the ``ensemble:`` section of a config file)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from trainers.config import StrictModel

__all__ = ["EnsembleSettings"]


class EnsembleSettings(StrictModel):
    """How ``wen ensemble`` picks members, fits weights and judges them."""

    candidates: str = Field(
        "best-per-backbone", description="best-per-backbone, top-K (e.g. top-5) or trial ids a,b,c."
    )
    methods: list[str] | None = Field(None, description="Methods to compare (default: all).")
    objective: Literal["logloss", "wfs", "ba"] = Field(
        "logloss", description="What searched weights optimise on validation predictions."
    )
    n_trials: int = Field(200, ge=1, description="Optuna trials for searched weights.")
    sampler: Literal["tpe", "cmaes"] = Field("tpe", description="Optuna sampler.")
    seed: int = Field(0, ge=0, description="Seed of samplers and the bootstrap.")
    bootstrap: int = Field(1000, ge=10, description="Subject-bootstrap resamples for intervals.")
    crossfit_folds: int = Field(5, ge=2, description="Grouped folds that estimate overfitting.")
    select_by: Literal["wfs", "ba", "auc", "acc", "kappa", "logloss"] = Field(
        "wfs", description="Validation metric that chooses the method to export."
    )
