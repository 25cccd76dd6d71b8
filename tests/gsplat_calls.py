"""The calls TinySplat makes into gsplat, under whichever gsplat is installed (tests/test_gsplat_versions.py
runs this with gsplat 1.4.0 and with 1.5.3):
- the arguments the CUDA path hands `gsplat.rasterization` and `gsplat.relocation.compute_relocation`
  bind to the installed signatures (those run only on CUDA, so here their arguments are recorded);
- a short training of synthetic Gaussians through our rasterizer with ADC (clone, split, prune,
  opacity reset) and with MCMC (relocation, growth, noise), whose final parameters are saved.

    python tests/gsplat_calls.py OUT.pt
"""

import inspect
import sys
from unittest import mock

import gsplat
import gsplat.relocation
import gsplat.rendering
import gsplat.strategy.ops
import torch

from tinysplat_ns.core import rasterization as tinysplat_rasterization
from tinysplat_ns.core.strategies import ops
from tinysplat_ns.core.strategies.adc import ADC
from tinysplat_ns.core.strategies.mcmc import MCMC

W = H = 32


def scene(seed: int, n: int = 300):
    gen = torch.Generator().manual_seed(seed)
    return {
        "means": torch.randn(n, 3, generator=gen) * 0.6 + torch.tensor([0.0, 0.0, 3.0]),
        "quats": torch.randn(n, 4, generator=gen),
        "scales": torch.rand(n, 3, generator=gen) * 1.5 - 4.0,
        "opacities": torch.randn(n, 1, generator=gen),
        "colors": torch.rand(n, 3, generator=gen),
    }


def camera():
    K = torch.tensor([[40.0, 0, W / 2], [0, 40.0, H / 2], [0, 0, 1]])
    return torch.eye(4)[None], K[None]


def render(params, absgrad=False):
    viewmats, Ks = camera()
    return tinysplat_rasterization.rasterization(
        params["means"], params["quats"], torch.exp(params["scales"]), torch.sigmoid(params["opacities"]).squeeze(-1),
        params["colors"], viewmats, Ks, W, H, absgrad=absgrad, backend="torch",
    )  # fmt: skip


class LooksCuda(torch.Tensor):
    """A CPU tensor that takes our CUDA branches (which check `is_cuda`)."""

    @property
    def is_cuda(self):
        return True


def gsplat_call_arguments() -> None:
    """Our CUDA path's calls into gsplat, bound to the installed gsplat's signatures."""
    params = scene(0, 20)
    recorded = {}

    def record(name):
        def stand_in(*args, **kwargs):
            recorded[name] = (args, kwargs)
            raise StopIteration

        return stand_in

    calls = {
        "rasterization": (gsplat.rendering, lambda: render(params)),
        "compute_relocation": (
            gsplat.relocation,
            lambda: ops._relocation(params["opacities"][:, 0].as_subclass(LooksCuda), params["scales"], torch.arange(20), 0.005),
        ),
        "inject_noise_to_position": (
            gsplat.strategy.ops,
            lambda: ops.inject_noise_to_position({**params, "means": params["means"].as_subclass(LooksCuda)}, 0.1),
        ),
    }  # fmt: skip
    for name, (module, call) in calls.items():
        real = getattr(module, name)
        with (
            mock.patch.object(tinysplat_rasterization, "pick_backend", lambda *_: "gsplat"),
            mock.patch.object(module, name, record(name)),
        ):
            try:
                call()
            except StopIteration:
                pass
        args, kwargs = recorded[name]
        inspect.signature(real).bind(*args, **kwargs)  # TypeError names an argument it does not take


def train(strategy, steps: int = 24):
    torch.manual_seed(0)
    target, _, _ = render(scene(1))
    params = torch.nn.ParameterDict({k: torch.nn.Parameter(v) for k, v in scene(0).items()})
    optimizers = {k: torch.optim.Adam([p], lr=0.01) for k, p in params.items()}
    state = strategy.initialize_state(scene_scale=1.0)
    for step in range(steps):
        image, _, info = render(params, absgrad=strategy.uses_absgrad)
        strategy.step_pre_backward(params, optimizers, state, step, info)
        loss = (image - target).abs().mean() + sum(strategy.regularization(params).values(), torch.tensor(0.0))
        loss.backward()
        for optimizer in optimizers.values():
            optimizer.step()
            optimizer.zero_grad()
        strategy.step_post_backward(params, optimizers, state, step, info)
    return {k: p.detach().clone() for k, p in params.items()}


if __name__ == "__main__":
    gsplat_call_arguments()
    adc = ADC(refine_start_iter=3, refine_every=4, reset_every=12, grow_grad2d=2e-4, grow_scale3d=0.05)
    mcmc = MCMC(refine_start_iter=3, refine_every=4, cap_max=400)
    torch.save({"gsplat": gsplat.__version__, "adc": train(adc), "mcmc": train(mcmc)}, sys.argv[1])
