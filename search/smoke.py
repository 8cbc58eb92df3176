"""Smoke mode: a preset shrunk to a few CPU minutes on synthetic data (``wen search --smoke``).

:func:`smoke_overrides` turns a whole-run config into one that checks the same pipeline end to
end without data, weights or a GPU: a small synthetic dataset in the preset's own layout, small
inputs, 2 short epochs, no pretrained weights, a few trials on the CPU. Architectures stay
real wherever they fit the budget; a backbone above :data:`SMOKE_MAX_PARAMS` parameters (VGG-16,
InceptionResNet-V2) is swapped for a tiny timm model, and every such change is returned as a
note for the caller to print loudly.

>>> from search.config import WenConfig
>>> cfg = WenConfig.model_validate({"data": {"root": "nowhere", "layout": "cnmc-kaggle"},
...     "model": {"backbone": "vgg16", "pretrained": True}})
>>> smoke = smoke_overrides(cfg)
>>> smoke.config.model.backbone, smoke.config.model.pretrained, smoke.config.data.synthetic.layout
('test_resnet', False, 'cnmc-kaggle')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from search.checks import load_wen_config
from search.config import WenConfig
from search.schedulers import SCHEDULER_TRAITS
from search.space import count_trials
from trainers.config import apply_overrides, parse_overrides
from trainers.models import _probe_model, create_alnet, min_input_size

__all__ = [
    "SMOKE_MAX_PARAMS",
    "SMOKE_STAND_INS",
    "Smoke",
    "backbone_params",
    "load_smoke_config",
    "smoke_backbones",
    "smoke_overrides",
    "smoke_trials",
]

#: Backbones with more parameters than this are swapped in smoke mode: building, stepping and
#: checkpointing them every epoch costs more than a smoke run's whole budget on two CPU cores.
SMOKE_MAX_PARAMS = 30_000_000
#: Tiny timm models that stand in for big backbones, in order of use (distinct per swap).
SMOKE_STAND_INS = ("test_resnet", "test_efficientnet", "test_byobnet", "test_convnext")
#: Layouts the synthetic generator writes; a preset on another layout smokes on cnmc-kaggle.
_SYNTH_LAYOUTS = ("cnmc-kaggle", "cnmc-tcia", "all4", "imagefolder")
SMOKE_EPOCHS = 2
SMOKE_STEPS = 2
SMOKE_INPUT = 64
#: Values kept of each grid/choice dimension other than the backbone (every backbone is kept).
SMOKE_VALUES = 2


@dataclass
class Smoke:
    """A smoke config and what was changed to make it, one line per change worth shouting."""

    config: WenConfig
    notes: list[str] = field(default_factory=list)


def backbone_params(name: str) -> int:
    """Parameter count of backbone ``name`` without its classifier (built on the meta device)."""
    if name == "alnet":
        return sum(p.numel() for p in create_alnet().parameters())
    return sum(p.numel() for p in _probe_model(name).parameters())


def smoke_backbones(
    names: list[str], max_params: int = SMOKE_MAX_PARAMS
) -> tuple[list[str], dict[str, str]]:
    """``names`` with every backbone above ``max_params`` swapped for a distinct tiny stand-in.

    Returns the new list (order kept, duplicates dropped) and the swaps made.

    >>> smoke_backbones(["vgg16", "densenet121"])
    (['test_resnet', 'densenet121'], {'vgg16': 'test_resnet'})
    """
    free = [s for s in SMOKE_STAND_INS if s not in names]
    swaps: dict[str, str] = {}
    out: list[str] = []
    for name in names:
        if name not in swaps and backbone_params(name) > max_params:
            if not free:
                raise ValueError(
                    f"smoke mode has no tiny stand-in left for {name} (it swaps at most "
                    f"{len(SMOKE_STAND_INS)} big backbones): drop some from the backbone grid"
                )
            swaps[name] = free.pop(0)
        new = swaps.get(name, name)
        if new not in out:
            out.append(new)
    return out, swaps


def _smoke_input_size(backbones: list[str]) -> int:
    """ALNet's fixed 224 px when it is used, else the smallest size >= 64 every backbone runs at."""
    if "alnet" in backbones:
        return 224
    sizes = [min_input_size(b, above=SMOKE_INPUT) or SMOKE_INPUT for b in backbones]
    return max([SMOKE_INPUT, *sizes])


def _smoke_epochs(values: list[Any]) -> list[int]:
    """An epoch grid squeezed into 1..SMOKE_EPOCHS, keeping it a grid of two when it was one."""
    squeezed = sorted({min(int(v), SMOKE_EPOCHS) for v in values})
    if len(values) > 1 and len(squeezed) == 1:
        squeezed = [1, SMOKE_EPOCHS]
    return squeezed


def smoke_overrides(config: WenConfig, max_params: int = SMOKE_MAX_PARAMS) -> Smoke:
    """``config`` shrunk to a smoke run on synthetic data (see the module docstring).

    The result is validated as a whole (search values included); ``data.root`` of the
    preset need not exist.
    """
    raw = config.model_dump(mode="json")
    notes: list[str] = []
    backbones = _smoke_backbone_space(config, raw, max_params, notes)
    _smoke_data(config, raw["data"], backbones, notes)
    _smoke_training(raw)
    raw["name"] = f"{config.name}-smoke"
    _smoke_search(raw["search"])
    raw["ensemble"].update(n_trials=20, bootstrap=100, crossfit_folds=2)
    return Smoke(load_wen_config(raw), notes)


