"""One entry point to render Gaussians, with the backend picked by the device of the tensors:
gsplat's CUDA kernels on CUDA; on a CPU our compiled projection, SH and rasterizer (kernels/)
where they build and our pure-PyTorch ones (projection, sh, rasterize_torch)
otherwise and on MPS.

Inputs and outputs are those of `gsplat.rasterization` (the subset TinySplat uses), so a model and a
densification strategy see the same `info` whichever backend ran, with gsplat 1.4 or 1.5.
"""

from importlib.metadata import PackageNotFoundError, version
from typing import Dict, Literal, Optional, Tuple

import torch
from torch import Tensor

from tinysplat_ns.core.projection import camera_centers, project_gaussians
from tinysplat_ns.core import rasterize_torch
from tinysplat_ns.core.kernels import project as compiled_projection
from tinysplat_ns.core.kernels import rasterize as compiled_rasterizer
from tinysplat_ns.core.sh import eval_sh

RenderMode = Literal["RGB", "RGB+ED"]
RasterizeMode = Literal["classic", "antialiased"]
Backend = Literal["auto", "gsplat", "cpp", "torch"]


def _gsplat_radii_per_axis() -> bool:
    """gsplat 1.5 gives a radius per image axis, `info["radii"]` [C, N, 2], and its strategies read it
    so; gsplat 1.4 gives one, [C, N]. Our rasterizer's one radius goes out in the installed gsplat's
    shape (without gsplat, as 1.4: the CPU path does not need it)."""
    try:
        return tuple(int(v) for v in version("gsplat").split(".")[:2]) >= (1, 5)
    except PackageNotFoundError:
        return False


RADII_PER_AXIS = _gsplat_radii_per_axis()


def pick_backend(device: torch.device, backend: Backend = "auto") -> Literal["gsplat", "cpp", "torch"]:
    """auto: gsplat on CUDA, else the compiled CPU rasterizer for what it takes (float32 CPU tensors, up
    to 4 channels) and the PyTorch one for the rest."""
    if backend == "auto":
        return "gsplat" if device.type == "cuda" else "cpp" if device.type == "cpu" else "torch"
    if backend == "gsplat" and device.type != "cuda":
        # gsplat's ops need CUDA tensors; on a CPU they would try to build CUDA code instead.
        raise ValueError(f"the gsplat backend needs CUDA tensors, these are on {device}: use backend='torch'")
    return backend


def rasterization(
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4]
    scales: Tensor,  # [N, 3]
    opacities: Tensor,  # [N]
    colors: Tensor,  # [N, K, 3] SH coefficients with sh_degree, else [N, D]
    viewmats: Tensor,  # [C, 4, 4] world-to-camera, OpenCV axes
    Ks: Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    sh_degree: Optional[int] = None,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    backgrounds: Optional[Tensor] = None,  # [C, D]
    render_mode: RenderMode = "RGB",
    rasterize_mode: RasterizeMode = "classic",
    absgrad: bool = False,
    backend: Backend = "auto",
    tile_size: int = 8,
    chunk: int = 32,
) -> Tuple[Tensor, Tensor, Dict]:
    """Render C cameras: colours [C, H, W, D(+1 depth)], alphas [C, H, W, 1] and gsplat's `info`."""
    if render_mode not in ("RGB", "RGB+ED"):
        raise ValueError(f"render_mode must be 'RGB' or 'RGB+ED', got {render_mode!r}")
    if rasterize_mode not in ("classic", "antialiased"):
        raise ValueError(f"rasterize_mode must be 'classic' or 'antialiased', got {rasterize_mode!r}")
    if pick_backend(means.device, backend) == "gsplat":
        from gsplat.rendering import rasterization as gsplat_rasterization

        return gsplat_rasterization(
            means=means, quats=quats, scales=scales, opacities=opacities, colors=colors,
            viewmats=viewmats, Ks=Ks, width=width, height=height, sh_degree=sh_degree,
            near_plane=near_plane, far_plane=far_plane, eps2d=eps2d, backgrounds=backgrounds,
            render_mode=render_mode, rasterize_mode=rasterize_mode, absgrad=absgrad, packed=False,
        )  # fmt: skip
    return _cpu_rasterization(
        means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree, near_plane,
        far_plane, eps2d, backgrounds, render_mode, rasterize_mode, absgrad, backend, tile_size, chunk,
    )  # fmt: skip


