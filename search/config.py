"""The whole run's config: the trial (``trainers.config.TrialConfig``) plus search and ensemble.

A config file is one YAML document. ``wen train`` reads only its trial part; ``wen search``
reads ``search``; ``wen ensemble`` reads ``ensemble``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ensemble.config import EnsembleSettings
from search._locations import StorageError, resolve_storage
from trainers.config import StrictModel, TrialConfig

__all__ = [
    "SEARCH_METRICS",
    "ResourcesConfig",
    "SchedulerConfig",
    "SearchSettings",
    "SpaceSpec",
    "WenConfig",
]

#: Metrics every trial reports each epoch, with the direction that is better.
SEARCH_METRICS: dict[str, Literal["max", "min"]] = {
    "val_wfs": "max",
    "val_acc": "max",
    "val_ba": "max",
    "val_auc": "max",
    "val_kappa": "max",
    "val_f1": "max",
    "val_loss": "min",
    "train_loss": "min",
}


class SpaceSpec(StrictModel):
    """One search dimension over a dotted config key.

    ``choice``/``grid`` take ``values``; ``uniform``/``loguniform`` take ``low``/``high``;
    ``randint`` takes integer ``low``/``high`` (high exclusive, as Tune's).
    """

    type: Literal["choice", "grid", "uniform", "loguniform", "randint"]
    values: list[Any] | None = None
    low: float | None = None
    high: float | None = None

    @model_validator(mode="after")
    def _shape(self) -> SpaceSpec:
        if self.type in ("choice", "grid"):
            if not self.values:
                raise ValueError(f"a {self.type} dimension needs a non-empty `values` list")
        else:
            if self.low is None or self.high is None:
                raise ValueError(f"a {self.type} dimension needs `low` and `high`")
            if self.low >= self.high:
                raise ValueError(f"`low < high` must hold, got low={self.low}, high={self.high}")
            if self.type == "loguniform" and self.low <= 0:
                raise ValueError(f"loguniform needs `low > 0`, got low={self.low}")
            if self.type == "randint" and not (
                float(self.low).is_integer() and float(self.high).is_integer()
            ):
                raise ValueError(
                    f"randint needs whole-number bounds, got low={self.low}, high={self.high}"
                )
        if self.type in ("choice", "grid") and (self.low is not None or self.high is not None):
            raise ValueError(f"a {self.type} dimension takes `values`, not `low`/`high`")
        if self.type not in ("choice", "grid") and self.values is not None:
            raise ValueError(f"a {self.type} dimension takes `low`/`high`, not `values`")
        return self


class SchedulerConfig(StrictModel):
    """Trial scheduler (early stopping).

    Times are counted in learning-rate cycles: one cycle is ``2 x schedule.half_cycle_epochs``
    epochs when ``schedule.name == cyclic`` and one epoch otherwise, so a cyclic trial is only
    ever judged at the trough of its learning rate, never at a peak.
    """

    name: Literal["fifo", "asha", "asha_promotion", "hyperband", "pbt"] = Field(
        "fifo",
        description="fifo: run every trial to the end; asha: asynchronous successive halving "
        "(a trial reaching a rung stops unless it is in the top 1/reduction_factor so far); "
        "asha_promotion: its promotion variant (a trial pauses at a rung and goes on only once "
        "it is in the top 1/reduction_factor of enough rivals: prunes with few trials at a "
        "time); hyperband: synchronous HyperBand; pbt: population based training.",
    )
    grace_cycles: int = Field(
        1,
        ge=1,
        description="ASHA (both variants): first rung after this many learning-rate cycles.",
    )
    reduction_factor: float = Field(
        2.0, gt=1.0, description="ASHA/HyperBand: keep 1/reduction_factor of trials per rung."
    )
    perturbation_interval: int = Field(
        1, ge=1, description="PBT: learning-rate cycles between perturbations."
    )
    quantile_fraction: float = Field(
        0.25, gt=0.0, le=0.5, description="PBT: bottom share that copies the top share."
    )


class ResourcesConfig(StrictModel):
    """Resources one trial asks Ray for."""

    cpus: float = Field(1.0, gt=0.0, description="CPUs per trial.")
    gpus: float = Field(
        0.0,
        ge=0.0,
        description="GPUs per trial, at most 1 (a trial trains on one GPU); fractions share a GPU.",
    )
    memory_gb: float | None = Field(None, gt=0.0, description="Memory per trial (GiB).")

    @model_validator(mode="after")
    def _one_gpu_at_most(self) -> ResourcesConfig:
        # the trainer runs on one device (cuda:0 of the GPUs Ray gives it): no data parallel
        if self.gpus > 1:
            raise ValueError(
                f"`gpus <= 1` must hold, got gpus={self.gpus:g}: a trial trains on one GPU "
                "(no data-parallel training), so more would sit idle; use gpus: 1, or a "
                "fraction below 1 (e.g. 0.25) to share one GPU between trials"
            )
        return self


class SearchSettings(StrictModel):
    """How ``wen search`` explores the space."""

    space: dict[str, SpaceSpec] = Field(
        default_factory=dict, description="Dotted config key -> dimension."
    )
    folds: list[int] | None = Field(
        None, description="Train each configuration on each of these folds (out-of-fold preds)."
    )
    algorithm: Literal["random", "grid", "optuna"] = Field("random", description="Searcher.")
    num_samples: int = Field(1, ge=1, description="Samples (grid: repeats of the grid).")
    max_concurrent: int | None = Field(None, ge=1, description="Concurrency limit.")
    metric: str = Field("val_wfs", description="Reported metric the search optimises.")
    mode: Literal["max", "min"] = Field("max", description="Maximise or minimise it.")
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    max_failures: int = Field(2, ge=0, description="Retries of a failed trial from its checkpoint.")
    storage: str = Field(
        "runs",
        validate_default=True,
        description="Local path or URI (s3://, gs://) of run folders; a relative path is "
        "relative to the folder wen runs in (refused inside a `ray job submit` job, whose "
        "working folder is a temporary copy).",
    )
    seed: int = Field(0, ge=0, description="Searcher seed.")
    checkpoints_to_keep: int = Field(
        2,
        ge=1,
        description="Checkpoints Tune keeps per trial in the run's storage when they hold the "
        "weights (remote storage, PBT); with local storage Tune's checkpoints only name the "
        "trainer's (train.keep_checkpoints) and all are kept.",
    )
    dashboard_port: int = Field(
        8265, ge=1024, le=65535, description="Ray dashboard port on 127.0.0.1 (next free if taken)."
    )
    tensorboard: bool = Field(True, description="Write TensorBoard logs of every trial.")
    report_every_s: float = Field(
        30.0, gt=0.0, description="Seconds between rows of the live table on the terminal."
    )

    @field_validator("storage")
    @classmethod
    def _absolute_storage(cls, value: str) -> str:
        try:
            return resolve_storage(value, "search.storage")
        except StorageError:
            # inside a Ray job: kept as typed, so that --storage can still replace it; a
            # search that uses it is refused when it opens the run folder
            return value

    @model_validator(mode="after")
    def _metric_and_folds(self) -> SearchSettings:
        if self.metric not in SEARCH_METRICS:
            raise ValueError(
                f"unknown metric {self.metric!r} in search.metric; valid metrics: "
                f"{', '.join(SEARCH_METRICS)}"
            )
        wanted = SEARCH_METRICS[self.metric]
        if self.mode != wanted:
            raise ValueError(
                f"search.metric={self.metric} is {'maximised' if wanted == 'max' else 'minimised'}"
                f", got search.mode={self.mode}: set search.mode={wanted}"
            )
        if self.folds is not None:
            if not self.folds:
                raise ValueError("search.folds needs at least one fold, got []: list folds or null")
            if len(set(self.folds)) != len(self.folds) or min(self.folds) < 0:
                raise ValueError(
                    f"search.folds must be distinct and >= 0, got {self.folds}: fix the list"
                )
            if "data.split.fold" in self.space:
                raise ValueError(
                    "search.space.data.split.fold and search.folds both set the fold: "
                    "keep search.folds and remove the space entry"
                )
        if self.algorithm == "optuna":
            grids = [k for k, spec in self.space.items() if spec.type == "grid"]
            if grids:
                raise ValueError(
                    f"grid dimensions {grids} in search.space need search.algorithm grid or "
                    "random (Optuna samples): use type choice, or another algorithm"
                )
        return self


class WenConfig(TrialConfig):
    """A whole run: the trial, the search over it and the ensemble stage.

    The rules that span sections (space keys exist, scheduler times fall on whole
    learning-rate cycles, every searched value builds a valid trial) need the search stage's
    modules, so they live in ``search.checks``: load a whole-run config with
    ``search.checks.load_wen_config``, which runs them; this module stays a leaf.
    """

    search: SearchSettings = Field(default_factory=SearchSettings)
    ensemble: EnsembleSettings = Field(default_factory=EnsembleSettings)
