"""Surfaces from rendered depth: pixels back to world points, and the normals of those points, which
point clouds, meshes and the model's `normals` output are made of.

Cameras are as the rasterizer takes them: `viewmat` world-to-camera [4, 4] in OpenCV axes (x right,
y down, z forward), `K` [3, 3] in pixels, pixel centres at (u + 0.5, v + 0.5); depth is camera z.
"""

import torch
import torch.nn.functional as F
from torch import Tensor


def camera_points(depth: Tensor, K: Tensor) -> Tensor:
    """Camera-space points [H, W, 3] of a z-depth image [H, W, 1]."""
    height, width = depth.shape[:2]
    v, u = torch.meshgrid(
        torch.arange(height, dtype=depth.dtype, device=depth.device) + 0.5,
        torch.arange(width, dtype=depth.dtype, device=depth.device) + 0.5,
        indexing="ij",
    )
    z = depth[..., 0]
    x = (u - K[0, 2]) / K[0, 0] * z
    y = (v - K[1, 2]) / K[1, 1] * z
    return torch.stack([x, y, z], dim=-1)


def to_world(points: Tensor, viewmat: Tensor) -> Tensor:
    """Camera-space points [..., 3] in world coordinates."""
    rotation, translation = viewmat[:3, :3], viewmat[:3, 3]
    return (points - translation) @ rotation


def depth_normals(
    depth: Tensor, alpha: Tensor, K: Tensor, viewmat: Tensor, min_alpha: float = 0.5, reach: int = 3
) -> Tensor:
    """World-space unit normals [H, W, 3] of the surface a z-depth image shows: the cross product of
    the back-projected points' differences `reach` pixels either side (fewer where that would leave
    the surface), turned to face the camera. (Against the normals of a TSDF mesh fused from all of
    lego's training views, over 25 test views: median error 21.8 degrees with a reach of 3, 23.2
    with 2, 26.9 with 1, 24.5 with 5; each Gaussian's shortest axis composited instead: 23.4, and a
    second render.) Zero where the pixel or a neighbour is below `min_alpha` (no surface there)."""
    points = camera_points(depth, K)
    solid = alpha[..., 0] >= min_alpha
    normals = torch.zeros_like(points)
    r = reach  # most pixels: whole-image slices
    d_u = points[r:-r, 2 * r :] - points[r:-r, : -2 * r]
    d_v = points[2 * r :, r:-r] - points[: -2 * r, r:-r]
    around = solid[r:-r, r:-r] & solid[r:-r, 2 * r :] & solid[r:-r, : -2 * r] & solid[2 * r :, r:-r] & solid[: -2 * r, r:-r]
    normals[r:-r, r:-r] = F.normalize(torch.linalg.cross(d_u, d_v), dim=-1) * around[..., None]
    for r in range(reach - 1, 0, -1):  # the few left near an edge: only those pixels
        unfilled = torch.zeros_like(solid)
        unfilled[r:-r, r:-r] = solid[r:-r, r:-r] & (normals[r:-r, r:-r] == 0).all(-1)
        rows, cols = unfilled.nonzero(as_tuple=True)
        inside = solid[rows, cols + r] & solid[rows, cols - r] & solid[rows + r, cols] & solid[rows - r, cols]
        rows, cols = rows[inside], cols[inside]
        d_u = points[rows, cols + r] - points[rows, cols - r]
        d_v = points[rows + r, cols] - points[rows - r, cols]
        normals[rows, cols] = F.normalize(torch.linalg.cross(d_u, d_v), dim=-1)
    # the camera looks down +z: a normal facing it has a negative dot with the point's direction
    facing = torch.sign((normals * points).sum(-1, keepdim=True))
    return (-normals * torch.where(facing == 0, 1.0, facing)) @ viewmat[:3, :3]  # rotation^T on each row
