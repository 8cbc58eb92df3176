"""Checks of a validated trial config that need the registries: names, backbones, files.

``trainers/config.py`` validates structure and stays a leaf; the code that loads a config at
the edge passes :func:`check_names` as ``load_config(..., checks=check_names)``.

>>> from trainers.config import load_config
>>> load_config({"data": {"synthetic": {}}, "optim": {"name": "adagrad"}}, checks=check_names)
Traceback (most recent call last):
...
trainers.config.ConfigError: 1 configuration problem(s):
  - optim.name: unknown optimizer 'adagrad'; valid names: adam, adamax, adamw, rmsprop, sgd
"""

from __future__ import annotations

import os
from pathlib import Path

from trainers.config import TrialConfig
from trainers.data.augment import AUGMENTATIONS
from trainers.data.layouts import LAYOUTS
from trainers.data.synth_presets import SYNTH_PRESETS
from trainers.models import HEADS, backbone_problem
from trainers.optim import OPTIMIZERS, SCHEDULES

__all__ = ["check_names"]


def check_names(config: TrialConfig) -> list[str]:
    """Registry names a config uses that do not exist, one problem each (empty when all known)."""
    problems: list[str] = []
    checks = [
        (AUGMENTATIONS, config.data.augmentation, "data.augmentation"),
        (HEADS, config.model.head, "model.head"),
        (OPTIMIZERS, config.optim.name, "optim.name"),
        (SCHEDULES, config.schedule.name, "schedule.name"),
    ]
    if config.data.layout != "auto":
        checks.append((LAYOUTS, config.data.layout, "data.layout"))
    if config.data.synthetic is not None:
        checks.append((SYNTH_PRESETS, config.data.synthetic.preset, "data.synthetic.preset"))
    for registry, name, key in checks:
        if name not in registry:
            problems.append(
                f"{key}: unknown {registry.kind} {name!r}; valid names: {', '.join(registry.names())}"
            )
    backbone = backbone_problem(config.model.backbone, config.data.input_size)
    if backbone:
        problems.append(backbone)
    if (
        config.model.pretrained_path is not None
        and not Path(config.model.pretrained_path).is_file()
    ):
        problems.append(
            f"model.pretrained_path: file {str(config.model.pretrained_path)!r} does not exist "
            f"(relative paths are taken from the folder wen runs in, {os.getcwd()}); point it "
            "at a safetensors or timm checkpoint file"
        )
    if config.data.root is not None and not Path(config.data.root).is_dir():
        problems.append(
            f"data.root: folder {str(config.data.root)!r} does not exist (relative paths are "
            f"taken from the folder wen runs in, {os.getcwd()}); point it at the dataset root, "
            "or use data.synthetic"
        )
    return problems
