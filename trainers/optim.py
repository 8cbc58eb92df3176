"""Optimizers and learning-rate schedules, each a registry entry chosen by name.

An optimizer family is data (:class:`OptimInfo`: class + the keyword arguments it takes);
:func:`optimizer_kwargs` is the one adapter from config to :func:`create_optimizer_by_name`.

Schedulers are stepped once per batch, so every schedule is expressed in optimizer steps.

>>> import torch
>>> from trainers.config import OptimizerConfig, ScheduleConfig
>>> params = [torch.nn.Parameter(torch.zeros(1))]
>>> opt = create_optimizer(params, OptimizerConfig(name="adamax"))
>>> sched = create_scheduler(opt, ScheduleConfig(name="cyclic"), iters_per_epoch=10, epochs=2)
>>> type(opt).__name__, type(sched).__name__
('Adamax', 'CyclicLR')
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from trainers._registry import Registry
from trainers.config import OptimizerConfig, ScheduleConfig

__all__ = [
    "ADAM_FAMILY",
    "OPTIMIZERS",
    "SCHEDULES",
    "OptimInfo",
    "ScheduleInfo",
    "create_optimizer",
    "cycle_epochs",
    "cycle_of",
    "trough_epochs",
    "create_optimizer_by_name",
    "create_scheduler",
    "current_lr",
    "optimizer_kwargs",
]

Params = Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]]


@dataclass(frozen=True)
class OptimInfo:
    """One optimizer family as data (timm's ``OptimInfo``): its class and the keyword
    arguments it takes, each named as the :class:`~trainers.config.OptimizerConfig` field."""

    name: str
    cls: type[Optimizer]
    kwargs: tuple[str, ...]
    #: The first moment plays the role of momentum (``betas``, not ``momentum``).
    adam_family: bool = False


_ADAM_KWARGS = ("lr", "betas", "eps", "weight_decay")

OPTIMIZERS: Registry[OptimInfo] = Registry("optimizer", key="optim.name")
for _info in (
    OptimInfo("adamax", torch.optim.Adamax, _ADAM_KWARGS, adam_family=True),
    OptimInfo("adam", torch.optim.Adam, _ADAM_KWARGS, adam_family=True),
    OptimInfo("adamw", torch.optim.AdamW, _ADAM_KWARGS, adam_family=True),
    OptimInfo("rmsprop", torch.optim.RMSprop, ("lr", "alpha", "eps", "weight_decay", "momentum")),
    OptimInfo("sgd", torch.optim.SGD, ("lr", "momentum", "weight_decay")),
):
    OPTIMIZERS.register(_info.name)(_info)


@dataclass(frozen=True)
class ScheduleInfo:
    """One learning-rate schedule as data: a keyword factory ``create(optimizer, **kwargs)``,
    the adapter that turns the config (plus batches per epoch and epochs) into its kwargs, and,
    for a schedule that cycles, the length of one cycle in epochs (``cycle``; its troughs are
    where snapshots are taken)."""

    name: str
    create: Callable[..., LRScheduler]
    kwargs: Callable[[ScheduleConfig, int, int], dict[str, Any]]
    cycle: Callable[[ScheduleConfig], float] | None = None


SCHEDULES: Registry[ScheduleInfo] = Registry("learning-rate schedule", key="schedule.name")

#: Optimizers whose first moment plays the role of momentum (betas, not ``momentum``).
ADAM_FAMILY = frozenset(name for name in OPTIMIZERS.names() if OPTIMIZERS.get(name).adam_family)


def create_optimizer_by_name(params: Params, name: str, **kwargs: Any) -> Optimizer:
    """The optimizer ``name`` over ``params`` with exactly the keyword arguments its family takes.

    An unknown name lists the valid ones; a keyword the family does not take is refused, not
    dropped (``momentum`` means nothing to Adam).

    >>> opt = create_optimizer_by_name([torch.nn.Parameter(torch.zeros(1))], "sgd", lr=0.1)
    >>> type(opt).__name__, opt.param_groups[0]["lr"]
    ('SGD', 0.1)
    """
    info = OPTIMIZERS.get(name)
    unknown = sorted(set(kwargs) - set(info.kwargs))
    if unknown:
        raise TypeError(
            f"optimizer {name!r} takes {', '.join(info.kwargs)}, got {', '.join(unknown)} too: "
            "drop them or pick another optimizer"
        )
    return info.cls(params, **kwargs)


def optimizer_kwargs(cfg: OptimizerConfig) -> dict[str, Any]:
    """The one adapter from config to :func:`create_optimizer_by_name`: the fields the named
    family takes (unknown names list the valid ones)."""
    return {key: getattr(cfg, key) for key in OPTIMIZERS.get(cfg.name).kwargs}


def create_optimizer(params: Params, cfg: OptimizerConfig) -> Optimizer:
    """The optimizer named ``cfg.name`` over ``params`` (unknown names list the valid ones)."""
    return create_optimizer_by_name(params, cfg.name, **optimizer_kwargs(cfg))


# ------------------------------------------------------------------------------ schedules


def _create_cyclic(
    optimizer: Optimizer,
    *,
    base_lr: float,
    max_lr: float,
    step_size_up: int,
    mode: str,
    gamma: float,
) -> LRScheduler:
    # Only the learning rate cycles, as in the Keras CLR callback the study used; cycling
    # momentum would overwrite Adam's beta1 (and optim.momentum for SGD/RMSprop).
    return torch.optim.lr_scheduler.CyclicLR(
        optimizer, base_lr=base_lr, max_lr=max_lr, step_size_up=step_size_up, mode=mode,
        gamma=gamma, cycle_momentum=False,
    )  # fmt: skip


def _cyclic_kwargs(cfg: ScheduleConfig, iters_per_epoch: int, epochs: int) -> dict[str, Any]:
    # The study's half-cycle is 6 epochs' worth of batches (Keras CLR step_size).
    step_size_up = max(1, round(cfg.half_cycle_epochs * iters_per_epoch))
    return {"base_lr": cfg.base_lr, "max_lr": cfg.max_lr, "step_size_up": step_size_up,
            "mode": cfg.mode, "gamma": cfg.gamma}  # fmt: skip


def _create_exponential(optimizer: Optimizer, *, gamma: float, decay_steps: int) -> LRScheduler:
    # Keras ExponentialDecay (staircase=False, Fata et al.): lr0 * gamma ** (step / decay_steps),
    # i.e. x gamma every decay_steps steps, applied smoothly per step.
    return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=gamma ** (1.0 / decay_steps))


def _create_cosine(optimizer: Optimizer, *, total_steps: int, min_lr: float) -> LRScheduler:
    return torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=max(1, total_steps), eta_min=min_lr
    )


def _create_constant(optimizer: Optimizer) -> LRScheduler:
    # ConstantLR with factor 1 keeps the optimizer's lr; unlike LambdaLR its state is plain data.
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


for _schedule in (
    ScheduleInfo(
        "cyclic", _create_cyclic, _cyclic_kwargs, cycle=lambda cfg: 2.0 * cfg.half_cycle_epochs
    ),
    ScheduleInfo(
        "exponential",
        _create_exponential,
        lambda cfg, ipe, epochs: {"gamma": cfg.gamma, "decay_steps": cfg.decay_steps},
    ),
    ScheduleInfo(
        "cosine",
        _create_cosine,
        lambda cfg, ipe, epochs: {"total_steps": ipe * epochs, "min_lr": cfg.min_lr},
    ),
    ScheduleInfo("constant", _create_constant, lambda cfg, ipe, epochs: {}),
):
    SCHEDULES.register(_schedule.name)(_schedule)


def create_scheduler(
    optimizer: Optimizer, cfg: ScheduleConfig, iters_per_epoch: int, epochs: int
) -> LRScheduler:
    """The schedule named ``cfg.name``, to be stepped once per batch.

    ``iters_per_epoch`` (batches per epoch) converts epoch-based settings into steps: the
    schedule's own ``kwargs`` adapter does, then its keyword factory builds it.
    """
    if iters_per_epoch < 1 or epochs < 1:
        raise ValueError(
            f"`iters_per_epoch >= 1 and epochs >= 1` must hold, got iters_per_epoch="
            f"{iters_per_epoch}, epochs={epochs}: is the training split empty?"
        )
    info = SCHEDULES.get(cfg.name)
    return info.create(optimizer, **info.kwargs(cfg, iters_per_epoch, epochs))


def cycle_epochs(schedule: ScheduleConfig) -> float:
    """Length of one learning-rate cycle in epochs (1 for schedules without cycles).

    An unknown schedule name counts as one without cycles here: the config checks report it,
    with every other problem of the config, instead of this clock raising first.
    """
    if schedule.name not in SCHEDULES:
        return 1.0
    info = SCHEDULES.get(schedule.name)
    return info.cycle(schedule) if info.cycle is not None else 1.0


def trough_epochs(schedule: ScheduleConfig, epochs: int) -> list[int]:
    """The epochs (1-based) that end a whole learning-rate cycle, where the rate is lowest.

    A cyclic schedule returns to ``base_lr`` after every ``2 x half_cycle_epochs`` epochs
    (triangular2 halves the peak each cycle; the trough stays at ``base_lr``), which is where a
    snapshot ensemble takes its members (Huang et al. 2017, "Snapshot Ensembles: Train 1, get M
    for free"). Schedules without cycles have no troughs; a cycle that does not end on a whole
    epoch has none either (the epoch boundary misses the trough).

    >>> trough_epochs(ScheduleConfig(name="cyclic", half_cycle_epochs=1), 7)
    [2, 4, 6]
    >>> trough_epochs(ScheduleConfig(name="cosine"), 7)
    []
    """
    info = SCHEDULES.get(schedule.name)
    if info.cycle is None:
        return []
    cycle = info.cycle(schedule)
    troughs = []
    for epoch in range(1, epochs + 1):
        whole = round(epoch / cycle)
        if whole >= 1 and abs(epoch - whole * cycle) < 1e-9:
            troughs.append(epoch)
    return troughs


def cycle_of(schedule: ScheduleConfig, epoch: int) -> int:
    """The 1-based learning-rate cycle that epoch ``epoch`` ends or lies in; -1 without cycles.

    >>> cycle_of(ScheduleConfig(name="cyclic", half_cycle_epochs=1), 4)
    2
    """
    info = SCHEDULES.get(schedule.name)
    if info.cycle is None:
        return -1
    return max(1, math.ceil(epoch / info.cycle(schedule) - 1e-9))


def current_lr(optimizer: Optimizer) -> float:
    """Learning rate of the first parameter group."""
    return float(optimizer.param_groups[0]["lr"])
