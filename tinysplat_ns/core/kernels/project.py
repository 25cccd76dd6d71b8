"""The per-Gaussian half of the compiled CPU path: `project.cpp` computes `projection.project_gaussians`
and the SH colours of `sh.eval_sh` (offset by 0.5, clamped at 0, as the rasterizer takes them) with
hand-written backward passes. Used where the compiled rasterizer is; the PyTorch versions stay for the
rest (float64, MPS, a camera that is being optimised: these give the cameras no gradient).
"""

import torch
from torch import Tensor

from tinysplat_ns.core.kernels import build
from tinysplat_ns.core.projection import Projection, camera_centers


def _detached(*tensors: Tensor):
    return [t.detach().float().contiguous() for t in tensors]


class ProjectGaussiansCpp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means, quats, scales, viewmats, Ks, width, height, eps2d, near_plane, far_plane, with_compensation):
        inputs = _detached(means, quats, scales, viewmats, Ks)
        settings = (width, height, eps2d, near_plane, far_plane)
        means2d, conics, depths, radii, compensations = build.ops().project_forward(
            *inputs, *settings, with_compensation
        )
        ctx.settings = settings
        ctx.save_for_backward(*inputs, radii)
        ctx.mark_non_differentiable(radii)
        return means2d, conics, depths, radii, compensations

    @staticmethod
    def backward(ctx, v_means2d, v_conics, v_depths, _v_radii, v_compensations):
        *inputs, radii = ctx.saved_tensors
        grads = [None if g is None else g.contiguous() for g in (v_means2d, v_conics, v_depths, v_compensations)]
        v_means, v_quats, v_scales = build.ops().project_backward(*inputs, *ctx.settings, radii, *grads)
        return v_means, v_quats, v_scales, *([None] * 8)


def project_gaussians(
    means, quats, scales, viewmats, Ks, width: int, height: int, eps2d=0.3, near_plane=0.01, far_plane=1e10,
    with_compensation=False,
) -> Projection:  # fmt: skip
    """As `projection.project_gaussians`, compiled (float32)."""
    means2d, conics, depths, radii, compensations = ProjectGaussiansCpp.apply(
        means, quats, scales, viewmats, Ks, width, height, eps2d, near_plane, far_plane, with_compensation
    )
    return Projection(means2d, conics, depths, radii, compensations if with_compensation else None)


class ShadeCpp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, degree, means, campos, coeffs):
        inputs = _detached(means, campos, coeffs)
        colors = build.ops().sh_forward(degree, *inputs)
        ctx.degree = degree
        ctx.save_for_backward(*inputs, colors)
        return colors

    @staticmethod
    def backward(ctx, v_colors):
        v_means, v_coeffs = build.ops().sh_backward(ctx.degree, *ctx.saved_tensors, v_colors.contiguous())
        return None, v_means, None, v_coeffs


def sh_colors(degree: int, means: Tensor, viewmats: Tensor, coeffs: Tensor) -> Tensor:
    """max(0, eval_sh(degree, means - camera centre, coeffs) + 0.5) for each camera: [C, N, 3]."""
    return ShadeCpp.apply(degree, means, camera_centers(viewmats.detach()), coeffs)
