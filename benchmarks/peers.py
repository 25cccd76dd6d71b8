"""Third-party differentiable Gaussian rasterizers on the CPU, in their own environment
(benchmarks/peers.sh), at the sizes of benchmarks/rasterizer.py: each one either runs (time printed)
or says why it cannot (its error printed)."""

import sys
import traceback

import torch
from common import scene_camera, scene_gaussians, timed


def taichi_splatting(g, camera):
    import taichi as ti

    ti.init(arch=ti.cpu)
    from taichi_splatting.data_types import Gaussians3D
    from taichi_splatting.perspective import CameraParams
    from taichi_splatting.renderer import render_gaussians

    viewmat, K, width, height = camera
    params = {k: v.clone().requires_grad_() for k, v in g.items()}
    gaussians = Gaussians3D(
        position=params["means"], log_scaling=params["scales"].log(), rotation=params["quats"],
        alpha_logit=torch.logit(params["opacities"])[:, None], feature=params["sh"].transpose(1, 2).contiguous(),
        batch_size=(len(params["means"]),),
    )  # fmt: skip
    cam = CameraParams(
        T_image_camera=K[0], T_camera_world=viewmat[0], near_plane=0.01, far_plane=100.0, image_size=(width, height)
    )

    def step():
        out = render_gaussians(gaussians, cam, use_sh=True)
        out.image.sum().backward()

    return timed(step, repeat=3)


def gswarp(g, camera):
    from gswarp import GaussianRasterizationSettings, GaussianRasterizer

    viewmat, K, width, height = camera
    params = {k: v.clone().requires_grad_() for k, v in g.items()}
    fx, fy = K[0, 0, 0].item(), K[0, 1, 1].item()
    tanfovx, tanfovy = width / (2 * fx), height / (2 * fy)
    near, far = 0.01, 100.0
    proj = torch.zeros(4, 4)
    proj[0, 0], proj[1, 1] = 1 / tanfovx, 1 / tanfovy
    proj[3, 2], proj[2, 2], proj[2, 3] = 1.0, far / (far - near), -far * near / (far - near)
    world_view = viewmat[0].T
    settings = GaussianRasterizationSettings(
        image_height=height, image_width=width, tanfovx=tanfovx, tanfovy=tanfovy, bg=torch.zeros(3),
        scale_modifier=1.0, viewmatrix=world_view, projmatrix=world_view @ proj.T, sh_degree=3,
        campos=torch.inverse(viewmat[0])[:3, 3], prefiltered=False,
    )  # fmt: skip
    rasterizer = GaussianRasterizer(settings)
    means2d = torch.zeros_like(params["means"], requires_grad=True)

    def step():
        image = rasterizer(
            means3D=params["means"], means2D=means2d, opacities=params["opacities"][:, None], shs=params["sh"],
            scales=params["scales"], rotations=params["quats"],
        )  # fmt: skip
        image = image[0] if isinstance(image, tuple) else image
        image.sum().backward()

    return timed(step, repeat=3)


def main():
    camera = scene_camera(0)
    sizes = [int(s) for s in sys.argv[1:]] or [10_000, 50_000, 200_000]
    for name, run in (("taichi-splatting", taichi_splatting), ("gswarp", gswarp)):
        for n in sizes:
            try:
                seconds = run(scene_gaussians(n), camera)
                print(f"{name} {n}: forward+backward {seconds * 1e3:.0f} ms on the CPU")
            except BaseException as e:  # an import-time build failure can be a SystemExit
                last = traceback.format_exception_only(type(e), e)[-1].strip()
                # the deepest frame inside the peer's own package says what it was doing
                own = [f for f in traceback.extract_tb(e.__traceback__) if name.replace("-", "_") in f.filename]
                where = (
                    f" (in {own[-1].filename.split('site-packages/')[-1]}:{own[-1].lineno}: {own[-1].line})"
                    if own
                    else ""
                )
                print(f"{name} {n}: does not run on the CPU: {last[:200]}{where}")
                break


if __name__ == "__main__":
    main()
