"""Diagnosis of OpenSplat's scoring: its `.ply` (`--keep-crs`, transforms.json's frame) rendered for one
view by the rules its CPU rasterizer keeps (read from its source at 15b7e80: forward alpha capped at
0.999, each Gaussian drawn in a box of 3 marginal sigmas + 2 px, no near-plane cull, its fixed background
colour, and its compositing order), each rule switchable, against the photo and against its own
`--val-render` of that view. Written here from that description, one Gaussian at a time: slow.

Its compositing order is not by depth. rasterizer/gsplat-cpu/gsplat_cpu.cpp sorts the Gaussians by
`camDepths.data_ptr()` read as a dense array, but `camDepths` is the z column of the [N, 3] projected
points (`pProj.index({"...", 2})`, a view with stride 3): Gaussian a's key is element a + 2 of that
array read row by row, an x, y or z of Gaussian (a + 2) / 3. Its models are trained to look right in
that order, so a renderer that composites front to back (ours, gsplat's, Inria's, a web viewer) shows
them otherwise.

    .venv/bin/python benchmarks/opensplat_conventions.py RUN/opensplat.ply RUN/scene 0020.jpg RUN/renders/2000.png

(RUN: a kept `benchmarks/opensplat.py --val-image` run: its scene copy, .ply and renders.)
"""

import argparse
import json
import math
from pathlib import Path

import imageio.v3 as iio
import torch
from common import psnr

from tinysplat_ns.core.projection import quat_to_rotmat
from tinysplat_ns.core.sh import eval_sh
from tinysplat_ns.core.splat_files import read_splats

ITS_BACKGROUND = torch.tensor([0.6130, 0.0101, 0.3984])
OUR_BACKGROUND = torch.tensor([0.1490, 0.1647, 0.2157])  # tinysplat_model's eval background for "random"


def its_scale(frames) -> float:
    """The factor its trainer scales transforms.json's frame by (after centring the cameras): one over
    the largest coordinate of a camera centre."""
    centres = torch.tensor([f["transform_matrix"] for f in frames], dtype=torch.float64)[:, :3, 3]
    return 1.0 / (centres - centres.mean(0)).abs().max().item()


def its_order(p, fx, fy, width, height):
    """The order its CPU rasterizer composites Gaussians at camera-frame points `p` (its own, scaled
    frame) in (see above): float32 NDC points from its OpenGL projection (near 0.001, far 1000, w clamped
    at 1e-6), keys read from the flat array at offset 2."""
    near, far = 0.001, 1000.0
    z = p[:, 2]
    w = z.clamp(min=1e-6)
    ndc_z = ((far + near) * z - far * near) / (far - near) / w
    ndc = torch.stack([2 * fx / width * p[:, 0] / w, 2 * fy / height * p[:, 1] / w, ndc_z], -1).float()
    return torch.argsort(ndc.reshape(-1)[2 : 2 + len(p)], stable=True)


