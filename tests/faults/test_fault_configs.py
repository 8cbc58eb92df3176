"""Fault 8: bad configurations are rejected before any trial starts.

Each case goes through ``wen search CONFIG --dry-run`` (config validation, registries, cross-field
rules) or, for what needs the cluster's view, through the pre-flight check ``run_search`` runs
right after Ray starts and before Tune is built. Every rejection is one message that names the
key path, the rule (or the valid values) and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from search.cli import app
from search.run import SearchError, _check_cluster, load_search_config
from search.storage import RunStorage

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml"

# (id, --set overrides, key path the message must name, a fix hint the message must hold)
BAD_CONFIGS: list[tuple[str, list[str], str, str]] = [
    ("unknown-key", ["train.epochz=3"], "train.epochz", "allowed keys here"),
    ("unknown-section", ["trian.epochs=3"], "trian", "allowed keys"),
    ("wrong-type", ["train.epochs=abc"], "train.epochs", "fix the value"),
    ("zero-epochs", ["train.epochs=0"], "train.epochs", "greater than or equal to 1"),
    ("negative-lr", ["optim.lr=-1"], "optim.lr", "greater than 0"),
    ("dropout-one", ["model.dropout=1.0"], "model.dropout", "less than 1"),
    ("crop-over-one", ["data.crop.fraction=1.5"], "data.crop.fraction", "less than or equal to 1"),
    ("zero-batch", ["data.batch_size=0"], "data.batch_size", "fix the value"),
    ("unknown-backbone", ["model.backbone=resnet_nope"], "model.backbone", "did you mean"),
    ("unknown-optimizer", ["optim.name=adamz"], "optim.name", "valid names: adam, adamax"),
    ("unknown-schedule", ["schedule.name=zigzag"], "schedule.name", "valid names: constant"),
    ("unknown-augmentation", ["data.augmentation=wild"], "data.augmentation", "valid names:"),
    ("unknown-head", ["model.head=huge"], "model.head", "valid names: dense512"),
    (
        "unknown-ensemble-method",
        ["ensemble.methods=[sap,wen_nope]"],
        "ensemble.methods",
        "valid names: best_single",
    ),
    ("bad-ensemble-objective", ["ensemble.objective=auc"], "ensemble.objective", "'logloss'"),
    (
        "input-below-backbone-minimum",
        ["model.backbone=inception_resnet_v2", "data.input_size=32"],
        "data.input_size",
        "raise data.input_size or pick another backbone",
    ),
    ("betas-out-of-range", ["optim.betas=[0.9,1.5]"], "optim", "`0 <= beta < 1` must hold"),
    (
        "cyclic-bounds-swapped",
        ["schedule.base_lr=0.1", "schedule.max_lr=0.01"],
        "schedule",
        "swap them or raise schedule.max_lr",
    ),
    (
        "space-unknown-key",
        ["search.space={optim.lrx: {type: uniform, low: 0.1, high: 0.2}}"],
        "search.space.optim.lrx",
        "allowed keys under optim",
    ),
    (
        "space-bad-type",
        ["search.space={optim.lr: {type: weird, low: 0.1, high: 0.2}}"],
        "search.space.optim.lr.type",
        "'loguniform'",
    ),
    (
        "space-empty-range",
        ["search.space={optim.lr: {type: loguniform, low: 0.1, high: 0.01}}"],
        "search.space.optim.lr",
        "`low < high` must hold",
    ),
    ("unknown-scheduler", ["search.scheduler.name=hyper"], "search.scheduler.name", "'asha'"),
    ("unknown-algorithm", ["search.algorithm=grid2"], "search.algorithm", "'optuna'"),
    ("unknown-metric", ["search.metric=val_nope"], "search.metric", "valid metrics: val_wfs"),
    (
        "zero-concurrency",
        ["search.max_concurrent=0"],
        "search.max_concurrent",
        "greater than or equal to 1",
    ),
    ("zero-samples", ["search.num_samples=0"], "search.num_samples", "greater than or equal to 1"),
    ("unknown-layout", ["data.synthetic.layout=weird"], "data.synthetic.layout", "'cnmc-kaggle'"),
    ("bad-set-syntax", ["train.epochs"], "train.epochs", "expected KEY=VALUE"),
    (
        "too-few-synthetic-subjects",
        ["data.synthetic.subjects_per_class=3"],
        "data.synthetic",
        "raise subjects_per_class to 4",
    ),
    # the smoke search has search.folds=[0, 1]: ASHA would stop one fold of a configuration
    (
        "asha-with-folds",
        ["search.scheduler.name=asha", "train.epochs=4"],
        "search.folds",
        "leaves its configuration incomplete",
    ),
    (
        "hyperband-with-folds",
        ["search.scheduler.name=hyperband"],
        "search.folds",
        "Use search.scheduler.name=fifo with folds",
    ),
    (
        "two-gpus-per-trial",
        ["search.resources.gpus=2"],
        "search.resources",
        "`gpus <= 1` must hold",
    ),
]


@pytest.mark.parametrize(
    ("overrides", "key", "hint"), [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS]
)
def test_bad_config_is_rejected_naming_key_rule_and_fix(
    tmp_path: Path, overrides: list[str], key: str, hint: str
) -> None:
    args = ["search", str(SMOKE), "--dry-run", "--storage", str(tmp_path)]
    for item in overrides:
        args += ["--set", item]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    out = " ".join(result.output.split())  # rich may wrap long lines
    assert "1 configuration problem(s)" in out or "--set" in out, out
    assert key in out and hint in out, out
    assert "grid points" not in out  # rejected before the space was even expanded
    assert list(tmp_path.iterdir()) == []  # nothing was started or written


@pytest.mark.parametrize(
    "storage", ["/proc/wen-nope", "/etc/hostname"], ids=["under-proc", "a-file"]
)
def test_unwritable_storage_is_rejected_before_ray_starts(tmp_path: Path, storage: str) -> None:
    result = CliRunner().invoke(app, ["search", str(SMOKE), "--storage", storage, "--name", "x"])
    assert result.exit_code == 2, result.output
    out = " ".join(result.output.split())
    assert "search.storage" in out and "pass a writable folder" in out, out
    assert "Ray dashboard" not in out  # Ray never started, so no trial could


def _node(cpus: float, gpus: float = 0, ip: str = "127.0.0.1") -> dict[str, Any]:
    """A live node as ``ray.nodes()`` describes it."""
    resources = {"CPU": cpus, "memory": 4 * 1024**3}
    if gpus:
        resources["GPU"] = gpus
    return {
        "Alive": True,
        "NodeID": f"{ip}-{cpus}",
        "NodeManagerAddress": ip,
        "Resources": resources,
    }


CLUSTER_CASES: list[tuple[str, list[str], str, str]] = [
    (
        "gpus-where-none-exist",
        ["search.resources.gpus=1"],
        "search.resources.gpus=1",
        "set search.resources.gpus=0",
    ),
    ("cuda-without-gpus", ["train.device=cuda"], "train.device=cuda", "set search.resources.gpus"),
    (
        "trial-larger-than-any-node",
        ["search.resources.cpus=64"],
        "cpus=64",
        "lower search.resources or add bigger nodes",
    ),
]


@pytest.mark.parametrize(
    ("overrides", "key", "hint"), [c[1:] for c in CLUSTER_CASES], ids=[c[0] for c in CLUSTER_CASES]
)
def test_resources_the_cluster_lacks_are_rejected_before_tune_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overrides: list[str], key: str, hint: str
) -> None:
    """``_check_cluster`` is what ``run_search`` runs between starting Ray and building Tune."""
    import search.run as run_module

    monkeypatch.setattr(
        run_module, "alive_nodes", lambda: [_node(2)]
    )  # this machine: 2 CPU, no GPU
    config = load_search_config(str(SMOKE), overrides)
    with pytest.raises(SearchError) as info:
        _check_cluster(config, RunStorage.open(str(tmp_path), "x"))
    message = str(info.value)
    assert message.startswith("the search cannot start") and message.count("\n  - ") == 1
    assert key in message and hint in message, message
