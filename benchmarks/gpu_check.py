"""GPU checks (docs/gpu.md), run by scripts/gpu_check.sh on the device machine with the core and
gsplat only: our PyTorch rasterizer against gsplat's CUDA rasterizer on trained Gaussians of the
bundled scene (images, alphas, gradients), their forward+backward times as a ratio, and our
float64 MCMC relocation against gsplat's CUDA kernel.

    python benchmarks/gpu_check.py SCENE.ply CAMERAS.pt OUT.json
"""

import json
import sys
import time
import traceback

import torch
from common import timed

from tinysplat_ns.core.ply import read_ply
from tinysplat_ns.core.rasterization import rasterization
from tinysplat_ns.core.strategies.ops import RELOCATION_N_MAX, compute_relocation, gsplat_binomials


def render_inputs(gaussians, device):
    return {
        "means": gaussians["means"].to(device),
        "quats": gaussians["quats"].to(device),
        "scales": gaussians["scales"].exp().to(device),
        "opacities": torch.sigmoid(gaussians["opacities"]).squeeze(-1).to(device),
        "colors": torch.cat([gaussians["features_dc"][:, None], gaussians["features_rest"]], 1).to(device),
    }


def render(params, camera, backend, weights=None):
    viewmat, K, (width, height) = camera
    leaves = {k: v.detach().clone().requires_grad_(weights is not None) for k, v in params.items()}
    image, alpha, _ = rasterization(
        leaves["means"], leaves["quats"], leaves["scales"], leaves["opacities"], leaves["colors"],
        viewmat[None], K[None], width, height, sh_degree=3, backend=backend,
    )  # fmt: skip
    grads = {}
    if weights is not None:
        ((image * weights[0]).sum() + (alpha * weights[1]).sum()).backward()
        grads = {k: v.grad for k, v in leaves.items()}
    return image[0].detach(), alpha[0].detach(), grads


def parity(params, cameras):
    out = []
    for viewmat, K, size in cameras:
        camera = (viewmat, K, size)
        gen = torch.Generator(device="cuda").manual_seed(0)
        weights = (
            torch.rand(1, size[1], size[0], 3, device="cuda", generator=gen),
            torch.rand(1, size[1], size[0], 1, device="cuda", generator=gen),
        )
        ours = render(params, camera, "torch", weights)
        theirs = render(params, camera, "gsplat", weights)
        row = {
            "image_max_abs": float((ours[0] - theirs[0]).abs().max()),
            "image_mean_abs": float((ours[0] - theirs[0]).abs().mean()),
            "alpha_max_abs": float((ours[1] - theirs[1]).abs().max()),
            "pixels_off_by_over_1_255": float(((ours[0] - theirs[0]).abs() > 1 / 255).float().mean()),
        }
        for name in params:
            a, b = ours[2][name], theirs[2][name]
            row[f"grad_{name}_rel"] = float((a - b).norm() / b.norm().clamp(min=1e-12))
        out.append(row)
    return out


def timing(params, camera, backend, repeat=20):
    """Median forward+backward milliseconds (the GPU's queue drained in each)."""
    _, _, (width, height) = camera
    weights = (torch.ones(1, height, width, 3, device="cuda"), torch.ones(1, height, width, 1, device="cuda"))

    def step():
        render(params, camera, backend, weights)
        torch.cuda.synchronize()

    return 1000 * timed(step, repeat=repeat, warmup=3)


def grown(params, n, seed=0):
    """`n` Gaussians: the trained ones repeated with a jitter of a few of their own sizes."""
    gen = torch.Generator(device="cuda").manual_seed(seed)
    pick = torch.randint(0, len(params["means"]), (n,), device="cuda", generator=gen)
    out = {k: v[pick].clone() for k, v in params.items()}
    out["means"] += 3 * out["scales"].mean(-1, keepdim=True) * torch.randn(n, 3, device="cuda", generator=gen)
    return out


def relocation_check():
    from gsplat.relocation import compute_relocation as gsplat_relocation

    gen = torch.Generator(device="cuda").manual_seed(0)
    n = 100_000
    opacities = torch.rand(n, device="cuda", generator=gen).clamp(0.005, 0.995)
    scales = torch.rand(n, 3, device="cuda", generator=gen) * 0.1 + 1e-3
    ratios = torch.randint(1, RELOCATION_N_MAX + 1, (n,), device="cuda", generator=gen)
    binoms = gsplat_binomials(torch.device("cuda"))
    ours_o, ours_s = compute_relocation(opacities, scales, ratios)
    theirs_o, theirs_s = gsplat_relocation(opacities, scales, ratios.int(), binoms)
    rel_s = ((ours_s - theirs_s).abs() / theirs_s.abs().clamp(min=1e-12)).amax(-1)
    small = ratios <= 10
    return {
        "n": n,
        "opacity_max_abs": float((ours_o - theirs_o).abs().max()),
        "scale_rel_max_ratios_le_10": float(rel_s[small].max()),
        "scale_rel_median_all": float(rel_s.median()),
        "scale_rel_max_all": float(rel_s.max()),
        "theirs_nonfinite": int((~torch.isfinite(theirs_s)).sum()),
    }


def main(ply, cameras_path, out_path):
    results = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    params = render_inputs(read_ply(ply), "cuda")
    saved = torch.load(cameras_path)
    cameras = [(v.cuda(), k.cuda(), s) for v, k, s in zip(saved["viewmats"], saved["Ks"], saved["sizes"])]
    results["gaussians"] = len(params["means"])
    start = time.perf_counter()
    try:
        import gsplat  # noqa: F401  (its CUDA code builds on first use)

        render(params, cameras[0], "gsplat")
        results["gsplat_build_s"] = time.perf_counter() - start
        results["parity"] = parity(params, cameras)
        results["relocation"] = relocation_check()
    except Exception:
        results["gsplat_error"] = traceback.format_exc()[-3000:]
    print(json.dumps(results, indent=1), flush=True)
    speed = []
    for n in (len(params["means"]), 100_000, 1_000_000):
        scene = params if n == len(params["means"]) else grown(params, n)
        row = {"gaussians": n, "torch_ms": timing(scene, cameras[0], "torch")}
        if "gsplat_error" not in results:
            row["gsplat_ms"] = timing(scene, cameras[0], "gsplat")
            row["ratio_torch_over_gsplat"] = row["torch_ms"] / row["gsplat_ms"]
        row["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
        speed.append(row)
        print(json.dumps(row), flush=True)
        results["forward_backward_300x400"] = speed
        json.dump(results, open(out_path, "w"), indent=1)
    json.dump(results, open(out_path, "w"), indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:4])
