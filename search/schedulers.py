"""Trial schedulers (FIFO, ASHA, HyperBand, PBT) whose decisions fall on whole LR cycles.

A cyclic learning rate (``schedule.name == cyclic``) rises for ``half_cycle_epochs`` and
falls for as long again; a trial judged mid-cycle is judged at a high learning rate, when
its validation score is at its noisiest. So every scheduler here counts time in whole
cycles (``2 x half_cycle_epochs`` epochs; one epoch for other schedules):

- ASHA (``time_attr="epoch"``): grace period = ``grace_cycles`` cycles and an integer
  reduction factor, so every rung ``grace x rf^k`` is a whole number of cycles; the same
  rungs for its promotion variant (``asha_promotion``, :mod:`search._promotion`), which
  pauses a trial at a rung until it beats enough rivals;
- HyperBand and PBT: ``time_attr="lr_cycles"`` (completed cycles, reported by the trainable),
  so their budgets and perturbation points are whole cycles by construction.

>>> asha_rungs(epochs=48, grace_epochs=12, reduction_factor=2)
[12, 24, 48]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from search.space import build_param_space
from trainers._registry import Registry
from trainers.optim import cycle_epochs

if TYPE_CHECKING:
    from ray.tune.schedulers import TrialScheduler

    from search.config import SearchSettings, WenConfig

__all__ = [
    "PBT_MUTABLE_KEYS",
    "SCHEDULERS",
    "SCHEDULER_TRAITS",
    "SchedulerTraits",
    "asha_rungs",
    "rung_epochs",
    "create_scheduler",
    "cycle_epochs",
    "grace_epochs",
    "scheduler_problems",
]

SchedulerFactory = Callable[["WenConfig"], "TrialScheduler"]
SCHEDULERS: Registry[SchedulerFactory] = Registry("scheduler", key="search.scheduler.name")


@dataclass(frozen=True)
class SchedulerTraits:
    """What a scheduler does to trials, read by the config rules, the CLI and the live view."""

    #: judges trials at ASHA's rungs (``grace x rf^k`` epochs)
    asha_rungs: bool = False
    #: stops single trials early (so a configuration's folds could end unequal)
    stops_trials: bool = False
    #: pauses trials and resumes them later from a checkpoint at the decision point
    pauses: bool = False
    #: starts a trial from another trial's checkpoint (which that trial goes on pruning)
    copies_checkpoints: bool = False

    @property
    def uncapped(self) -> bool:
        """Paused at ASHA's rungs until rivals arrive: Tune's searcher cap
        (``search.max_concurrent``) would count the paused trials and starve the search."""
        return self.asha_rungs and self.pauses


SCHEDULER_TRAITS: dict[str, SchedulerTraits] = {
    "fifo": SchedulerTraits(),
    "asha": SchedulerTraits(asha_rungs=True, stops_trials=True),
    "asha_promotion": SchedulerTraits(asha_rungs=True, stops_trials=True, pauses=True),
    "hyperband": SchedulerTraits(stops_trials=True, pauses=True),
    "pbt": SchedulerTraits(pauses=True, copies_checkpoints=True),
}

#: Keys PBT may change in a running trial. PBT copies weights, optimizer and LR-schedule state
#: from a better trial, so only keys read afresh when a trial resumes from a checkpoint can
#: change: the dropout rate (a module argument, not a weight), the loss and the augmentation.
#: The learning rate and optimizer settings are restored from the copied state and would be
#: silently ignored.
PBT_MUTABLE_KEYS = ("model.dropout", "loss.label_smoothing", "data.augmentation")


def grace_epochs(config: WenConfig) -> float:
    """ASHA's grace period in epochs: ``grace_cycles`` whole cycles."""
    return config.search.scheduler.grace_cycles * cycle_epochs(config.schedule)


def asha_rungs(epochs: int, grace_epochs: int, reduction_factor: float) -> list[int | float]:
    """The epochs at which ASHA (one bracket) judges a trial, ascending.

    The same formula as ``ray.tune.schedulers.async_hyperband._Bracket`` (checked against it
    in the tests): rungs ``grace x rf^k`` for as many k as fit below ``epochs``.
    """
    count = int(math.log(epochs / grace_epochs) / math.log(reduction_factor) + 1)
    return [grace_epochs * reduction_factor**k for k in range(count)]


