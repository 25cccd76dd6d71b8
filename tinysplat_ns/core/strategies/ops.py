"""Parameter and optimizer surgery for the strategies, as pure functions in gsplat's style.

On CUDA the MCMC moves use gsplat's own ops; on any other device the two pieces that gsplat only
has as CUDA kernels are computed here in PyTorch: the relocation formula of 3DGS-MCMC (Kheradmand
et al. 2024, Eq. 9) and the covariance-shaped position noise. The surgery itself goes through
gsplat's helper (pinned gsplat 1.4), which moves each parameter's Adam moments with it.
"""

import math
from functools import lru_cache
from typing import Any, Dict, Tuple

import torch
from gsplat.strategy import ops as gsplat_ops
from gsplat.strategy.ops import _multinomial_sample, _update_param_with_optimizer
from torch import Tensor

from tinysplat_ns.core.projection import quat_to_rotmat

RELOCATION_N_MAX = 51  # gsplat's table size: a Gaussian is split in at most 51 copies at once


@lru_cache(maxsize=None)
def _relocation_weights(n_max: int) -> Tensor:
    """W[n, k] = (-1)^k / sqrt(k + 1) * sum_{i=k+1}^{n} C(i-1, k): the denominator of Eq. 9,
    sum_{i=1}^{n} sum_{k=0}^{i-1} C(i-1, k) (-1)^k o'^(k+1) / sqrt(k+1), is then W[n] . o'^(1..n_max)."""
    w = torch.zeros(n_max + 1, n_max, dtype=torch.float64)
    for n in range(1, n_max + 1):
        for k in range(n):
            w[n, k] = (-1) ** k / math.sqrt(k + 1) * sum(math.comb(i - 1, k) for i in range(k + 1, n + 1))
    return w


def compute_relocation(opacities: Tensor, scales: Tensor, ratios: Tensor) -> Tuple[Tensor, Tensor]:
    """Opacity and scales of each of `ratios` copies that together render like the original
    Gaussian (3DGS-MCMC, Eq. 9): o' = 1 - (1 - o)^(1/n), s' = s * o / denominator(n, o').
    In float64 (the alternating binomial sum cancels badly in float32), returned in the inputs' dtype."""
    n_max = RELOCATION_N_MAX
    n = ratios.clamp(1, n_max).long()
    o = opacities.double()
    new_o = 1.0 - torch.pow(1.0 - o, 1.0 / n.double())
    powers = new_o[:, None] ** torch.arange(1, n_max + 1, dtype=torch.float64, device=o.device)
    denominator = (_relocation_weights(n_max).to(o.device)[n] * powers).sum(-1)
    new_scales = scales.double() * (o / denominator)[:, None]
    return new_o.to(opacities.dtype), new_scales.to(scales.dtype)


def gsplat_binomials(device: torch.device) -> Tensor:
    """The table C(n, k), n, k < RELOCATION_N_MAX, that gsplat's CUDA relocation kernel takes."""
    table = [[math.comb(n, k) for k in range(RELOCATION_N_MAX)] for n in range(RELOCATION_N_MAX)]
    return torch.tensor(table, dtype=torch.float32, device=device)


def _relocation(opacities: Tensor, scales: Tensor, sampled: Tensor, min_opacity: float) -> Tuple[Tensor, Tensor]:
    """New opacity and scale of the sampled Gaussians, which now share their mass with copies."""
    ratios = torch.bincount(sampled)[sampled] + 1
    if opacities.is_cuda:
        from gsplat.relocation import compute_relocation as gsplat_relocation

        binoms = gsplat_binomials(opacities.device)
        new_o, new_s = gsplat_relocation(opacities[sampled], scales[sampled], ratios, binoms)
    else:
        new_o, new_s = compute_relocation(opacities[sampled], scales[sampled], ratios)
    eps = torch.finfo(torch.float32).eps
    return torch.clamp(new_o, min=min_opacity, max=1.0 - eps), new_s


