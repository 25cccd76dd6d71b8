"""A photo's bilateral grid applied to a render, as Nerfstudio's `lib_bilagrid.slice` does it (a 3x4
colour map read trilinearly at each pixel's position and grey level, then applied to its colour),
compiled (`bilateral_grid.cpp`) with a hand-written gradient for the grid and the image. The model takes
it for float32 CPU renders; Nerfstudio's (F.grid_sample) elsewhere.
"""

import torch
from torch import Tensor

from tinysplat_ns.core.kernels import build


def supports(grid: Tensor, rgb: Tensor) -> bool:
    """Whether `apply` takes these: a float32 CPU grid [12, L, H, W] and render [height, width, 3]."""
    on_cpu = grid.device.type == rgb.device.type == "cpu"
    return on_cpu and grid.dtype == rgb.dtype == torch.float32 and build.available()


class BilateralGridCpp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, grid, rgb):
        cells = grid.detach().permute(1, 2, 3, 0).contiguous()  # [L, H, W, 12]: a cell's map in one place
        image = rgb.detach().contiguous()
        ctx.save_for_backward(cells, image)
        return build.ops().bilateral_grid_forward(cells, image)

    @staticmethod
    def backward(ctx, v_out):
        v_rgb, v_cells = build.ops().bilateral_grid_backward(*ctx.saved_tensors, v_out.contiguous())
        return v_cells.permute(3, 0, 1, 2), v_rgb


def apply(grid: Tensor, rgb: Tensor) -> Tensor:
    """The render rgb [height, width, 3] through one photo's grid [12, L, H, W]; differentiable in both."""
    return BilateralGridCpp.apply(grid, rgb)
