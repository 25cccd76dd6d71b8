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
    """Hard cap on the number of Gaussians (0: none). Growth stops at it: only the steepest
    gradients still grow while there is room; whatever still exceeds it goes, least opaque first."""

    def step_post_backward(self, params, optimizers, state, step, info, packed=False):
        super().step_post_backward(params, optimizers, state, step, info, packed=packed)
        enforce_budget(params, optimizers, state, self.max_gaussians)

    @torch.no_grad()
    def _grow_gs(self, params, optimizers, state, step):
        if self.max_gaussians > 0:
            room = self.max_gaussians - len(params["means"])
            if room <= 0:
                return 0, 0
            # Each clone or split adds one Gaussian: keep the `room` steepest candidates.
            grads = state["grad2d"] / state["count"].clamp_min(1)
            if int((grads > self.grow_grad2d).sum()) > room:
                keep = torch.zeros_like(grads, dtype=torch.bool)
                keep[torch.topk(grads, room).indices] = True
                state["grad2d"][~keep] = 0.0  # the statistics are reset after this refinement anyway
        return super()._grow_gs(params, optimizers, state, step)


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