def rung_epochs(config: WenConfig) -> list[float]:
    """The epochs at which the configured scheduler judges trials: ASHA's rungs, else none."""
    sched = config.search.scheduler
    if not SCHEDULER_TRAITS[sched.name].asha_rungs:
        return []
    grace = int(round(grace_epochs(config)))
    return [float(r) for r in asha_rungs(config.train.epochs, grace, sched.reduction_factor)]


def _is_whole(x: float) -> bool:
    return abs(x - round(x)) < 1e-9


def scheduler_problems(config: WenConfig) -> list[str]:
    """Rules that keep a scheduler's decisions on whole LR cycles; one problem per broken rule."""
    sched = config.search.scheduler
    epochs = config.train.epochs
    cycle = cycle_epochs(config.schedule)
    cyclic = config.schedule.name == "cyclic"
    traits = SCHEDULER_TRAITS[sched.name]
    problems: list[str] = []
    if traits.asha_rungs:
        grace = grace_epochs(config)
        if not _is_whole(grace):
            problems.append(
                f"ASHA's grace period (search.scheduler.grace_cycles={sched.grace_cycles} x "
                f"{cycle:g}-epoch cycle = {grace:g} epochs) must be a whole number of epochs: "
                "raise grace_cycles or make 2 x schedule.half_cycle_epochs whole"
            )
        if cyclic and not _is_whole(sched.reduction_factor):
            problems.append(
                "ASHA's rungs must fall on whole LR cycles, so with schedule.name=cyclic "
                "search.scheduler.reduction_factor must be a whole number, got "
                f"{sched.reduction_factor}: use 2, 3 or 4"
            )
        if grace > epochs:
            problems.append(
                f"ASHA's first rung ({grace:g} epochs = {sched.grace_cycles} LR cycle(s)) is "
                f"after the last epoch (train.epochs={epochs}): raise train.epochs, lower "
                "search.scheduler.grace_cycles or schedule.half_cycle_epochs"
            )
    if traits.uncapped:
        problems += _paused_rung_problems(config, grace)
    if sched.name in ("hyperband", "pbt"):
        if not _is_whole(cycle):
            problems.append(
                f"{sched.name} counts whole LR cycles, so 2 x schedule.half_cycle_epochs must be a "
                f"whole number of epochs, got {cycle:g}: change schedule.half_cycle_epochs"
            )
        elif epochs < cycle:
            problems.append(
                f"train.epochs={epochs} is shorter than one LR cycle ({cycle:g} epochs): "
                "raise train.epochs or lower schedule.half_cycle_epochs"
            )
        if _is_whole(cycle):
            problems += _checkpoint_problems(
                config, cycle, f"{sched.name} pauses or copies trials at whole LR cycles"
            )
    folds = config.search.folds or []
    if traits.stops_trials and len(folds) > 1:
        problems.append(
            f"search.scheduler.name={sched.name} stops trials one by one, but with search.folds="
            f"{list(folds)} each configuration is one trial per fold, and the ensemble needs "
            "every fold of a configuration (its out-of-fold predictions): a fold stopped alone "
            "leaves its configuration incomplete. Use search.scheduler.name=fifo with folds, or "
            "search one fold (search.folds=null, data.split.fold) with early stopping"
        )
    if sched.name == "pbt":
        problems += _pbt_problems(config.search)
    return problems


def _checkpoint_problems(config: WenConfig, epochs: float, what: str) -> list[str]:
    """A scheduler that pauses or copies trials every ``epochs`` epochs needs a checkpoint
    there: ``train.checkpoint_every`` must divide it."""
    every = config.train.checkpoint_every
    if int(round(epochs)) % every == 0:
        return []
    return [
        f"{what} ({epochs:g} epochs), which needs a checkpoint there: "
        f"train.checkpoint_every={every} must divide {epochs:g}; set train.checkpoint_every=1"
    ]


