"""The per-Gaussian half of the compiled CPU path: `project.cpp` computes `projection.project_gaussians`
and the SH colours of `sh.eval_sh` (offset by 0.5, clamped at 0, as the rasterizer takes them) with
hand-written backward passes. Used where the compiled rasterizer is; the PyTorch versions stay for the
rest (float64, MPS, optimised intrinsics). A camera pose that is being optimised gets its gradient
through PyTorch ops around the kernels (`project_gaussians`, `ShadeCpp`).
"""

import torch
from torch import Tensor

from tinysplat_ns.core.frames import quaternion_product, rotation_quaternion
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


def _projection(outputs, with_compensation: bool) -> Projection:
    means2d, conics, depths, radii, compensations = outputs
    return Projection(means2d, conics, depths, radii, compensations if with_compensation else None)


def project_gaussians(
    means, quats, scales, viewmats, Ks, width: int, height: int, eps2d=0.3, near_plane=0.01, far_plane=1e10,
    with_compensation=False,
) -> Projection:  # fmt: skip
    """As `projection.project_gaussians`, compiled (float32). Cameras whose pose is being optimised
    (`viewmats.requires_grad`) get their gradient through the Gaussians: the projection of Gaussians
    (R m + t, R q) by the identity camera is that of (m, q) by the camera [R | t], so each camera's
    Gaussians are moved into its frame by PyTorch ops, which autograd carries back to R and t (two
    passes over the means and quaternions, against the PyTorch projection's dozens)."""
    settings = (width, height, eps2d, near_plane, far_plane, with_compensation)
    if not viewmats.requires_grad:
        return _projection(ProjectGaussiansCpp.apply(means, quats, scales, viewmats, Ks, *settings), with_compensation)
    identity = torch.eye(4, dtype=viewmats.dtype, device=viewmats.device)[None]
    per_camera = []
    for viewmat, K in zip(viewmats, Ks):
        rotation, translation = viewmat[:3, :3], viewmat[:3, 3]
        moved_means = means @ rotation.T + translation
        moved_quats = quaternion_product(rotation_quaternion(rotation), quats)
        per_camera.append(ProjectGaussiansCpp.apply(moved_means, moved_quats, scales, identity, K[None], *settings))
    return _projection([torch.cat(outputs) for outputs in zip(*per_camera)], with_compensation)


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
        means, campos, coeffs, colors = ctx.saved_tensors
        v_means, v_coeffs = build.ops().sh_backward(ctx.degree, means, campos, coeffs, colors, v_colors.contiguous())
        v_campos = None
        if ctx.needs_input_grad[2]:  # an optimised camera: the colours see it through means - campos only
            if len(campos) == 1:
                v_campos = -v_means.sum(0, keepdim=True)
            else:
                v_campos = torch.stack([
                    -build.ops().sh_backward(ctx.degree, means, campos[c : c + 1], coeffs, colors[c : c + 1],
                                             v_colors[c : c + 1].contiguous())[0].sum(0)
                    for c in range(len(campos))
                ])  # fmt: skip
        return None, v_means, v_campos, v_coeffs


def sh_colors(degree: int, means: Tensor, viewmats: Tensor, coeffs: Tensor) -> Tensor:
    """max(0, eval_sh(degree, means - camera centre, coeffs) + 0.5) for each camera: [C, N, 3]."""
    return ShadeCpp.apply(degree, means, camera_centers(viewmats), coeffs)