def _per_camera(t: Tensor) -> Tuple[Tensor, ...]:
    """[C, ...] as C tensors whose gradients go back without copies: one camera by a squeeze (its
    backward is a view), several by unbind (one stack). Indexing zero-fills all of [C, ...] and copies
    into it for each camera: 2.7 ms of a training step at 200k Gaussians."""
    return (t.squeeze(0),) if t.shape[0] == 1 else t.unbind(0)


def _cpu_rasterization(
    means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree, near_plane,
    far_plane, eps2d, backgrounds, render_mode, rasterize_mode, absgrad, backend, tile_size, chunk,
):  # fmt: skip
    C, N = viewmats.shape[0], means.shape[0]
    channels = (3 if sh_degree is not None else colors.shape[-1]) + (render_mode == "RGB+ED")
    use_cpp = backend in ("auto", "cpp") and compiled_rasterizer.supports(means, channels, tile_size)
    if backend == "cpp" and not use_cpp:
        raise ValueError(
            "the cpp backend takes float32 CPU tensors, up to 4 channels and tiles of up to 16 pixels, "
            "and needs its build to work (see the warning above): use backend='torch'"
        )
    # (optimised intrinsics take PyTorch's projection; an optimised pose, the compiled one)
    compiled_gaussians = use_cpp and not Ks.requires_grad and all(
        t.dtype == torch.float32 for t in (quats, scales, colors)
    )
    project = compiled_projection.project_gaussians if compiled_gaussians else project_gaussians
    proj = project(
        means, quats, scales, viewmats, Ks, width, height, eps2d=eps2d, near_plane=near_plane,
        far_plane=far_plane, with_compensation=rasterize_mode == "antialiased",
    )  # fmt: skip
    if sh_degree is None:
        colors = colors.expand(C, N, colors.shape[-1])
    elif compiled_gaussians:
        colors = compiled_projection.sh_colors(sh_degree, means, viewmats, colors)
    else:
        dirs = means[None] - camera_centers(viewmats)[:, None]
        colors = torch.clamp_min(eval_sh(sh_degree, dirs, colors[None]) + 0.5, 0.0)  # [C, N, 3]
    if render_mode == "RGB+ED":
        colors = torch.cat([colors, proj.depths[..., None]], dim=-1)
        if backgrounds is not None:
            backgrounds = torch.cat([backgrounds, backgrounds.new_zeros(C, 1)], dim=-1)
    opacities = opacities.unsqueeze(0).expand(C, N)  # (with one camera its backward is a view, no sum)
    if proj.compensations is not None:
        opacities = opacities * proj.compensations

    info = {
        "means2d": proj.means2d, "radii": proj.radii[..., None].expand(C, N, 2) if RADII_PER_AXIS else proj.radii,
        "depths": proj.depths, "conics": proj.conics,
        "opacities": opacities, "camera_ids": None, "gaussian_ids": None, "width": width,
        "height": height, "n_cameras": C, "tile_size": tile_size, "n_isects": 0,
    }  # fmt: skip
    rasterizer = compiled_rasterizer if use_cpp else rasterize_torch
    absgrad_sink = None
    if absgrad:
        absgrad_sink = torch.zeros_like(proj.means2d, requires_grad=False)
        proj.means2d.absgrad = absgrad_sink  # filled by the backward pass, read by the strategy

    images, alphas = [], []
    cameras = zip(*(_per_camera(t) for t in (proj.means2d, proj.conics, colors, opacities, proj.depths, proj.radii)))
    for c, (means2d, conics, colors_c, opacities_c, depths, radii) in enumerate(cameras):
        plan = rasterizer.plan_tiles(
            means2d.detach(), conics.detach(), opacities_c.detach(), depths.detach(), radii, width, height,
            tile_size, chunk,
        )  # fmt: skip
        info["n_isects"] += plan.n_isects
        image, alpha = rasterizer.rasterize_to_pixels(
            means2d, conics, colors_c, opacities_c, plan,
            background=None if backgrounds is None else backgrounds[c],
            absgrad_out=None if absgrad_sink is None else absgrad_sink[c],
        )  # fmt: skip
        images.append(image)
        alphas.append(alpha)
    render_colors, render_alphas = torch.stack(images), torch.stack(alphas)
    if render_mode == "RGB+ED":
        depth = render_colors[..., -1:] / render_alphas.clamp(min=1e-10)
        render_colors = torch.cat([render_colors[..., :-1], depth], dim=-1)
    return render_colors, render_alphas, info
