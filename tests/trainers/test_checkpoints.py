"""Checkpoints: safetensors + JSON round trip, atomic writes, pickle refused, shape errors."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from trainers.checkpoint import (
    CheckpointError,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from trainers.config import OptimizerConfig, ScheduleConfig
from trainers.models import create_model
from trainers.optim import SCHEDULES, create_optimizer, create_scheduler


def trained(seed: int, optim: str = "adamax", schedule: str = "cyclic", classes: int = 2):
    torch.manual_seed(seed)
    model = create_model("test_resnet", classes, head="dense512")
    opt = create_optimizer(model.parameters(), OptimizerConfig(name=optim))
    sched = create_scheduler(opt, ScheduleConfig(name=schedule, half_cycle_epochs=0.5), 4, 3)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 0, 1]) % classes
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        sched.step()
    return model, opt, sched


def test_round_trip_restores_model_optimizer_scheduler_and_rng(tmp_path: Path) -> None:
    model, opt, sched = trained(0)
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    rng = capture_rng_state()
    expect = (random.random(), np.random.rand(), torch.rand(3))
    d = save_checkpoint(
        tmp_path / "epoch_0002", model, opt, sched, 2, {"val_wfs": 0.7, "lr": 1e-3}, rng
    )
    assert sorted(p.name for p in d.iterdir()) == [
        "model.safetensors",
        "state.json",
        "state.safetensors",
    ]
    json.loads((d / "state.json").read_text())  # plain JSON, no pickle anywhere

    model2, opt2, sched2 = trained(9)
    state = load_checkpoint(d, model2, opt2, sched2)
    assert state["epoch"] == 2 and state["metrics"] == {"val_wfs": 0.7, "lr": 1e-3}
    for (k, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(a, b), k
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["param_groups"][0]["lr"] == s2["param_groups"][0]["lr"]
    assert tuple(s2["param_groups"][0]["betas"]) == (0.9, 0.999)
    for i in s1["state"]:
        for key, val in s1["state"][i].items():
            assert torch.equal(val, s2["state"][i][key])
    assert sched2.last_epoch == sched.last_epoch and sched2.get_last_lr() == sched.get_last_lr()
    restore_rng_state(state["rng"])
    got = (random.random(), np.random.rand(), torch.rand(3))
    assert got[0] == expect[0] and got[1] == expect[1] and torch.equal(got[2], expect[2])
    # training continues identically from the restored state
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 0, 1])
    for m, o, s in ((model, opt, sched), (model2, opt2, sched2)):
        o.zero_grad()
        torch.nn.functional.cross_entropy(m(x), y).backward()
        o.step()
        s.step()
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    "optim,schedule",
    [("adamax", s) for s in sorted(SCHEDULES.names())]
    + [("rmsprop", "cyclic"), ("sgd", "exponential")],
)
def test_every_schedule_and_optimizer_state_survives(
    tmp_path: Path, schedule: str, optim: str
) -> None:
    model, opt, sched = trained(0, optim, schedule)
    d = save_checkpoint(tmp_path / "c", model, opt, sched, 1, {}, None)
    _, opt2, sched2 = trained(1, optim, schedule)
    load_checkpoint(d, model, opt2, sched2)
    assert sched2.state_dict() == sched.state_dict() or sched2.last_epoch == sched.last_epoch
    assert sched2.get_last_lr() == sched.get_last_lr()
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


def test_save_is_atomic_and_replaces(tmp_path: Path) -> None:
    model, opt, sched = trained(0)
    d = tmp_path / "ckpt" / "epoch_0001"
    save_checkpoint(d, model, opt, sched, 1, {"a": 1}, None)
    save_checkpoint(d, model, opt, sched, 5, {"a": 2}, None)
    assert [p.name for p in d.parent.iterdir()] == ["epoch_0001"]
    assert load_checkpoint(d, model)["epoch"] == 5


def test_unstorable_state_fails_before_writing(tmp_path: Path) -> None:
    model, opt, sched = trained(0)
    with pytest.raises(
        CheckpointError, match="metrics.bad: cannot store a PosixPath without pickle"
    ):
        save_checkpoint(tmp_path / "c", model, opt, sched, 1, {"bad": Path("/x")}, None)
    assert not any(tmp_path.iterdir())


def test_pickled_payload_is_refused(tmp_path: Path) -> None:
    model, opt, sched = trained(0)
    d = save_checkpoint(tmp_path / "c", model, opt, sched, 1, {}, None)
    torch.save(model.state_dict(), d / "model.safetensors")  # a pickle under a safetensors name
    with pytest.raises(
        CheckpointError, match=r"model\.safetensors is not a valid safetensors file.*pickled"
    ):
        load_checkpoint(d, model)
    not_ckpt = tmp_path / "legacy"
    not_ckpt.mkdir()
    torch.save(model.state_dict(), not_ckpt / "model.pt")
    with pytest.raises(CheckpointError, match="is not a checkpoint: state.json is missing"):
        load_checkpoint(not_ckpt, model)


def test_wrong_shape_names_file_and_tensor(tmp_path: Path) -> None:
    model, opt, sched = trained(0, classes=2)
    d = save_checkpoint(tmp_path / "c", model, opt, sched, 1, {}, None)
    other = create_model("test_resnet", 3, head="dense512")
    with pytest.raises(
        CheckpointError,
        match=r"model\.safetensors: tensor 'head\.2\.weight' has shape \(2, 512\), the model expects \(3, 512\)",
    ):
        load_checkpoint(d, other)
    with pytest.raises(CheckpointError, match="do not exist in the model"):
        load_checkpoint(d, create_model("test_resnet", 2, head="linear"))
