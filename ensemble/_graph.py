"""The exported ensemble as one torch module: pre-processed images in, class probabilities out.

Input: float32 NCHW RGB in [0, 1] at the manifest's size (after the client's crop and resize).
Each member normalises with its own backbone's mean/std (and resizes when it was trained at
another size), each member's fold models' softmax probabilities are averaged (as
``ensemble.members._member_test`` averages the folds' test probabilities), then:

the method's combiner (``ensemble.combiners``, stored in ``weights.json``) picks the module
from :data:`COMBINERS` by its kind, never by the method's name:

* ``weighted_average`` mixes members as ``EnsembleMethod.predict_proba`` does (Eq. 2):
  ``sum_k w_k P_k / sum_k w_k``, rows renormalised;
* ``logistic_stacker`` applies the fitted logistic regression to ``Stacking._features``: the
  members' log-odds of the positive class (binary) or log-probabilities (more classes),
  clipped at 1e-7.

Everything is plain tensor arithmetic so the dynamo ONNX exporter and ``torch.jit.trace`` see
the same graph.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ensemble.calibration import TEMPERATURE_CLIP
from ensemble.combiners import LOGISTIC_STACKER, STACKING_CLIP, WEIGHTED_AVERAGE, Combiner
from trainers._registry import Registry

__all__ = [
    "COMBINERS",
    "MemberNet",
    "StackingEnsemble",
    "TemperatureScaled",
    "WeightedEnsemble",
    "create_ensemble_module",
]


class MemberNet(nn.Module):
    """One member: its fold networks on the member's own normalisation; mean fold probabilities."""

    def __init__(
        self,
        folds: Sequence[nn.Module],
        mean: Sequence[float],
        std: Sequence[float],
        input_size: int,
        export_size: int,
    ) -> None:
        super().__init__()
        self.folds = nn.ModuleList(folds)
        self.register_buffer(
            "mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
        )
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))
        self.input_size = int(input_size)
        self.resize = int(input_size) != int(export_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.resize:
            # antialiased bilinear, like PIL's BILINEAR used in training (close, not bit-equal)
            x = nn.functional.interpolate(
                x,
                size=(self.input_size, self.input_size),
                mode="bilinear",
                align_corners=False,
                antialias=True,
            )
        x = (x - self.mean) / self.std
        probs = [torch.softmax(f(x).float(), dim=1) for f in self.folds]
        return torch.stack(probs, dim=0).mean(dim=0)


class WeightedEnsemble(nn.Module):
    """``sum_k w_k P_k / sum_k w_k`` over members, rows renormalised (``predict_proba``)."""

    def __init__(self, members: Sequence[MemberNet], weights: Sequence[float]) -> None:
        super().__init__()
        if len(members) != len(weights) or not members:
            raise ValueError(
                f"one weight per member needed, got {len(weights)} for {len(members)} member(s)"
            )
        self.members = nn.ModuleList(members)
        self.register_buffer("weights", torch.tensor(list(weights), dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        P = torch.stack([m(x) for m in self.members], dim=0)  # [members, n, k]
        mix = (P * self.weights.view(-1, 1, 1)).sum(dim=0) / self.weights.sum()
        return mix / mix.sum(dim=1, keepdim=True)


class StackingEnsemble(nn.Module):
    """The stacker's logistic regression on the members' log-odds / log-probabilities."""

    def __init__(
        self,
        members: Sequence[MemberNet],
        coef: Sequence[Sequence[float]],
        intercept: Sequence[float],
        n_classes: int,
    ) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        coef_t = torch.tensor(coef, dtype=torch.float64)
        binary = n_classes == 2
        features = len(members) if binary else len(members) * n_classes
        rows = 1 if binary else n_classes
        if tuple(coef_t.shape) != (rows, features) or len(intercept) != rows:
            raise ValueError(
                f"stacking coef must be [{rows}, {features}] and intercept [{rows}] for "
                f"{len(members)} member(s) and {n_classes} classes, got coef "
                f"{tuple(coef_t.shape)} and intercept [{len(intercept)}]; was every class "
                "present in the validation labels? Re-run `wen ensemble`"
            )
        self.binary = binary
        self.register_buffer("coef", coef_t.float())
        self.register_buffer("intercept", torch.tensor(list(intercept), dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        P = torch.stack([m(x) for m in self.members], dim=1)  # [n, members, k]
        logp = torch.log(P.clamp(min=STACKING_CLIP, max=1.0))
        if self.binary:
            z = (logp[:, :, 1] - logp[:, :, 0]) @ self.coef.t() + self.intercept  # [n, 1]
            p1 = torch.sigmoid(z)
            return torch.cat([1.0 - p1, p1], dim=1)
        z = logp.flatten(1) @ self.coef.t() + self.intercept
        return torch.softmax(z, dim=1)


#: The graph of each combiner kind: ``(members, weights, params, n_classes) -> module``.
COMBINERS: Registry[
    Callable[[Sequence[MemberNet], Sequence[float], Mapping[str, Any], int], nn.Module]
] = Registry("ensemble combiner", key="combiner.kind")
COMBINERS.register(WEIGHTED_AVERAGE)(
    lambda members, weights, _params, _k: WeightedEnsemble(members, weights)
)


@COMBINERS.register(LOGISTIC_STACKER)
def _stacker(
    members: Sequence[MemberNet],
    _weights: Sequence[float],
    params: Mapping[str, Any],
    n_classes: int,
) -> nn.Module:
    if params.get("coef") is None or params.get("intercept") is None:
        raise ValueError("the stacker needs its fitted coef and intercept (weights.json)")
    return StackingEnsemble(members, params["coef"], params["intercept"], n_classes)


class TemperatureScaled(nn.Module):
    """``softmax(log(p) / T)`` on an ensemble's probabilities, p clipped at 1e-7 first
    (``ensemble.calibration.apply_temperature``)."""

    def __init__(self, ensemble: nn.Module, temperature: float) -> None:
        super().__init__()
        self.ensemble = ensemble
        self.register_buffer("temperature", torch.tensor(float(temperature), dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logp = torch.log(self.ensemble(x).clamp(min=TEMPERATURE_CLIP, max=1.0))
        return torch.softmax(logp / self.temperature, dim=1)


def create_ensemble_module(
    members: Sequence[MemberNet],
    combiner: Combiner,
    weights: Sequence[float],
    n_classes: int,
    temperature: float | None = None,
) -> nn.Module:
    """The ensemble of ``members`` under a method's ``combiner`` (then its ``temperature``,
    when one was fitted), in eval mode."""
    factory = COMBINERS.get(combiner.kind)
    module = factory(members, weights, combiner.params, n_classes)
    if temperature is not None:
        module = TemperatureScaled(module, temperature)
    return module.eval()
