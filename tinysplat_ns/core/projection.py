"""EWA projection of 3D Gaussians to the image plane (pinhole), differentiable through autograd.

Conventions follow gsplat 1.4 so the CPU and CUDA backends render the same scene: `viewmats` are
world-to-camera in the OpenCV frame (x right, y down, z forward), the 2D covariance gets a low-pass
`eps2d` added, and the Jacobian clamps points to 1.3x the field of view as 3DGS does.
"""

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class Projection:
    means2d: Tensor  # [C, N, 2] pixel coordinates
    conics: Tensor  # [C, N, 3] inverse 2D covariance (a, b, c): sigma = a/2 dx^2 + b dx dy + c/2 dy^2
    depths: Tensor  # [C, N] camera-space z
    radii: Tensor  # [C, N] int32, 3-sigma radius in pixels; 0 means culled
    compensations: Optional[Tensor]  # [C, N] opacity factor of the anti-aliased mode


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """Rotation matrices [..., 3, 3] from quaternions [..., 4] (w, x, y, z), normalised here."""
    w, x, y, z = F.normalize(quats, dim=-1).unbind(-1)
    rows = (
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    )  # fmt: skip
    return torch.stack(rows, dim=-1).reshape(quats.shape[:-1] + (3, 3))


def camera_centers(viewmats: Tensor) -> Tensor:
    """World positions [C, 3] of the cameras of world-to-camera matrices [C, 4, 4]."""
    rot = viewmats[:, :3, :3]
    return -(rot.transpose(1, 2) @ viewmats[:, :3, 3:4])[..., 0]


def project_gaussians(
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4]
    scales: Tensor,  # [N, 3] (activated, not log)
    viewmats: Tensor,  # [C, 4, 4]
    Ks: Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    eps2d: float = 0.3,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    with_compensation: bool = False,
) -> Projection:
    rot_w2c = viewmats[:, :3, :3]  # [C, 3, 3]
    means_c = torch.einsum("cij,nj->cni", rot_w2c, means) + viewmats[:, None, :3, 3]
    x, y, z = means_c.unbind(-1)
    in_depth = (z > near_plane) & (z < far_plane)
    # Culled Gaussians still flow through the maths; a safe depth keeps their values finite so no
    # NaN reaches the gradients of the others.
    z = torch.where(in_depth, z, torch.ones_like(z))

    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    lim_x = 0.3 * 0.5 * width / fx
    lim_y = 0.3 * 0.5 * height / fy
    tx = z * torch.minimum(torch.maximum(x / z, -(cx / fx + lim_x)), (width - cx) / fx + lim_x)
    ty = z * torch.minimum(torch.maximum(y / z, -(cy / fy + lim_y)), (height - cy) / fy + lim_y)
    zero = torch.zeros_like(z)
    jac = torch.stack([fx / z, zero, -fx * tx / (z * z), zero, fy / z, -fy * ty / (z * z)], dim=-1)
    jac = jac.reshape(z.shape + (2, 3))  # [C, N, 2, 3]

    # cov2d = (J R_w2c M)(J R_w2c M)^T with M = R(q) S, so the 3x3 covariance is never formed.
    rs = quat_to_rotmat(quats) * scales[:, None, :]  # [N, 3, 3]
    jw = jac @ rot_w2c[:, None]  # [C, N, 2, 3]
    half = jw @ rs  # [C, N, 2, 3]
    cov2d = half @ half.transpose(-1, -2)  # [C, N, 2, 2]
    cxx, cxy, cyy = cov2d[..., 0, 0], cov2d[..., 0, 1], cov2d[..., 1, 1]
    det_orig = cxx * cyy - cxy * cxy
    cxx, cyy = cxx + eps2d, cyy + eps2d
    det = cxx * cyy - cxy * cxy
    valid = in_depth & (det > 0)
    det_safe = torch.where(valid, det, torch.ones_like(det))
    conics = torch.stack([cyy / det_safe, -cxy / det_safe, cxx / det_safe], dim=-1)
    compensations = None
    if with_compensation:
        compensations = torch.sqrt(torch.clamp(det_orig / det_safe, min=0.0))

    means2d = torch.stack([fx * x / z + cx, fy * y / z + cy], dim=-1)

    with torch.no_grad():
        mid = 0.5 * (cxx + cyy)
        radius = torch.ceil(3.0 * torch.sqrt(mid + torch.sqrt(torch.clamp(mid * mid - det, min=0.01))))
        u, v = means2d.unbind(-1)
        on_image = (u + radius > 0) & (u - radius < width) & (v + radius > 0) & (v - radius < height)
        radii = torch.where(valid & on_image, radius, torch.zeros_like(radius)).int()
    return Projection(means2d, conics, means_c[..., 2], radii, compensations)
