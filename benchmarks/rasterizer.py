"""CPU rasterizer benchmark: TinySplat's compiled (cpp) and pure-PyTorch (torch) rasterizers against a
plain dense PyTorch rasterizer and against the machine's own limits, at 10k/50k/200k Gaussians on a
real 300x400 camera. A pair is one pixel against one Gaussian as the kernels evaluate it.

    .venv/bin/python benchmarks/rasterizer.py [--sizes 10000 50000 200000] [--dense-max 10000] [--ops]

The third-party CPU rasterizer that runs here (gswarp) is timed beside ours by benchmarks/peers.sh.
"""

import argparse
import collections
import time

import torch
from common import scene_camera, scene_gaussians, timed

from tinysplat_ns.core import rasterize_torch
from tinysplat_ns.core.kernels import build
from tinysplat_ns.core.kernels import rasterize as compiled_rasterizer
from tinysplat_ns.core.projection import camera_centers, project_gaussians
from tinysplat_ns.core.rasterization import rasterization
from tinysplat_ns.core.sh import eval_sh


def ours(g, camera, backward: bool, backend: str = "cpp"):
    params = {k: v.detach().requires_grad_(backward) for k, v in g.items()}  # fresh leaves, no copy
    viewmat, K, width, height = camera
    colors, alphas, info = rasterization(
        params["means"], params["quats"], params["scales"], params["opacities"], params["sh"], viewmat, K,
        width, height, sh_degree=3, backend=backend,
    )  # fmt: skip
    if backward:
        (colors.sum() + alphas.sum()).backward()
    return colors[0].detach(), info


def dense(g, camera, backward: bool, pixels_per_chunk: int = 2048):
    """The plain way in PyTorch: every pixel against every (depth-sorted) Gaussian, autograd for the
    backward pass, pixel chunks recomputed in the backward pass (checkpointing) to bound memory."""
    params = {k: v.clone().requires_grad_(backward) for k, v in g.items()}
    viewmat, K, width, height = camera
    proj = project_gaussians(params["means"], params["quats"], params["scales"], viewmat, K, width, height)
    colors = eval_sh(3, params["means"] - camera_centers(viewmat)[0], params["sh"]).add(0.5).clamp(min=0)
    keep = (proj.radii[0] > 0).nonzero().squeeze(1)
    keep = keep[torch.argsort(proj.depths[0, keep])]
    means2d, conics = proj.means2d[0, keep], proj.conics[0, keep]
    opacities, colors = params["opacities"][keep], colors[keep]
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    pixels = torch.stack([xs.reshape(-1), ys.reshape(-1)], -1).float() + 0.5

    def composite(pix, means2d, conics, opacities, colors):
        d = means2d[None] - pix[:, None]
        a, b, c = conics.unbind(-1)
        sigma = 0.5 * (a * d[..., 0] ** 2 + c * d[..., 1] ** 2) + b * d[..., 0] * d[..., 1]
        alpha = torch.clamp(opacities * torch.exp(-sigma), max=0.999)
        alpha = torch.where((sigma >= 0) & (alpha >= 1 / 255), alpha, torch.zeros_like(alpha))
        t_after = torch.cumprod(1 - alpha, dim=1)
        t_before = torch.cat([torch.ones_like(t_after[:, :1]), t_after[:, :-1]], 1)
        weight = torch.where(t_after > 1e-4, alpha * t_before, torch.zeros_like(alpha))
        return weight @ colors, weight.sum(1)

    out = []
    for start in range(0, len(pixels), pixels_per_chunk):
        pix = pixels[start : start + pixels_per_chunk]
        if backward:
            out.append(
                torch.utils.checkpoint.checkpoint(
                    composite, pix, means2d, conics, opacities, colors, use_reentrant=False
                )
            )
        else:
            out.append(composite(pix, means2d, conics, opacities, colors))
    rgb = torch.cat([o[0] for o in out])
    if backward:
        (rgb.sum() + torch.cat([o[1] for o in out]).sum()).backward()
    return rgb.detach().reshape(height, width, -1)


