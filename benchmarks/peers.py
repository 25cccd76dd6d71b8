"""TinySplat's CPU rasterizers beside gswarp 1.0.5 on Warp's CPU device, in one run on the same
Gaussians and camera (the real scene's first camera, 300x400), forward alone and forward+backward,
printed as ratios. Runs in the peer's own environment (benchmarks/peers.sh), which holds torch and
gswarp; TinySplat's core needs only torch.

gswarp's image is checked against the plain dense rasterizer of benchmarks/rasterizer.py (every pixel
against every Gaussian, no tiles) where that is affordable, and against ours at every size: gswarp keeps
Inria's rules (alpha clamped at 0.99, not 0.999; a Gaussian cut at 3 sigma), so the images agree
closely (about 100 dB PSNR) but not bitwise.
"""

import argparse

import rasterizer
import torch
from common import psnr, scene_camera, scene_gaussians, timed



def ours(backend: str):
    return lambda g, camera, backward: rasterizer.ours(g, camera, backward, backend)[0]


def gswarp_rasterizer(camera):
    import warp

    # without it Warp runs its tile kernels one lane wide on the CPU: wrong images, NaN gradients
    warp.config.enable_cpu_blocks = True
    warp.config.quiet = True
    from gswarp import GaussianRasterizationSettings, GaussianRasterizer

    viewmat, K, width, height = camera
    fx, fy = K[0, 0, 0].item(), K[0, 1, 1].item()
    tanfovx, tanfovy = width / (2 * fx), height / (2 * fy)
    near, far = 0.01, 100.0
    proj = torch.zeros(4, 4)
    proj[0, 0], proj[1, 1] = 1 / tanfovx, 1 / tanfovy
    proj[3, 2], proj[2, 2], proj[2, 3] = 1.0, far / (far - near), -far * near / (far - near)
    world_view = viewmat[0].T  # Inria's matrices are transposed
    settings = GaussianRasterizationSettings(
        image_height=height, image_width=width, tanfovx=tanfovx, tanfovy=tanfovy, bg=torch.zeros(3),
        scale_modifier=1.0, viewmatrix=world_view, projmatrix=world_view @ proj.T, sh_degree=3,
        campos=torch.inverse(viewmat[0])[:3, 3], prefiltered=False, debug=False,
    )  # fmt: skip
    return GaussianRasterizer(settings)


def gswarp(camera):
    rasterizer = gswarp_rasterizer(camera)

    def run(g, _camera, backward: bool):
        params = {k: v.clone().requires_grad_(backward) for k, v in g.items()}
        # Inria's API takes unit quaternions (its trainer normalises them first); ours normalises itself
        rotations = torch.nn.functional.normalize(params["quats"], dim=-1)
        means2d = torch.zeros_like(params["means"], requires_grad=backward)
        out = rasterizer(
            means3D=params["means"], means2D=means2d, opacities=params["opacities"][:, None], shs=params["sh"],
            scales=params["scales"], rotations=rotations,
        )  # fmt: skip
        image = out[0] if isinstance(out, tuple) else out  # [3, H, W]
        if backward:
            image.sum().backward()
        return image.detach().permute(1, 2, 0)

    return run


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("sizes", type=int, nargs="*", default=[10_000, 50_000, 200_000])
    parser.add_argument("--dense-max", type=int, default=10_000, help="largest size checked against the dense one")
    args = parser.parse_args()
    camera = scene_camera(0)
    runs = {"cpp": ours("cpp"), "torch": ours("torch"), "gswarp": gswarp(camera)}
    print(f"threads: torch {torch.get_num_threads()} (ours); Warp's CPU kernels run on one")
    print(f"{'gaussians':>9} {'':>6} " + " ".join(f"{n + ' ms':>11}" for n in runs) + "   cpp vs gswarp   gswarp image")
    for n in args.sizes:
        g = scene_gaussians(n)
        with torch.no_grad():
            images = {name: run(g, camera, False) for name, run in runs.items()}
        check = f"{psnr(images['gswarp'], images['cpp']):.1f} dB to ours"
        if n <= args.dense_max:
            with torch.no_grad():
                reference = rasterizer.dense(g, camera, backward=False)
            check += f", {psnr(images['gswarp'], reference):.1f} dB to dense (ours {psnr(images['cpp'], reference):.1f})"
        for what, backward in (("fwd", False), ("fwd+bwd", True)):
            seconds = {}
            for name, run in runs.items():
                if backward:
                    seconds[name] = timed(lambda run=run: run(g, camera, True), repeat=3)
                else:
                    with torch.no_grad():
                        seconds[name] = timed(lambda run=run: run(g, camera, False), repeat=3)
            row = f"{n:>9} {what:>7} " + " ".join(f"{s * 1e3:>11.0f}" for s in seconds.values())
            row += f"   {seconds['gswarp'] / seconds['cpp']:>6.2f}x faster"
            print(row + (f"   {check}" if backward else ""))


if __name__ == "__main__":
    main()
