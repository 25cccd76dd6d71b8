"""The loss as a weighted sum of named terms, built once from `name=weight` items."""

import math
from typing import Dict, Mapping, Sequence, Set

from torch import Tensor

from tinysplat_ns.core.losses.base import LossInputs, LossTerm

PUBLISHED_3DGS = ("l1=0.8", "dssim=0.2")  # (1 - 0.2) L1 + 0.2 D-SSIM, Kerbl et al. 2023


def parse_weights(items: Sequence[str], available: Sequence[str]) -> Dict[str, float]:
    """["l1=0.8", ...] -> {"l1": 0.8, ...}; a ValueError of one line that says what is wrong and
    what is valid."""
    weights: Dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if name not in available:
            raise ValueError(f"unknown loss term {name!r} in {item!r}; valid terms: {', '.join(available)}")
        if not sep:
            raise ValueError(f"{item!r} has no weight; write {name}=<weight>, e.g. {name}=0.1")
        try:
            weight = float(value)
        except ValueError:
            raise ValueError(f"{item!r}: the weight of {name} must be a number, e.g. {name}=0.1") from None
        if not (math.isfinite(weight) and weight >= 0):
            raise ValueError(f"{item!r}: the weight of {name} must be finite and >= 0")
        if name in weights:
            raise ValueError(f"{name} is given twice; give each term once")
        weights[name] = weight
    if not any(weights.values()):
        raise ValueError("all loss weights are 0; give at least one term a positive weight, e.g. l1=1")
    return weights


class WeightedLoss:
    """Terms with a positive weight, each evaluated and weighted on its own; a zero weight costs
    nothing."""

    def __init__(self, terms: Mapping[str, LossTerm], weights: Mapping[str, float]):
        self.weighted = [(name, weight, terms[name]) for name, weight in weights.items() if weight > 0]

    @property
    def needs(self) -> Set[str]:
        return {need for _, _, term in self.weighted for need in term.needs}

    def __call__(self, inputs: LossInputs) -> Dict[str, Tensor]:
        """Each weighted term by name (their sum is the loss)."""
        return {name: weight * term(inputs) for name, weight, term in self.weighted}
