"""Adaptive density control of 3DGS (clone, split, prune, opacity reset), as gsplat's
`DefaultStrategy` does it (its parameter surgery is plain PyTorch and runs on any device), plus a
hard cap on the number of Gaussians so that a laptop run cannot run out of memory."""

from dataclasses import dataclass
from typing import Any, Dict

import torch
from gsplat.strategy import DefaultStrategy
from gsplat.strategy.ops import remove


@dataclass
class ADCStrategy(DefaultStrategy):
    max_gaussians: int = 0
    """Hard cap on the number of Gaussians (0: none). Past it, the least opaque are dropped."""

    def step_post_backward(self, params, optimizers, state, step, info, packed=False):
        super().step_post_backward(params, optimizers, state, step, info, packed=packed)
        enforce_budget(params, optimizers, state, self.max_gaussians)


@torch.no_grad()
def enforce_budget(params, optimizers, state: Dict[str, Any], max_gaussians: int) -> int:
    """Remove the lowest-opacity Gaussians until at most `max_gaussians` remain (0: no cap).
    Parameters, their Adam moments and the per-Gaussian strategy state shrink together."""
    n = len(params["means"])
    if max_gaussians <= 0 or n <= max_gaussians:
        return 0
    weakest = torch.topk(params["opacities"].flatten(), n - max_gaussians, largest=False).indices
    mask = torch.zeros(n, dtype=torch.bool, device=params["means"].device)
    mask[weakest] = True
    remove(params=params, optimizers=optimizers, state=state, mask=mask)
    return n - max_gaussians