def render(
    g, c2w, fx, fy, width, height, degree=2, background=ITS_BACKGROUND, alpha_cap=0.999, box=True, near=None,
    by_depth=False, frame_scale=1.0,
):  # fmt: skip
    """[H, W, 3] of Gaussians `g` (read_splats' fields) seen from OpenGL camera-to-world `c2w`;
    `frame_scale`: `its_scale` of the run, for its compositing order."""
    c2w = torch.tensor(c2w, dtype=torch.float64)
    rot = c2w[:3, :3] @ torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))  # OpenCV axes
    w2c = rot.T
    p = g["means"].double() @ w2c.T - w2c @ c2w[:3, 3]
    m = quat_to_rotmat(g["quats"].double()) * g["scales"].double().exp()[:, None, :]
    z = p[:, 2]
    lim_x, lim_y = 1.3 * 0.5 * width / fx, 1.3 * 0.5 * height / fy
    tx, ty = z * (p[:, 0] / z).clamp(-lim_x, lim_x), z * (p[:, 1] / z).clamp(-lim_y, lim_y)
    jac = torch.zeros(len(p), 2, 3, dtype=torch.float64)
    jac[:, 0, 0], jac[:, 0, 2] = fx / z, -fx * tx / z**2
    jac[:, 1, 1], jac[:, 1, 2] = fy / z, -fy * ty / z**2
    t = jac @ w2c
    cov2d = t @ m @ m.transpose(1, 2) @ t.transpose(1, 2) + 0.3 * torch.eye(2, dtype=torch.float64)
    det = (cov2d[:, 0, 0] * cov2d[:, 1, 1] - cov2d[:, 0, 1] ** 2).clamp(min=1e-6)
    a, b, c = cov2d[:, 1, 1] / det, -cov2d[:, 0, 1] / det, cov2d[:, 0, 0] / det
    u = fx * p[:, 0] / z + width / 2 - 0.5  # its pixel j sits at coordinate j
    v = fy * p[:, 1] / z + height / 2 - 0.5
    sh = torch.cat([g["features_dc"][:, None], g["features_rest"]], 1).double()
    rgb = eval_sh(degree, g["means"].double() - c2w[:3, 3], sh).add(0.5).clamp(min=0)
    opacity = torch.sigmoid(g["opacities"].double()[:, 0])
    half_x, half_y = 3 * cov2d[:, 0, 0].sqrt(), 3 * cov2d[:, 1, 1].sqrt()
    if not box:  # where alpha >= 1/255 reaches
        reach = 2 * torch.log(opacity.clamp(min=1 / 255) * 255)
        half_x, half_y = (reach * c / (a * c - b * b)).sqrt(), (reach * a / (a * c - b * b)).sqrt()
    image = torch.zeros(height, width, 3, dtype=torch.float64)
    trans = torch.ones(height, width, dtype=torch.float64)
    done = torch.zeros(height, width, dtype=torch.bool)
    order = torch.argsort(z, stable=True) if by_depth else its_order(frame_scale * p, fx, fy, width, height)
    for i in order.tolist():
        # its projection sends Gaussians behind the camera far off screen (w clamped at 1e-6)
        if z[i] <= (near or 0) or not (math.isfinite(u[i]) and math.isfinite(v[i])):
            continue
        r0, r1 = max(0, math.floor(v[i] - half_y[i]) - 2), min(height, math.ceil(v[i] + half_y[i]) + 2)
        c0, c1 = max(0, math.floor(u[i] - half_x[i]) - 2), min(width, math.ceil(u[i] + half_x[i]) + 2)
        if r0 >= r1 or c0 >= c1:
            continue
        dy, dx = torch.meshgrid(v[i] - torch.arange(r0, r1), u[i] - torch.arange(c0, c1), indexing="ij")
        sigma = 0.5 * (a[i] * dx * dx + c[i] * dy * dy) + b[i] * dx * dy
        alpha = (opacity[i] * torch.exp(-sigma)).clamp(max=alpha_cap)
        t_here, done_here = trans[r0:r1, c0:c1], done[r0:r1, c0:c1]
        drawn = ~done_here & (sigma >= 0) & (alpha >= 1 / 255)
        t_next = t_here * (1 - alpha)
        ends = drawn & (t_next <= 1e-4)  # the pixel is done and this Gaussian not drawn, as in its loop
        done_here |= ends
        drawn &= ~ends
        image[r0:r1, c0:c1] += torch.where(drawn, alpha * t_here, 0)[..., None] * rgb[i]
        t_here.copy_(torch.where(drawn, t_next, t_here))
    return (image + trans[..., None] * background.double()).float()


def render_frame(g, frame, scale: float, **options):
    """`render` of the view of a transforms.json `frame`, `scale` being `its_scale` of its training run."""
    return render(
        g, frame["transform_matrix"], frame["fl_x"], frame["fl_y"], frame["w"], frame["h"], frame_scale=scale, **options
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("ply", type=Path, help="its .ply, written with --keep-crs")
    parser.add_argument("scene", type=Path, help="the scene copy it trained on (transforms.json, images/)")
    parser.add_argument("image", help="the held-out photo's file name")
    parser.add_argument("render", type=Path, help="its own --val-render of that photo")
    args = parser.parse_args()
    frames = json.loads((args.scene / "transforms.json").read_text())["frames"]
    frame = next(f for f in frames if Path(f["file_path"]).name == args.image)
    g = read_splats(args.ply)
    photo = torch.from_numpy(iio.imread(args.scene / "images" / args.image)[..., :3]).float() / 255
    own = torch.from_numpy(iio.imread(args.render)[..., :3]).float() / 255
    print(f"{len(g['means'])} Gaussians; its own render against the photo {psnr(own, photo):.2f} dB")
    ours = dict(background=OUR_BACKGROUND, alpha_cap=0.99, box=False, near=0.01, by_depth=True)
    variants = {
        "its rules": {}, "our background": {"background": OUR_BACKGROUND}, "alpha cap 0.99": {"alpha_cap": 0.99},
        "no 3-sigma box": {"box": False}, "near plane 0.01": {"near": 0.01},
        "depth order": {"by_depth": True}, "all five of ours": ours,
        "SH degree 0": {"degree": 0}, "SH degree 1": {"degree": 1},
    }  # fmt: skip
    scale = its_scale(frames)
    for label, options in variants.items():
        image = render_frame(g, frame, scale, **options)
        print(f"{label:>18}: against the photo {psnr(image, photo):6.2f} dB, against its render {psnr(image, own):6.2f} dB")


if __name__ == "__main__":
    main()
