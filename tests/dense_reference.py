"""An independent dense rasterizer for the tests: float64, every pixel against every Gaussian,
depth-sorted, plain autograd. Projection and SH come from gsplat's pure-PyTorch reference code
(`gsplat/cuda/_torch_impl.py`, which runs on a CPU); compositing follows gsplat's CUDA kernel:
alpha = min(0.999, o * exp(-sigma)), skipped below 1/255 or for sigma < 0, and a pixel stops before
its transmittance would reach 1e-4."""

import torch
from gsplat.cuda import _torch_impl as ref


def render_dense(
    means, quats, scales, opacities, sh_coeffs, sh_degree, viewmat, K, width, height, background,
    antialiased=False, per_pixel_means2d=False,
):  # fmt: skip
    """One camera: colour [H, W, 3], expected depth [H, W, 1], alpha [H, W, 1] and the projection
    (radii [N]; with `per_pixel_means2d`, a zero [P, N, 2] added to the 2D means that each pixel
    reads, whose gradient gives the per-pixel terms of gsplat's absgrad)."""
    covars, _ = ref._quat_scale_to_covar_preci(quats, scales, compute_preci=False)
    radii, means2d, depths, conics, comp = ref._fully_fused_projection(
        means, covars, viewmat[None], K[None], width, height, eps2d=0.3, calc_compensations=antialiased
    )
    radii, means2d, depths, conics = radii[0], means2d[0], depths[0], conics[0]
    if antialiased:
        opacities = opacities * comp[0]
    campos = torch.inverse(viewmat)[:3, 3]
    dirs = torch.nn.functional.normalize(means - campos, dim=-1)
    n_bases = (sh_degree + 1) ** 2
    bases = ref._eval_sh_bases_fast(n_bases, dirs)
    colors = torch.clamp_min((bases[..., None] * sh_coeffs[:, :n_bases]).sum(1) + 0.5, 0.0)

    keep = (radii > 0).nonzero().squeeze(1)
    keep = keep[torch.argsort(depths[keep], stable=True)]
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    px = xs.reshape(-1, 1).to(means.dtype) + 0.5
    py = ys.reshape(-1, 1).to(means.dtype) + 0.5
    pixel_means = means2d[keep][None].expand(len(px), -1, -1)
    probe = None
    if per_pixel_means2d:  # a zero offset per pixel: its gradient is that pixel's share
        probe = torch.zeros_like(pixel_means, requires_grad=True)
        pixel_means = pixel_means + probe
    dx, dy = pixel_means[..., 0] - px, pixel_means[..., 1] - py  # [P, N]
    a, b, c = conics[keep].unbind(-1)
    sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
    alpha = torch.clamp(opacities[keep] * torch.exp(-sigma), max=0.999)
    alpha = torch.where((sigma >= 0) & (alpha >= 1 / 255), alpha, torch.zeros_like(alpha))
    t_after = torch.cumprod(1 - alpha, dim=1)
    drawn = t_after > 1e-4
    t_before = torch.cat([torch.ones_like(t_after[:, :1]), t_after[:, :-1]], dim=1)
    weight = torch.where(drawn, alpha * t_before, torch.zeros_like(alpha))
    t_final = torch.where(drawn, t_after, torch.ones_like(t_after)).amin(1, keepdim=True)
    rgb = weight @ colors[keep] + t_final * background
    accum = 1 - t_final
    depth = (weight @ depths[keep][:, None]) / accum.clamp(min=1e-10)
    stats = {
        "radii": radii,
        "pixel_means2d": probe,
        "stopped_pixels": int((~drawn & (alpha > 0)).any(1).sum()),
    }
    shape = (height, width, -1)
    return rgb.reshape(shape), depth.reshape(shape), accum.reshape(shape), stats
