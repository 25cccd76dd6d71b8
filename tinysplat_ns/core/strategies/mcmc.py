"""3D Gaussian Splatting as Markov Chain Monte Carlo (Kheradmand et al. 2024): the Gaussians are
samples; dead ones (opacity below `min_opacity`) are relocated onto live ones, the count grows by 5%
per refinement up to a cap, and positions get noise shaped by each Gaussian's covariance. Defaults
are the paper's (as in gsplat's `MCMCStrategy`); it runs on CUDA with gsplat's kernels and on any
other device with TinySplat's PyTorch versions of them."""

from dataclasses import dataclass

import torch

from tinysplat_ns.core.losses.regularizers import mean_opacity, mean_scale
from tinysplat_ns.core.strategies import ops
from tinysplat_ns.core.strategies.base import Strategy


@dataclass
class MCMC(Strategy):
    cap_max: int = 1_000_000
    """Most Gaussians it grows to (the model's max-gaussians, when lower, wins)."""
    noise_lr: float = 5e5
    """Position noise, as a multiple of the means' learning rate."""
    refine_start_iter: int = 500
    refine_stop_iter: int = 25_000
    refine_every: int = 100
    min_opacity: float = 0.005
    """Gaussians below this opacity are dead and get relocated."""
    opacity_reg: float = 0.01
    """Weight of the mean-opacity penalty that frees Gaussians for relocation."""
    scale_reg: float = 0.01
    """Weight of the mean-scale penalty."""

    def set_budget(self, max_gaussians: int) -> None:
        self._max_gaussians = max_gaussians

    @property
    def cap(self) -> int:
        budget = getattr(self, "_max_gaussians", 0)
        return min(self.cap_max, budget) if budget > 0 else self.cap_max

    def step_post_backward(self, params, optimizers, state, step, info):
        if self.refine_start_iter < step < self.refine_stop_iter and step % self.refine_every == 0:
            dead = torch.sigmoid(params["opacities"].flatten()) <= self.min_opacity
            ops.relocate(params, optimizers, state, dead, self.min_opacity)
            n = len(params["means"])
            ops.sample_add(params, optimizers, state, min(self.cap, int(1.05 * n)) - n, self.min_opacity)
        lr = optimizers["means"].param_groups[0]["lr"]
        ops.inject_noise_to_position(params, scale=lr * self.noise_lr)

    def regularization(self, params):
        terms = {}
        if self.opacity_reg > 0:
            terms["mcmc_opacity_reg"] = self.opacity_reg * mean_opacity(params)
        if self.scale_reg > 0:
            terms["mcmc_scale_reg"] = self.scale_reg * mean_scale(params)
        return terms
