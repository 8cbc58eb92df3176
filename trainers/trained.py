"""A trial's saved network rebuilt from ``RUN/models/<trial_id>/``: :func:`load_trained_model`.

Kept apart from ``trainers/models.py`` (which builds networks) because rebuilding a saved one
needs the trial config too: models stays free of config, config free of models.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model
from torch import nn

from trainers.config import ConfigError, TrialConfig, load_config
from trainers.errors import WenError
from trainers.models import Classifier, create_model, model_data_config, shape_mismatches

__all__ = ["TrainedModel", "TrainedModelError", "load_trained_model"]


class TrainedModelError(WenError, RuntimeError):
    """A trial's saved network cannot be rebuilt; the message names the file and the fix."""


@dataclass
class TrainedModel:
    """One trial's network rebuilt from ``RUN/models/<trial_id>/`` (eval mode) and what its
    inputs need: the trial config (crop, input size), class names and normalisation."""

    trial_id: str
    backbone: str
    model: Classifier
    config: TrialConfig
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]


def _check_weight_shapes(model: nn.Module, weights: Path, what: str) -> None:
    """Every tensor of ``model`` present in ``weights`` with the same shape, or one clear error."""
    try:
        with safe_open(str(weights), framework="pt") as fh:
            shapes = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
    except (SafetensorError, OSError) as exc:
        raise TrainedModelError(
            f"{weights}: not a readable safetensors file ({exc}); re-copy the trial's "
            "model.safetensors"
        ) from None
    parts = shape_mismatches({k: tuple(v.shape) for k, v in model.state_dict().items()}, shapes)
    if parts:
        raise TrainedModelError(
            f"{weights} does not fit {what}: {'; '.join(parts)}; the weights belong to another "
            "model: copy the trial's own model.safetensors next to its config.json"
        )


def load_trained_model(
    meta: Mapping[str, Any] | str | Path, weights: str | Path, device: str | torch.device = "cpu"
) -> TrainedModel:
    """Rebuild a trial's network from its ``config.json`` and load ``model.safetensors``.

    ``meta`` is the parsed ``config.json`` (``config``, ``class_names``, ``trial_id``) or its
    path. The network is built with :func:`create_model` (no pretrained weights: the file
    holds them all), every tensor's shape is checked against the file first, so a wrong file
    is refused with the offending names, and nothing is ever unpickled.
    """
    weights = Path(weights)
    meta_path = Path(meta) if isinstance(meta, (str, Path)) else weights.parent / "config.json"
    if isinstance(meta, (str, Path)):
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as exc:
            raise TrainedModelError(
                f"{meta_path}: cannot read the trial's config.json ({exc})"
            ) from None
    if not isinstance(meta, Mapping) or not isinstance(meta.get("config"), Mapping):
        raise TrainedModelError(f"{meta_path}: expected a JSON object with a 'config' object")
    if not weights.is_file():
        raise TrainedModelError(f"{weights} does not exist; the trial's best weights are missing")
    try:
        cfg = load_config(dict(meta["config"]), model=TrialConfig)
    except ConfigError as exc:
        raise TrainedModelError(f"{meta_path}: the trial config is not valid: {exc}") from None
    class_names = [str(c) for c in (meta.get("class_names") or [])]
    if len(class_names) < 2:
        raise TrainedModelError(
            f"{meta_path}: class_names {class_names!r} must list the model's classes; re-run "
            "the trial so the search stage writes them"
        )
    mc = cfg.model
    model = create_model(
        mc.backbone,
        len(class_names),
        head=mc.head,
        head_hidden=mc.head_hidden,
        dropout=mc.dropout,
        pretrained=False,
        pre_logits=mc.pre_logits,
    )
    what = f"{mc.backbone} with head {mc.head} and {len(class_names)} classes"
    _check_weight_shapes(model, weights, what)
    try:
        # load_model (not load_file + load_state_dict): it restores tied weights too
        load_model(model, str(weights), strict=True)
    except (RuntimeError, OSError) as exc:
        raise TrainedModelError(
            f"{weights} does not fit {what}: {str(exc).splitlines()[0]}"
        ) from None
    model.to(device).eval()
    norm = model_data_config(mc.backbone)
    return TrainedModel(
        trial_id=str(meta.get("trial_id") or weights.parent.name),
        backbone=mc.backbone,
        model=model,
        config=cfg,
        class_names=class_names,
        mean=tuple(float(v) for v in norm["mean"]),
        std=tuple(float(v) for v in norm["std"]),
    )
