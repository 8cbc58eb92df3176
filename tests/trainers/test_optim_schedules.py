"""Optimizers and learning-rate schedules by name, with their learning-rate traces."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainers._registry import UnknownNameError
from trainers.config import OptimizerConfig, ScheduleConfig
from trainers.optim import OPTIMIZERS, SCHEDULES, create_optimizer, create_scheduler, current_lr

EXPECTED_OPTIMIZERS = {
    "adamax": torch.optim.Adamax,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "rmsprop": torch.optim.RMSprop,
    "sgd": torch.optim.SGD,
}


def lr_trace(
    schedule: ScheduleConfig,
    steps: int,
    iters_per_epoch: int = 10,
    epochs: int = 10,
    optim: str = "adamax",
) -> np.ndarray:
    p = torch.nn.Parameter(torch.zeros(2))
    opt = create_optimizer([p], OptimizerConfig(name=optim))
    sched = create_scheduler(opt, schedule, iters_per_epoch, epochs)
    trace = []
    for _ in range(steps):
        trace.append(current_lr(opt))
        opt.step()
        sched.step()
    return np.array(trace)


@pytest.mark.parametrize("name", sorted(EXPECTED_OPTIMIZERS))
def test_every_optimizer_by_name_builds_and_minimises(name: str) -> None:
    assert set(OPTIMIZERS.names()) == set(EXPECTED_OPTIMIZERS)
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(4))
    cfg = OptimizerConfig(name=name, lr=0.05, weight_decay=0.01)
    opt = create_optimizer([w], cfg)
    assert type(opt) is EXPECTED_OPTIMIZERS[name]
    assert opt.param_groups[0]["lr"] == 0.05 and opt.param_groups[0]["weight_decay"] == 0.01
    start = float((w**2).sum().detach())
    for _ in range(30):
        opt.zero_grad()
        (w**2).sum().backward()
        opt.step()
    assert float((w**2).sum().detach()) < start


def test_study_adamax_settings() -> None:
    opt = create_optimizer([torch.nn.Parameter(torch.zeros(1))], OptimizerConfig())
    g = opt.param_groups[0]
    assert type(opt) is torch.optim.Adamax
    assert g["lr"] == 2e-4 and tuple(g["betas"]) == (0.9, 0.999)


def test_rmsprop_and_sgd_take_momentum_and_alpha() -> None:
    p = [torch.nn.Parameter(torch.zeros(1))]
    g = create_optimizer(p, OptimizerConfig(name="rmsprop", momentum=0.5, alpha=0.8)).param_groups[
        0
    ]
    assert g["momentum"] == 0.5 and g["alpha"] == 0.8
    assert (
        create_optimizer(p, OptimizerConfig(name="sgd", momentum=0.3)).param_groups[0]["momentum"]
        == 0.3
    )


def test_unknown_names_fail_loudly_with_valid_names() -> None:
    p = [torch.nn.Parameter(torch.zeros(1))]
    with pytest.raises(
        UnknownNameError,
        match=r"unknown optimizer 'adagrad' in optim.name; valid names: adam, adamax",
    ):
        create_optimizer(p, OptimizerConfig(name="adagrad"))
    opt = create_optimizer(p, OptimizerConfig())
    with pytest.raises(
        UnknownNameError, match="valid names: constant, cosine, cyclic, exponential"
    ):
        create_scheduler(opt, ScheduleConfig(name="onecycle"), 10, 1)
    assert set(SCHEDULES.names()) == {"constant", "cosine", "cyclic", "exponential"}


def peaks(trace: np.ndarray, period: int) -> list[float]:
    return [float(trace[i : i + period].max()) for i in range(0, len(trace), period)]


def test_triangular2_peaks_halve_every_cycle() -> None:
    # half-cycle = 6 epochs x 10 iterations = 60 steps, full cycle 120 steps
    cfg = ScheduleConfig(name="cyclic", mode="triangular2", base_lr=1e-7, max_lr=2e-3)
    trace = lr_trace(cfg, steps=4 * 120)
    assert trace[0] == pytest.approx(1e-7)
    assert int(trace[:120].argmax()) == 60  # the peak sits exactly one half-cycle in
    amplitude = [p - 1e-7 for p in peaks(trace, 120)]
    assert amplitude[0] == pytest.approx(2e-3 - 1e-7, rel=1e-6)
    for a, b in zip(amplitude, amplitude[1:]):
        assert b == pytest.approx(a / 2, rel=1e-6)
    assert trace.min() >= 1e-7 - 1e-15


def test_triangular_keeps_peaks_and_exp_range_decays() -> None:
    tri = lr_trace(ScheduleConfig(name="cyclic", mode="triangular", half_cycle_epochs=1), 80)
    assert peaks(tri, 20) == pytest.approx([2e-3] * 4, rel=1e-6)
    exp = lr_trace(
        ScheduleConfig(name="cyclic", mode="exp_range", half_cycle_epochs=1, gamma=0.99), 80
    )
    p = peaks(exp, 20)
    assert all(b < a for a, b in zip(p, p[1:]))


def test_cyclic_does_not_cycle_adam_momentum() -> None:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = create_optimizer([p], OptimizerConfig(name="adam"))
    sched = create_scheduler(opt, ScheduleConfig(name="cyclic", half_cycle_epochs=0.5), 4, 2)
    for _ in range(7):
        opt.step()
        sched.step()
        assert tuple(opt.param_groups[0]["betas"]) == (0.9, 0.999)


def test_exponential_multiplies_by_gamma_every_decay_steps() -> None:
    cfg = ScheduleConfig(name="exponential", gamma=0.95, decay_steps=900)
    trace = lr_trace(cfg, steps=1801, optim="adam")
    lr0 = 2e-4
    assert trace[0] == pytest.approx(lr0)
    assert trace[900] == pytest.approx(lr0 * 0.95, rel=1e-6)
    assert trace[1800] == pytest.approx(lr0 * 0.95**2, rel=1e-6)
    assert np.all(np.diff(trace) < 0)


def test_cosine_reaches_floor_and_constant_stays() -> None:
    cos = lr_trace(
        ScheduleConfig(name="cosine", min_lr=1e-6), steps=101, iters_per_epoch=10, epochs=10
    )
    assert cos[0] == pytest.approx(2e-4) and cos[100] == pytest.approx(1e-6)
    assert cos[50] == pytest.approx((2e-4 + 1e-6) / 2, rel=1e-6)
    const = lr_trace(ScheduleConfig(name="constant"), steps=50)
    assert np.all(const == pytest.approx(2e-4))


def test_empty_epoch_is_refused() -> None:
    opt = create_optimizer([torch.nn.Parameter(torch.zeros(1))], OptimizerConfig())
    with pytest.raises(ValueError, match="iters_per_epoch=0"):
        create_scheduler(opt, ScheduleConfig(), 0, 3)


def test_optimizer_table_names_only_keywords_the_class_takes() -> None:
    import inspect

    from trainers.optim import ADAM_FAMILY, optimizer_kwargs

    assert ADAM_FAMILY == {"adamax", "adam", "adamw"}
    for name in OPTIMIZERS.names():
        info = OPTIMIZERS.get(name)
        accepted = set(inspect.signature(info.cls).parameters)
        assert set(info.kwargs) <= accepted, (name, set(info.kwargs) - accepted)
        assert set(info.kwargs) <= set(
            OptimizerConfig.model_fields
        )  # the adapter reads them from the config
        assert set(optimizer_kwargs(OptimizerConfig(name=name))) == set(info.kwargs)


def test_a_keyword_the_family_does_not_take_is_refused() -> None:
    from trainers.optim import create_optimizer_by_name

    p = [torch.nn.Parameter(torch.zeros(1))]
    with pytest.raises(
        TypeError, match="optimizer 'adam' takes lr, betas, eps, weight_decay, got momentum"
    ):
        create_optimizer_by_name(p, "adam", lr=0.1, momentum=0.9)
    with pytest.raises(UnknownNameError, match="unknown optimizer 'adagrad'"):
        create_optimizer_by_name(p, "adagrad", lr=0.1)


def test_each_schedule_adapter_gives_exactly_its_factory_keywords() -> None:
    import inspect

    for name in SCHEDULES.names():
        info = SCHEDULES.get(name)
        wanted = {
            p
            for p, v in inspect.signature(info.create).parameters.items()
            if v.kind is v.KEYWORD_ONLY
        }
        assert set(info.kwargs(ScheduleConfig(name=name), 10, 3)) == wanted, name