def _set_shared_mass(name: str, p: Tensor, sampled: Tensor, new_o: Tensor, new_s: Tensor) -> None:
    """Give the drawn Gaussians their share of opacity and scale (their copies then take the same)."""
    if name == "opacities":
        p[sampled] = torch.logit(new_o).reshape(p[sampled].shape)
    elif name == "scales":
        p[sampled] = torch.log(new_s)


@torch.no_grad()
def relocate(params, optimizers, state: Dict[str, Any], dead: Tensor, min_opacity: float) -> int:
    """Move the `dead` Gaussians onto live ones drawn in proportion to opacity; each drawn Gaussian
    and its copies share its mass (Eq. 9). The drawn ones' Adam moments restart at zero."""
    dead_ids = dead.nonzero(as_tuple=True)[0]
    alive_ids = (~dead).nonzero(as_tuple=True)[0]
    if len(dead_ids) == 0 or len(alive_ids) == 0:
        return 0
    opacities = torch.sigmoid(params["opacities"].flatten())
    sampled = alive_ids[_multinomial_sample(opacities[alive_ids], len(dead_ids), replacement=True)]
    new_o, new_s = _relocation(opacities, torch.exp(params["scales"]), sampled, min_opacity)

    def param_fn(name: str, p: Tensor) -> Tensor:
        _set_shared_mass(name, p, sampled, new_o, new_s)
        p[dead_ids] = p[sampled]
        return torch.nn.Parameter(p)

    def optimizer_fn(key: str, v: Tensor) -> Tensor:
        v[sampled] = 0
        return v

    _update_param_with_optimizer(param_fn, optimizer_fn, params, optimizers)
    for key, value in state.items():
        if isinstance(value, Tensor) and len(value) == len(dead):
            value[sampled] = 0
    return len(dead_ids)


@torch.no_grad()
def sample_add(params, optimizers, state: Dict[str, Any], n: int, min_opacity: float) -> int:
    """Add `n` Gaussians as copies of ones drawn in proportion to opacity, sharing their mass."""
    if n <= 0:
        return 0
    opacities = torch.sigmoid(params["opacities"].flatten())
    sampled = _multinomial_sample(opacities, n, replacement=True)
    new_o, new_s = _relocation(opacities, torch.exp(params["scales"]), sampled, min_opacity)

    def param_fn(name: str, p: Tensor) -> Tensor:
        _set_shared_mass(name, p, sampled, new_o, new_s)
        return torch.nn.Parameter(torch.cat([p, p[sampled]]))

    def optimizer_fn(key: str, v: Tensor) -> Tensor:
        return torch.cat([v, v.new_zeros((n, *v.shape[1:]))])

    size = len(opacities)
    _update_param_with_optimizer(param_fn, optimizer_fn, params, optimizers)
    for key, value in list(state.items()):
        if isinstance(value, Tensor) and len(value) == size:
            state[key] = torch.cat([value, value.new_zeros((n, *value.shape[1:]))])
    return n


@torch.no_grad()
def inject_noise_to_position(params, scale: float) -> None:
    """The MCMC exploration step: move each nearly transparent Gaussian by Gaussian noise shaped
    by its own covariance (opaque ones barely move)."""
    if params["means"].is_cuda:
        gsplat_ops.inject_noise_to_position(params=params, optimizers={}, state={}, scaler=scale)
        return
    opacities = torch.sigmoid(params["opacities"].flatten())
    rs = quat_to_rotmat(params["quats"]) * torch.exp(params["scales"])[:, None, :]
    covars = rs @ rs.transpose(1, 2)
    gate = torch.sigmoid(100.0 * ((1.0 - opacities) - 0.995))  # 0.62 at opacity 0, 0.5 at 0.005, ~0 past 0.05
    noise = torch.randn_like(params["means"]) * gate[:, None] * scale
    params["means"].add_(torch.einsum("nij,nj->ni", covars, noise))


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
    per_gaussian = {k: v for k, v in state.items() if isinstance(v, Tensor) and len(v) == n}
    gsplat_ops.remove(params=params, optimizers=optimizers, state=per_gaussian, mask=mask)
    state.update(per_gaussian)
    return n - max_gaussians
