"""Gaussians moved between coordinate frames by a similarity transform x -> s (R x + t), as
Nerfstudio's dataparsers move a dataset's own coordinates into a run's (dataparser_transforms.json):
centres, orientations, sizes and the view-dependent colour all follow."""

import json
from pathlib import Path
from typing import Mapping, Tuple

import torch
from torch import Tensor

from tinysplat_ns.core.ply import Gaussians, sh_degree_of
from tinysplat_ns.core.sh import sh_basis

Similarity = Tuple[Tensor, float]  # ([3, 4] rotation | translation, scale), float64


def read_dataparser_transform(path: Path) -> Similarity:
    """Nerfstudio's dataparser_transforms.json: dataset coordinates -> run coordinates."""
    saved = json.loads(Path(path).read_text())
    return torch.tensor(saved["transform"], dtype=torch.float64), float(saved["scale"])


def inverse(similarity: Similarity) -> Similarity:
    matrix, scale = similarity
    rotation_t = matrix[:, :3].T
    return torch.cat([rotation_t, -rotation_t @ matrix[:, 3:] * scale], dim=1), 1.0 / scale


def compose(outer: Similarity, inner: Similarity) -> Similarity:
    """The similarity that applies `inner`, then `outer`."""
    (outer_matrix, outer_scale), (inner_matrix, inner_scale) = outer, inner
    rotation = outer_matrix[:, :3] @ inner_matrix[:, :3]
    translation = outer_matrix[:, :3] @ inner_matrix[:, 3] + outer_matrix[:, 3] / inner_scale
    return torch.cat([rotation, translation[:, None]], dim=1), outer_scale * inner_scale


def rotation_quaternion(rotation: Tensor) -> Tensor:
    """w x y z of a proper rotation matrix (Shepperd's method: the largest of the four first)."""
    m = rotation
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    candidates = torch.stack([trace, m[0, 0], m[1, 1], m[2, 2]])
    i = int(candidates.argmax())
    if i == 0:
        w = torch.sqrt(1 + trace) / 2
        q = [w, (m[2, 1] - m[1, 2]) / (4 * w), (m[0, 2] - m[2, 0]) / (4 * w), (m[1, 0] - m[0, 1]) / (4 * w)]
    elif i == 1:
        x = torch.sqrt(1 + m[0, 0] - m[1, 1] - m[2, 2]) / 2
        q = [(m[2, 1] - m[1, 2]) / (4 * x), x, (m[0, 1] + m[1, 0]) / (4 * x), (m[0, 2] + m[2, 0]) / (4 * x)]
    elif i == 2:
        y = torch.sqrt(1 - m[0, 0] + m[1, 1] - m[2, 2]) / 2
        q = [(m[0, 2] - m[2, 0]) / (4 * y), (m[0, 1] + m[1, 0]) / (4 * y), y, (m[1, 2] + m[2, 1]) / (4 * y)]
    else:
        z = torch.sqrt(1 - m[0, 0] - m[1, 1] + m[2, 2]) / 2
        q = [(m[1, 0] - m[0, 1]) / (4 * z), (m[0, 2] + m[2, 0]) / (4 * z), (m[1, 2] + m[2, 1]) / (4 * z), z]
    return torch.stack(q)


def quaternion_product(a: Tensor, b: Tensor) -> Tensor:
    """a b (w x y z): the rotation b, then a."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        dim=-1,
    )


def sh_rotation(rotation: Tensor, degree: int) -> Tensor:
    """[K, K] matrix D (K = (degree+1)^2 - 1, the bands above 0) with colour'(R d) = colour(d) for
    coefficients D c: fitted per band on directions, where it is exact (rotations, reflections
    included, map each band onto itself)."""
    generator = torch.Generator().manual_seed(0)
    dirs = torch.nn.functional.normalize(torch.randn(256, 3, generator=generator, dtype=torch.float64), dim=-1)
    new = sh_basis(degree, dirs)[:, 1:]
    old = sh_basis(degree, dirs @ rotation)[:, 1:]  # the direction before the rotation: R^T d
    matrix = torch.zeros(new.shape[1], new.shape[1], dtype=torch.float64)
    for band in range(1, degree + 1):
        cols = slice(band * band - 1, (band + 1) ** 2 - 1)
        matrix[cols, cols] = torch.linalg.lstsq(new[:, cols], old[:, cols]).solution
    return matrix


def transform_gaussians(gaussians: Mapping[str, Tensor], similarity: Similarity) -> Gaussians:
    """The Gaussians in the frame x -> s (R x + t); R may be a rotation or a reflection."""
    matrix, scale = similarity
    rotation, translation = matrix[:, :3], matrix[:, 3]
    dtype = gaussians["means"].dtype
    out = dict(gaussians)
    out["means"] = (scale * (gaussians["means"].double() @ rotation.T + translation)).to(dtype)
    out["scales"] = gaussians["scales"] + torch.log(torch.tensor(scale, dtype=torch.float64)).to(dtype)
    # A reflection R turns an ellipsoid as the rotation -R does (an ellipsoid is symmetric)
    proper = rotation * torch.sign(torch.linalg.det(rotation))
    out["quats"] = quaternion_product(rotation_quaternion(proper), gaussians["quats"].double()).to(dtype)
    rest = gaussians["features_rest"]
    if rest.shape[1] > 0:
        rotate = sh_rotation(rotation, sh_degree_of(gaussians))
        out["features_rest"] = torch.einsum("ij,njc->nic", rotate, rest.double()).to(dtype)
    return out


def transform_cameras(camera_to_worlds: Tensor, similarity: Similarity) -> Tensor:
    """[..., 3, 4] camera-to-world poses in the frame x -> s (R x + t), R a rotation: the camera
    axes turn by R, the centres move (Nerfstudio's dataparsers move poses so)."""
    matrix, scale = similarity
    rotation, translation = matrix[:, :3], matrix[:, 3]
    dtype = camera_to_worlds.dtype
    poses = camera_to_worlds.double()
    axes = rotation @ poses[..., :3]
    centres = scale * (poses[..., 3] @ rotation.T + translation)
    return torch.cat([axes, centres[..., None]], dim=-1).to(dtype)


def transform_points(points: Tensor, similarity: Similarity) -> Tensor:
    """Points [..., 3] in the frame x -> s (R x + t); their normals turn by R alone."""
    matrix, scale = similarity
    return (scale * (points.double() @ matrix[:, :3].T + matrix[:, 3])).to(points.dtype)
