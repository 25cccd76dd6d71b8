"""Gaussians moved by a similarity transform (tinysplat_ns/core/frames.py): what each Gaussian is
(centre, covariance, colour seen from each direction) follows the transform, and a moved scene seen
by the moved camera renders the same image."""

import math

import pytest
import torch
from test_rasterizer import camera, real_gaussians

from tinysplat_ns.core.frames import compose, inverse, transform_cameras, transform_gaussians
from tinysplat_ns.core.rasterization import rasterization
from tinysplat_ns.core.sh import eval_sh


def similarity(reflect: bool, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    rotation, _ = torch.linalg.qr(torch.randn(3, 3, generator=gen, dtype=torch.float64))
    rotation = rotation * torch.sign(torch.linalg.det(rotation))  # a rotation
    if reflect:
        rotation = rotation @ torch.diag(torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64))
    translation = torch.randn(3, 1, generator=gen, dtype=torch.float64)
    return torch.cat([rotation, translation], dim=1), 0.37


def as_ply_gaussians(g):
    return {
        "means": g["means"],
        "scales": g["log_scales"],
        "quats": g["quats"],
        "opacities": torch.logit(g["opacities"])[:, None],
        "features_dc": g["sh"][:, 0],
        "features_rest": g["sh"][:, 1:],
    }


def covariance(gaussians):
    """Sigma = R S S R^T from the (unnormalised) quaternion, by the textbook rotation matrix."""
    w, x, y, z = torch.nn.functional.normalize(gaussians["quats"], dim=-1).unbind(-1)
    rotation = torch.stack(
        [
            torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            torch.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )
    scaled = rotation * torch.exp(gaussians["scales"])[:, None, :]
    return scaled @ scaled.transpose(1, 2)


@pytest.mark.parametrize("reflect", [False, True])
def test_centres_covariances_and_colours_follow_the_transform(reflect):
    gaussians = as_ply_gaussians(real_gaussians(200, opaque=False))
    matrix, scale = similarity(reflect)
    rotation, translation = matrix[:, :3], matrix[:, 3]
    moved = transform_gaussians(gaussians, (matrix, scale))

    torch.testing.assert_close(moved["means"], scale * (gaussians["means"] @ rotation.T + translation))
    expected = scale**2 * rotation @ covariance(gaussians) @ rotation.T
    torch.testing.assert_close(covariance(moved), expected, rtol=1e-10, atol=1e-12)
    dirs = torch.nn.functional.normalize(torch.randn(200, 3, dtype=torch.float64), dim=-1)
    coeffs = torch.cat([gaussians["features_dc"][:, None], gaussians["features_rest"]], dim=1)
    moved_coeffs = torch.cat([moved["features_dc"][:, None], moved["features_rest"]], dim=1)
    torch.testing.assert_close(eval_sh(3, dirs @ rotation.T, moved_coeffs), eval_sh(3, dirs, coeffs))
    assert torch.equal(moved["opacities"], gaussians["opacities"])

    back = transform_gaussians(moved, inverse((matrix, scale)))
    for name in ("means", "scales", "features_rest"):
        torch.testing.assert_close(back[name], gaussians[name], rtol=1e-10, atol=1e-12)
    q, q_back = gaussians["quats"], back["quats"]
    torch.testing.assert_close(q_back * torch.sign((q * q_back).sum(-1, keepdim=True)), q)


def test_moved_scene_seen_by_the_moved_camera_renders_the_same_image():
    gaussians = as_ply_gaussians(real_gaussians(300, opaque=False, seed=1))
    matrix, scale = similarity(reflect=False, seed=2)
    rotation, translation = matrix[:, :3], matrix[:, 3:]
    viewmat, K, (width, height) = camera(5)
    viewmat, K = viewmat[None], K[None]
    # camera-to-world [R_c | c] becomes [R R_c | s (R c + t)]; the world-to-camera of that
    cam_to_world = torch.linalg.inv(viewmat[0])
    moved_cam = torch.eye(4, dtype=torch.float64)
    moved_cam[:3, :3] = rotation @ cam_to_world[:3, :3]
    moved_cam[:3, 3:] = scale * (rotation @ cam_to_world[:3, 3:] + translation)
    images = []
    for g, view in (
        (gaussians, viewmat),
        (transform_gaussians(gaussians, (matrix, scale)), torch.linalg.inv(moved_cam)[None]),
    ):
        image, _, _ = rasterization(
            means=g["means"], quats=g["quats"], scales=torch.exp(g["scales"]),
            opacities=torch.sigmoid(g["opacities"][:, 0]),
            colors=torch.cat([g["features_dc"][:, None], g["features_rest"]], dim=1),
            viewmats=view, Ks=K, width=width, height=height, sh_degree=3,
        )  # fmt: skip
        images.append(image)
    assert images[0].std() > 0.05
    assert math.isclose(float((images[0] - images[1]).abs().max()), 0.0, abs_tol=1e-9)


def homogeneous(similarity_):
    matrix, scale = similarity_
    out = torch.eye(4, dtype=torch.float64)
    out[:3] = matrix * scale  # x -> s (R x + t)
    return out


def test_composed_similarity_applies_inner_then_outer():
    outer, inner = similarity(False, seed=1), similarity(False, seed=2)
    points = torch.randn(50, 4, dtype=torch.float64)
    points[:, 3] = 1
    expected = points @ (homogeneous(outer) @ homogeneous(inner)).T
    assert torch.allclose(points @ homogeneous(compose(outer, inner)).T, expected, atol=1e-12)


def test_cameras_follow_nerfstudios_dataparser_between_two_runs_coordinates():
    """Two parses of the real scene (Nerfstudio's default orientation, centring and scaling, and
    none of them with a scale factor): A's test cameras taken through its transform back to the
    dataset and on through B's are B's test cameras, as Nerfstudio computes them."""
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
    from scene import scene_dir

    parsed = []
    for options in ({}, {"orientation_method": "none", "center_method": "none", "auto_scale_poses": False,
                         "scale_factor": 1.7}):  # fmt: skip
        outputs = NerfstudioDataParserConfig(data=scene_dir(), **options).setup().get_dataparser_outputs("test")
        transform = (outputs.dataparser_transform.double(), float(outputs.dataparser_scale))
        parsed.append((outputs.cameras.camera_to_worlds.double(), transform))
    (poses_a, to_a), (poses_b, to_b) = parsed
    assert not torch.allclose(poses_a, poses_b, atol=0.1)
    moved = transform_cameras(poses_a, compose(to_b, inverse(to_a)))
    assert torch.allclose(moved, poses_b, atol=1e-5), (moved - poses_b).abs().max()