def pair_floor(flops: float, exps: float) -> float:
    """A floor for the per-pair work, in seconds: ~20 flops and one exp forward, ~40 flops and one exp
    backward (the backward recomputes the forward's exp), at matmul speed and in-cache exp speed."""
    return 60 / flops + 2 / exps


def machine_limits():
    """What the cores can do at best: float32 matmul GFLOP/s, memory copy GB/s (read + write, 64 MB
    into memory already mapped: a fresh buffer's page faults cost several times the copy on these
    machines), and exp per ns on data that stays in cache (so it measures arithmetic, not memory)."""
    a, b = torch.rand(2048, 2048), torch.rand(2048, 2048)
    flops = 2 * 2048**3 / timed(lambda: a @ b, repeat=5)
    big = torch.rand(64 * 2**20 // 4)
    into = torch.empty_like(big)
    copy = 2 * big.numel() * 4 / timed(lambda: into.copy_(big), repeat=5)
    x, out = torch.rand(64 * 1024), torch.empty(64 * 1024)

    def exps_in_cache():
        for _ in range(200):
            torch.exp(x, out=out)

    exps = 200 * x.numel() / timed(exps_in_cache, repeat=5)
    return flops, copy, exps


class PairCounter:
    """Counts the pixel-Gaussian pairs that the pure-PyTorch rasterizer's per-row kernels evaluate."""

    def __init__(self):
        self.pairs = 0
        self.forward_kernel = rasterize_torch._wave_forward

    def __enter__(self):
        def counting(features, coef, colors, t_start):
            self.pairs += coef.shape[0] * features.shape[0] * coef.shape[2]
            return self.forward_kernel(features, coef, colors, t_start)

        rasterize_torch._wave_forward = counting
        return self

    def __exit__(self, *exc):
        rasterize_torch._wave_forward = self.forward_kernel


def compiled_kernels(g, camera):
    """The pairs the compiled backward pass evaluates (each tile's Gaussians up to the last one that any
    of its pixels drew, against all of its pixels; the forward pass evaluates at least as many), and the
    two compositing kernels' own times in seconds, forward and backward, on this camera's plan."""
    viewmat, K, width, height = camera
    with torch.no_grad():
        proj = project_gaussians(g["means"], g["quats"], g["scales"], viewmat, K, width, height)
        colors = eval_sh(3, g["means"] - camera_centers(viewmat)[0], g["sh"]).add(0.5).clamp(min=0)
    plan = compiled_rasterizer.plan_tiles(
        proj.means2d[0], proj.conics[0], g["opacities"], proj.depths[0], proj.radii[0], width, height
    )
    gaussians = [t.contiguous() for t in (proj.means2d[0], proj.conics[0], colors, g["opacities"])]
    ops, plan_args = build.ops(), compiled_rasterizer._plan_args(plan)
    _, alpha, last, t_final = ops.rasterize_forward(*gaussians, None, *plan_args)
    v_image, v_alpha = torch.ones(height, width, 3), torch.ones_like(alpha)
    forward = timed(lambda: ops.rasterize_forward(*gaussians, None, *plan_args), repeat=9)
    backward = timed(lambda: ops.rasterize_backward(*gaussians, None, *plan_args, last, t_final, v_image, v_alpha, False), repeat=9)
    ts = plan.tile_size
    padded = torch.nn.functional.pad(last, (0, plan.tiles_x * ts - width, 0, plan.tiles_y * ts - height))
    per_tile = padded.reshape(plan.tiles_y, ts, plan.tiles_x, ts).amax((1, 3))
    return int(per_tile.sum()) * ts * ts, forward, backward


class OpTimes:
    """Wall time of each compiled op (projection, SH, tile plan, compositing) called inside the block,
    summed by name: the per-op split of a forward+backward (torch.profiler's op times were off by up to
    4x here, with OpenMP inside the ops)."""

    def __enter__(self):
        self.seconds, self.ops_of = collections.defaultdict(float), build.ops
        seconds, ops = self.seconds, self.ops_of()

        class Timed:
            def __getattr__(self, name):
                op = getattr(ops, name)

                def call(*args):
                    start = time.perf_counter()
                    try:
                        return op(*args)
                    finally:
                        seconds[name] += time.perf_counter() - start

                return call

        build.ops = Timed
        return self

    def __exit__(self, *exc):
        build.ops = self.ops_of


def op_split(g, camera, calls: int = 10) -> str:
    """The compiled ops' share of one forward+backward, ms each, the rest (autograd, allocation,
    PyTorch's own ops) last."""
    ours(g, camera, True)
    with OpTimes() as ops:
        start = time.perf_counter()
        for _ in range(calls):
            ours(g, camera, True)
        total = time.perf_counter() - start
    parts = sorted(ops.seconds.items(), key=lambda kv: -kv[1])
    rest = total - sum(ops.seconds.values())
    return ", ".join(f"{name} {s / calls * 1e3:.1f}" for name, s in parts) + f", rest {rest / calls * 1e3:.1f} ms"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 200_000])
    parser.add_argument("--dense-max", type=int, default=10_000, help="largest size the dense peer runs at")
    parser.add_argument("--ops", action="store_true", help="also print the compiled ops' split of a forward+backward")
    args = parser.parse_args()
    torch.manual_seed(0)
    camera = scene_camera(0)
    flops, copy, exps = machine_limits()
    print(f"threads: {torch.get_num_threads()}; machine: {flops / 1e9:.0f} GFLOP/s (float32 matmul), "
          f"{copy / 1e9:.1f} GB/s (copy), {exps / 1e9:.2f} exp/ns")  # fmt: skip
    header = f"{'gaussians':>9} {'backend':>7} {'isects':>8} {'pairs':>7} {'fwd ms':>7} {'fwd+bwd ms':>10}"
    header += f" {'ns/pair':>7} {'kernels ns/pair':>15} {'x floor':>7}"
    header += f" {'dense fwd ms':>12} {'dense f+b ms':>12} {'vs dense f+b':>12}"
    print(header)
    floors = []
    for n in args.sizes:
        g = scene_gaussians(n)
        # the floor again beside each size: this machine's exp and matmul rates move by a third
        # within minutes, and a ratio to a floor taken at another moment measures that too
        floor_flops, _, floor_exps = machine_limits()
        floors.append((pair_floor(floor_flops, floor_exps), floor_exps))
        dense_cols = ""
        if n <= args.dense_max:
            with torch.no_grad():
                dense_fwd = timed(lambda: dense(g, camera, backward=False), repeat=1, warmup=0)
            dense_both = timed(lambda: dense(g, camera, backward=True), repeat=1, warmup=0)
            dense_cols = f" {dense_fwd * 1e3:>12.0f} {dense_both * 1e3:>12.0f}"
        for backend in ("cpp", "torch"):
            with torch.no_grad():
                fwd = timed(lambda: ours(g, camera, False, backend))
            both = timed(lambda: ours(g, camera, True, backend))
            with PairCounter() as counter, torch.no_grad():
                _, info = ours(g, camera, False, backend)
            row = f"{n:>9} {backend:>7} {info['n_isects']:>8}"
            if backend == "cpp":
                pairs, kernel_fwd, kernel_bwd = compiled_kernels(g, camera)
                kernels = f"{kernel_fwd / pairs * 1e9:.2f}+{kernel_bwd / pairs * 1e9:.2f}"
                over_floor = f"{both / pairs / floors[-1][0]:.2f}x"
            else:
                pairs, kernels, over_floor = counter.pairs, "", ""
            row += f" {pairs / 1e6:>6.1f}M {fwd * 1e3:>7.0f} {both * 1e3:>10.0f} {both / pairs * 1e9:>7.2f} {kernels:>15}"
            row += f" {over_floor:>7}"
            if dense_cols:
                row += dense_cols + f" {dense_both / both:>11.0f}x"
            print(row)
        if args.ops:
            print(f"{'':>9} cpp ops: {op_split(g, camera)}")
    print("compute floor, forward+backward, measured before each size: " + ", ".join(
        f"{floor * 1e9:.2f} ns per pair ({2 / e * 1e9:.2f} of it exp)" for floor, e in floors))
    print(f"PyTorch kernels compiled: {rasterize_torch._wave_forward.compiled is not None}; tile size 8, chunk 32")


if __name__ == "__main__":
    main()
