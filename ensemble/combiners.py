"""How a fitted ensemble method combines its members, as data (the method's export spec).

Every method reports one :class:`Combiner` after ``fit``. ``wen ensemble`` stores it in
``weights.json``; ``wen export`` builds the graph from it (``ensemble._graph.COMBINERS`` maps
each ``kind`` to a torch module) and copies it into the manifest. So export, the manifest and
the report read what a method *is* from its spec, and nothing branches on a method's name: a
new method names an existing kind, or adds a kind here and its module in ``_graph``.

>>> spec = weighted_average()
>>> spec.kind, spec.keeps_zero_weight_members
('weighted_average', False)
>>> Combiner.from_json(spec.to_json()) == spec
True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "LOGISTIC_STACKER",
    "STACKING_CLIP",
    "WEIGHTED_AVERAGE",
    "Combiner",
    "logistic_stacker",
    "weighted_average",
]

#: ``sum_k w_k P_k / sum_k w_k`` (Eq. 1/2): the weights are mixing weights.
WEIGHTED_AVERAGE = "weighted_average"
#: A logistic regression on the members' log-odds (binary) or log-probabilities.
LOGISTIC_STACKER = "logistic_stacker"
#: The stacker clips probabilities here before the log (fit, graph and manifest alike).
STACKING_CLIP = 1e-7


@dataclass(frozen=True)
class Combiner:
    """One fitted method's combination rule: what the exported graph and the manifest need.

    ``kind`` names the rule; ``params`` holds its fitted numbers (JSON values);
    ``weights_meaning`` says what the method's per-member weights are; members with weight 0
    are left out of the exported graph unless ``keeps_zero_weight_members``.
    """

    kind: str
    description: str
    weights_meaning: str
    keeps_zero_weight_members: bool = False
    params: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``from_json`` reads it back)."""
        return {
            "kind": self.kind,
            "description": self.description,
            "weights_meaning": self.weights_meaning,
            "keeps_zero_weight_members": self.keeps_zero_weight_members,
            "params": dict(self.params),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Combiner:
        """The combiner ``to_json`` wrote; a missing key raises ``KeyError`` naming it."""
        return cls(
            kind=str(data["kind"]),
            description=str(data["description"]),
            weights_meaning=str(data["weights_meaning"]),
            keeps_zero_weight_members=bool(data["keeps_zero_weight_members"]),
            params=dict(data["params"]),
        )


def weighted_average() -> Combiner:
    """The rule of every weighting method (``EnsembleMethod.predict_proba``)."""
    return Combiner(
        kind=WEIGHTED_AVERAGE,
        description="sum_k w_k P_k / sum_k w_k, rows renormalised (Eq. 2); P_k = mean of "
        "member k's fold networks' softmax probabilities",
        weights_meaning="mixing weight",
    )


def logistic_stacker(coef: list[list[float]], intercept: list[float]) -> Combiner:
    """A fitted logistic-regression stacker (``ensemble.methods.Stacking``); its per-member
    weights are importances, and its coefficients cover every member."""
    return Combiner(
        kind=LOGISTIC_STACKER,
        description="logistic-regression stacker on members' log-odds (binary) or "
        f"log-probabilities, clipped at {STACKING_CLIP:g}",
        weights_meaning="share of the stacker's absolute coefficients (importance)",
        keeps_zero_weight_members=True,
        params={"coef": coef, "intercept": intercept, "clip": STACKING_CLIP},
    )