def _paused_rung_problems(config: WenConfig, grace: float) -> list[str]:
    """asha_promotion pauses trials at its rungs: a checkpoint there, no searcher cap."""
    problems: list[str] = []
    if _is_whole(grace):
        problems += _checkpoint_problems(
            config, grace, "asha_promotion pauses trials at its rungs (grace x rf^k)"
        )
    if config.search.max_concurrent:
        problems.append(
            f"search.max_concurrent={config.search.max_concurrent} cannot hold with "
            "search.scheduler.name=asha_promotion: Tune's searchers count paused trials as "
            "running, so the cap would stop new trials while the paused ones wait for rivals. "
            "Unset search.max_concurrent (search.max_concurrent=null); the CPUs and GPUs each "
            "trial asks for (search.resources) bound how many run at once"
        )
    return problems


def _pbt_problems(settings: SearchSettings) -> list[str]:
    problems: list[str] = []
    fixed = [k for k in settings.space if k not in PBT_MUTABLE_KEYS]
    if fixed:
        problems.append(
            f"PBT copies weights and optimizer state between trials, so it can only search "
            f"keys read afresh on resume ({', '.join(PBT_MUTABLE_KEYS)}); got {fixed}: use "
            "search.scheduler.name=asha for these keys"
        )
    if not settings.space:
        problems.append(
            f"PBT needs at least one searched key to perturb ({', '.join(PBT_MUTABLE_KEYS)}): "
            "add one to search.space or use another scheduler"
        )
    if settings.folds:
        problems.append(
            "PBT copies weights between trials; across folds that leaks one fold's validation "
            "images into another fold's model: drop search.folds or use asha"
        )
    return problems


def _metric(config: WenConfig) -> dict[str, Any]:
    return {"metric": config.search.metric, "mode": config.search.mode}


@SCHEDULERS.register("fifo")
def _fifo(config: WenConfig) -> TrialScheduler:
    from ray.tune.schedulers import FIFOScheduler

    return FIFOScheduler()


@SCHEDULERS.register("asha")
def _asha(config: WenConfig) -> TrialScheduler:
    from ray.tune.schedulers import ASHAScheduler

    sched = config.search.scheduler
    return ASHAScheduler(
        time_attr="epoch",
        max_t=config.train.epochs,
        grace_period=int(round(grace_epochs(config))),
        reduction_factor=sched.reduction_factor,
        brackets=1,
        **_metric(config),
    )


@SCHEDULERS.register("asha_promotion")
def _asha_promotion(config: WenConfig) -> TrialScheduler:
    from search._promotion import PromotionASHA

    return PromotionASHA(
        time_attr="epoch",
        rungs=[r for r in rung_epochs(config) if r < config.train.epochs],
        reduction_factor=config.search.scheduler.reduction_factor,
        # ties on a coarse score at an early rung are ordered by the validation loss
        tie_metric=None if config.search.metric == "val_loss" else "val_loss",
        **_metric(config),
    )


@SCHEDULERS.register("hyperband")
def _hyperband(config: WenConfig) -> TrialScheduler:
    from ray.tune.schedulers import HyperBandScheduler

    cycles = int(config.train.epochs // cycle_epochs(config.schedule))
    return HyperBandScheduler(
        time_attr="lr_cycles",
        max_t=cycles,
        reduction_factor=config.search.scheduler.reduction_factor,
        **_metric(config),
    )


@SCHEDULERS.register("pbt")
def _pbt(config: WenConfig) -> TrialScheduler:
    from ray.tune.schedulers import PopulationBasedTraining

    sched = config.search.scheduler
    space = build_param_space(config.search)
    mutations = {k: (v["grid_search"] if isinstance(v, dict) else v) for k, v in space.items()}
    return PopulationBasedTraining(
        time_attr="lr_cycles",
        perturbation_interval=sched.perturbation_interval,
        hyperparam_mutations=mutations,
        quantile_fraction=sched.quantile_fraction,
        **_metric(config),
    )


def create_scheduler(config: WenConfig) -> TrialScheduler:
    """The Tune trial scheduler named by ``search.scheduler.name``."""
    return SCHEDULERS.get(config.search.scheduler.name)(config)
