"""An outside referee for exported meshes: open3d's ray caster (not TinySplat's renderer) shoots one
ray through each pixel centre of a camera, so a mesh's silhouette, depth and normals can be set
beside a photo's alpha and the splat's own renders."""

from typing import Tuple

import numpy as np
import open3d as o3d
import torch
from torch import Tensor

from tinysplat_ns.core.surfaces import camera_points, to_world


def raycast(mesh: o3d.geometry.TriangleMesh, K: Tensor, viewmat: Tensor, width: int, height: int) -> Tuple[Tensor, Tensor, Tensor]:
    """(hit [H, W] bool, z-depth [H, W], world normals facing the camera [H, W, 3], smooth-shaded) of the mesh seen
    by a pinhole camera (world-to-camera `viewmat`, OpenCV axes; pixel centres at halves)."""
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(mesh))
    # a ray through each pixel centre, its direction scaled to z = 1: the hit distance is the z-depth
    unit_z = camera_points(torch.ones(height, width, 1, dtype=torch.float64), K.double())
    centre = to_world(torch.zeros(3, dtype=torch.float64), viewmat.double())
    directions = unit_z @ viewmat[:3, :3].double()
    rays = torch.cat([centre.expand(height, width, 3), directions], dim=-1).float().numpy()
    result = scene.cast_rays(o3d.core.Tensor(rays))
    depth = torch.from_numpy(result["t_hit"].numpy()).float()
    hit = torch.isfinite(depth)
    # smooth shading: the hit triangle's vertex normals (area-weighted over their triangles) mixed by
    # the hit's barycentric weights, not the facet's own (a marching-cubes staircase)
    if not mesh.has_vertex_normals():
        mesh.compute_vertex_normals()
    vertex_normals = torch.from_numpy(np.asarray(mesh.vertex_normals)).float()
    triangles = torch.from_numpy(np.asarray(mesh.triangles)).long()
    ids = torch.from_numpy(result["primitive_ids"].numpy().astype(np.int64)).clamp(max=len(triangles) - 1)
    u, v = torch.from_numpy(result["primitive_uvs"].numpy()).float().unbind(-1)
    corners = vertex_normals[triangles[ids]]  # [H, W, 3 corners, 3]
    weights = torch.stack([1 - u - v, u, v], dim=-1)[..., None]
    normals = torch.nn.functional.normalize((corners * weights).sum(-2), dim=-1)
    facing = torch.sign((normals * torch.from_numpy(rays[..., 3:])).sum(-1, keepdim=True))
    return hit, torch.where(hit, depth, 0.0), -normals * torch.where(facing == 0, 1.0, facing)


def iou(a: Tensor, b: Tensor) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


def angle_degrees(a: Tensor, b: Tensor) -> Tensor:
    """Angles between unit vectors [..., 3]."""
    return torch.rad2deg(torch.arccos((a * b).sum(-1).clamp(-1, 1)))


def read_mesh(path) -> o3d.geometry.TriangleMesh:
    mesh = o3d.io.read_triangle_mesh(str(path))
    assert len(np.asarray(mesh.triangles)) > 0, f"{path}: no triangles"
    return mesh
