"""The compiled CPU rasterizer (`rasterize.cpp`): the same tile plan, compositing rule, inputs and
outputs as `rasterize_torch.rasterize_to_pixels`, which stays the fallback: float64, more than 4
channels, MPS, or where the kernels do not build (build.py).
"""

from typing import Optional, Tuple

import torch
from torch import Tensor

from tinysplat_ns.core.kernels import build
from tinysplat_ns.core.rasterize_torch import TilePlan, keep_freed_memory, plan_from_lists

MAX_CHANNELS = 4
MAX_TILE_SIZE = 16


def supports(means: Tensor, channels: int, tile_size: int) -> bool:
    return (
        means.device.type == "cpu"
        and means.dtype == torch.float32
        and 1 <= channels <= MAX_CHANNELS
        and tile_size <= MAX_TILE_SIZE
        and build.available()
    )


def plan_tiles(means2d, conics, opacities, depths, radii, width: int, height: int, tile_size=8, chunk=32) -> TilePlan:
    """`rasterize_torch.plan_tiles` (the same arguments, the same plan, its Gaussian ids int32), compiled:
    a radix sort by depth and a counting sort by tile instead of sorting the (tile, Gaussian) pairs."""
    with torch.no_grad():
        per_tile, isect_gids = build.ops().plan_tiles(
            means2d.contiguous(), conics.contiguous(), opacities.contiguous(), radii.contiguous(),
            depths.contiguous(), width, height, tile_size,
        )  # fmt: skip
        return plan_from_lists(per_tile, isect_gids, width, height, tile_size, chunk)


def _plan_args(plan: TilePlan):
    return (
        plan.tile_ids.contiguous(), plan.tile_start.contiguous(), plan.tile_count.contiguous(),
        plan.isect_gids.contiguous(), plan.width, plan.height, plan.tile_size,
    )  # fmt: skip


class RasterizeToPixelsCpp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d, conics, colors, opacities, background, plan: TilePlan, absgrad_out: Optional[Tensor]):
        keep_freed_memory()  # measured here too: 150 -> 127 ms a forward+backward at 200k Gaussians
        inputs = [t.detach().contiguous() for t in (means2d, conics, colors, opacities)]
        bg = None if background is None else background.detach().contiguous()
        image, alpha, last, t_final = build.ops().rasterize_forward(*inputs, bg, *_plan_args(plan))
        ctx.plan, ctx.absgrad_out = plan, absgrad_out
        ctx.has_background = background is not None
        ctx.save_for_backward(*inputs, bg if bg is not None else torch.empty(0), last, t_final)
        return image, alpha

    @staticmethod
    def backward(ctx, v_image, v_alpha):
        plan: TilePlan = ctx.plan
        means2d, conics, colors, opacities, bg, last, t_final = ctx.saved_tensors
        bg = bg if ctx.has_background else None
        v_means2d, v_conics, v_opacities, v_colors, *v_abs = build.ops().rasterize_backward(
            means2d, conics, colors, opacities, bg, *_plan_args(plan), last, t_final,
            v_image.contiguous(), v_alpha.contiguous(), ctx.absgrad_out is not None,
        )  # fmt: skip
        v_background = None
        if ctx.has_background and ctx.needs_input_grad[4]:
            v_background = (t_final[..., None] * v_image).sum((0, 1))
        if ctx.absgrad_out is not None:
            ctx.absgrad_out += v_abs[0]
        return v_means2d, v_conics, v_colors, v_opacities, v_background, None, None


def rasterize_to_pixels(
    means2d: Tensor,  # [N, 2]
    conics: Tensor,  # [N, 3]
    colors: Tensor,  # [N, D], D <= 4
    opacities: Tensor,  # [N]
    plan: TilePlan,
    background: Optional[Tensor] = None,  # [D]
    absgrad_out: Optional[Tensor] = None,  # [N, 2]
) -> Tuple[Tensor, Tensor]:
    """As `rasterize_torch.rasterize_to_pixels`: image [H, W, D] and alpha [H, W, 1] of one camera."""
    return RasterizeToPixelsCpp.apply(means2d, conics, colors, opacities, background, plan, absgrad_out)
