"""One training step of synthetic Gaussians in each of two processes (tests/test_distributed.py
compares it with one process's step on both views):

    torchrun --standalone --nproc-per-node 2 tests/distributed_step.py OUT SIZES

Each process renders its view (SIZES: "same size" or "other sizes"), averages the gradients and
hands ADC the step's views through tinysplat_ns/core/distributed.py; OUT.<rank> gets its gradients
and ADC's statistics."""

import sys

import torch
import torch.distributed as dist

from tinysplat_ns.core.distributed import Collectives
from tinysplat_ns.core.rasterization import rasterization
from tinysplat_ns.core.strategies.adc import ADC

SIZES = {"same size": [(48, 36), (48, 36)], "other sizes": [(48, 36), (64, 40)]}


def views_and_scene(sizes):
    gen = torch.Generator().manual_seed(3)
    n = 400
    params = {
        "means": torch.randn(n, 3, generator=gen) * 0.6 + torch.tensor([0.0, 0.0, 3.0]),
        "quats": torch.randn(n, 4, generator=gen),
        "scales": torch.rand(n, 3, generator=gen) * 1.5 - 4.0,
        "opacities": torch.randn(n, 1, generator=gen),
        "colors": torch.rand(n, 3, generator=gen),
    }
    params = {k: torch.nn.Parameter(v) for k, v in params.items()}
    views = []
    for index, (width, height) in enumerate(sizes):
        viewmat = torch.eye(4)
        viewmat[0, 3] = 0.3 * index  # the second camera a little to the side
        K = torch.tensor([[40.0, 0, width / 2], [0, 40.0, height / 2], [0, 0, 1]])
        views.append((viewmat[None], K[None], width, height, torch.rand(height, width, 3, generator=gen)))
    return params, views


def view_loss(params, view, weight):
    """`weight` times the view's L1 loss, and the rasterizer's info."""
    viewmat, K, width, height, target = view
    image, _, info = rasterization(
        params["means"], params["quats"], torch.exp(params["scales"]), torch.sigmoid(params["opacities"]).squeeze(-1),
        params["colors"], viewmat, K, width, height, backend="torch",
    )  # fmt: skip
    info["means2d"].retain_grad()
    return weight * (image[0] - target).abs().mean(), info


def adc_accumulating():
    adc = ADC(refine_start_iter=10**6, refine_scale2d_stop_iter=10**6)  # statistics (radii too), no refinement
    return adc, adc.initialize_state()


def one_view_of_two(out: str, sizes) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    params, views = views_and_scene(sizes)
    loss, info = view_loss(params, views[rank], 1.0)
    loss.backward()
    collectives = Collectives()
    collectives.mean_gradients(list(params.values()))
    adc, state = adc_accumulating()
    adc.step_post_backward(params, {}, state, 1, collectives.views_of_step(info))
    torch.save({"grads": {k: p.grad for k, p in params.items()}, "state": state}, f"{out}.{rank}")
    dist.destroy_process_group()


if __name__ == "__main__":
    one_view_of_two(sys.argv[1], SIZES[sys.argv[2]])