def _smoke_backbone_space(
    config: WenConfig, raw: dict[str, Any], max_params: int, notes: list[str]
) -> list[str]:
    """Real backbones where they fit, tiny stand-ins (loudly) where they do not; returns every
    backbone the smoke run can pick. Edits ``raw``'s model and backbone grid."""
    space = raw["search"]["space"]
    base_backbone = config.model.backbone
    spec = space.get("model.backbone")
    grid = list(spec["values"]) if spec else []
    _, swaps = smoke_backbones([base_backbone, *grid], max_params)
    new_base = swaps.get(base_backbone, base_backbone)
    if spec:
        spec["values"] = list(dict.fromkeys(swaps.get(b, b) for b in grid))
    for big, tiny in swaps.items():
        notes.append(
            f"SMOKE: backbone {big} ({backbone_params(big) / 1e6:.0f} M parameters) does not fit "
            f"a CPU smoke run; it is REPLACED by the tiny timm model {tiny}. Results say nothing "
            f"about {big}."
        )
    raw["model"].update(backbone=new_base, pretrained=False, pretrained_path=None)
    return list(dict.fromkeys([new_base, *(spec["values"] if spec else [])]))


def _smoke_layout(config: WenConfig, layout: str, notes: list[str]) -> str:
    """The synthetic set's layout: the preset's own where the generator writes it."""
    if config.data.synthetic is not None:
        return config.data.synthetic.layout
    if layout in _SYNTH_LAYOUTS:
        return layout
    notes.append(
        f"SMOKE: data.layout={layout!r} names no layout the generator writes; using a "
        "cnmc-kaggle synthetic set (set data.layout in the preset to smoke its own layout)"
    )
    return "cnmc-kaggle"


def _smoke_data(
    config: WenConfig, data: dict[str, Any], backbones: list[str], notes: list[str]
) -> None:
    """A small synthetic set in the preset's own layout, small inputs, no caches."""
    synth_layout = _smoke_layout(config, data.get("layout", "auto"), notes)
    data.update(
        root=None,
        layout="auto",
        synthetic={
            "layout": synth_layout,
            "subjects_per_class": 4,
            "cells_per_subject": 8,
            # crop then resize as the preset does, from a small image
            "size": 96,
            "seed": 0,
        },
        synthetic_dir=None,
        input_size=_smoke_input_size(backbones),
        batch_size=8 if "alnet" in backbones else min(int(data["batch_size"]), 16),
        eval_batch_size=None,
        num_workers=0,
        cache_dir=None,
    )
    split = data["split"]
    if split["method"] == "group_holdout":
        # a few synthetic subjects: small shares would leave one class out of val or test
        split["val_fraction"] = max(float(split["val_fraction"]), 0.25)
        split["test_fraction"] = max(float(split["test_fraction"]), 0.25)


def _smoke_training(raw: dict[str, Any]) -> None:
    """Optimizer schedule and loop: two short epochs on one CPU thread."""
    if raw["schedule"]["name"] == "cyclic":
        raw["schedule"]["half_cycle_epochs"] = 0.5  # one whole LR cycle per epoch
    raw["schedule"]["decay_steps"] = 1
    raw["train"].update(
        epochs=SMOKE_EPOCHS,
        device="cpu",
        precision="auto",
        threads=1,
        max_steps_per_epoch=SMOKE_STEPS,
        checkpoint_every=1,
    )


def _smoke_search(search: dict[str, Any]) -> None:
    """Few values, few folds, one sample, one CPU per trial, no GPU."""
    for key, dim in search["space"].items():
        if key == "model.backbone" or dim["type"] not in ("grid", "choice"):
            continue
        if key == "train.epochs":
            dim["values"] = _smoke_epochs(dim["values"])
        else:
            dim["values"] = dim["values"][:SMOKE_VALUES]
    if search.get("folds"):
        search["folds"] = search["folds"][:SMOKE_VALUES]
    uncapped = SCHEDULER_TRAITS[search["scheduler"]["name"]].uncapped
    search.update(num_samples=1, max_concurrent=None if uncapped else 2, report_every_s=10.0)
    search["resources"] = {"cpus": 1.0, "gpus": 0.0, "memory_gb": None}
    if SCHEDULER_TRAITS[search["scheduler"]["name"]].asha_rungs:
        search["scheduler"].update(grace_cycles=1, reduction_factor=2.0)
    if search["algorithm"] == "optuna":
        search["num_samples"] = 2


def load_smoke_config(source: str, overrides: list[str] | None = None) -> Smoke:
    """A preset file in smoke mode; ``--set`` overrides apply after the smoke changes.

    The preset is validated for structure only (its data folder need not exist here).
    """
    preset = load_wen_config(source, check_registries=False)
    smoke = smoke_overrides(preset)
    if overrides:
        raw = apply_overrides(smoke.config.model_dump(mode="json"), parse_overrides(overrides))
        config = load_wen_config(raw)
        smoke = Smoke(config, smoke.notes)
    return smoke


def smoke_trials(config: WenConfig) -> int:
    """How many trials the (smoke) search will run."""
    return count_trials(config.search)
