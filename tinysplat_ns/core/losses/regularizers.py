"""Terms on the Gaussians themselves, whatever the view."""

from dataclasses import dataclass
from typing import Mapping

import torch
from torch import Tensor

from tinysplat_ns.core.losses.base import LossInputs, LossTerm


def mean_scale(params: Mapping[str, Tensor]) -> Tensor:
    """Mean of all axis lengths: pulls every Gaussian smaller (3DGS-MCMC's scale penalty)."""
    return torch.exp(params["scales"]).mean()


def mean_opacity(params: Mapping[str, Tensor]) -> Tensor:
    """Mean opacity: lets Gaussians that do not earn their keep fade (3DGS-MCMC's opacity penalty)."""
    return torch.sigmoid(params["opacities"]).mean()


@dataclass
class ScaleReg(LossTerm):
    """Mean axis length of the Gaussians (world units): penalises large Gaussians."""

    def __call__(self, inputs: LossInputs) -> Tensor:
        return mean_scale(inputs.params)


@dataclass
class OpacityReg(LossTerm):
    """Mean opacity of the Gaussians."""

    def __call__(self, inputs: LossInputs) -> Tensor:
        return mean_opacity(inputs.params)


@dataclass
class AnisotropyReg(LossTerm):
    """Mean of max(longest / shortest axis - max_ratio, 0): penalises needle-like Gaussians. The
    penalty of PhysGaussian (Xie et al. 2024)."""

    max_ratio: float = 10.0
    """Axis ratio allowed without penalty."""

    def __call__(self, inputs: LossInputs) -> Tensor:
        log_scales = inputs.params["scales"]
        ratio = torch.exp(log_scales.amax(dim=-1) - log_scales.amin(dim=-1))
        return torch.clamp(ratio - self.max_ratio, min=0).mean()
