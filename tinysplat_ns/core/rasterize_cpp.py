"""The compiled CPU rasterizer: `rasterize_cpp.cpp` (with `project_cpp.cpp`, see project_cpp.py, and
`ssim_cpp.cpp`, see ssim_cpp.py), built on first use with PyTorch's extension mechanism
(`torch.utils.cpp_extension`, the compiler `torch.compile` needs too) and cached in
~/.cache/tinysplat/kernels. Same tile plan, compositing rule, inputs and outputs as
`rasterize_torch.rasterize_to_pixels`, which stays the fallback: float64, more than 4 channels, MPS,
no compiler or a failed build (one warning says which), or TINYSPLAT_CPP=0.
"""

import functools
import hashlib
import logging
import os
import threading
import warnings
from pathlib import Path
from typing import Optional, Tuple

import torch
from torch import Tensor

from tinysplat_ns.core.rasterize_torch import TilePlan, keep_freed_memory, plan_from_lists

SOURCES = [Path(__file__).with_name(f"{name}.cpp") for name in ("rasterize_cpp", "project_cpp", "ssim_cpp")]
MAX_CHANNELS = 4
MAX_TILE_SIZE = 16
_LOADING = threading.Lock()  # the viewer's thread renders beside training: build and load once


def _isa_flags() -> Tuple[str, list]:
    """Vector instructions for the loops, as far as this CPU has them (the build is cached per set)."""
    capability = torch.backends.cpu.get_cpu_capability()  # what ATen's own kernels picked here
    if capability == "AVX512":
        return "avx512", ["-mavx512f", "-mavx512dq", "-mavx512vl", "-mavx2", "-mfma", "-DTINYSPLAT_LANES=16"]
    if capability == "AVX2":
        return "avx2", ["-mavx2", "-mfma"]
    return "generic", []


@functools.lru_cache(maxsize=None)
def available() -> bool:
    """Build (once per source, torch version and instruction set) and load the kernels; False, with one
    warning, when that cannot be done here."""
    if os.environ.get("TINYSPLAT_CPP", "1") == "0":
        return False
    with _LOADING:
        return hasattr(torch.ops.tinysplat_cpu, "rasterize_forward") or _build_and_load()


def _build_and_load() -> bool:
    isa, flags = _isa_flags()
    name = f"tinysplat_cpu_{isa}"  # cpp_extension rebuilds it when the source changes
    # one build per torch installation: environments that shared a folder would rebuild it in turn,
    # each over a library the other has loaded
    installation = hashlib.sha256(str(Path(torch.__file__).resolve().parent).encode()).hexdigest()[:12]
    build_dir = Path.home() / ".cache" / "tinysplat" / "kernels" / f"torch-{torch.__version__}-{installation}" / name
    try:
        # its import notes that no CUDA runtime exists, which is expected on a CPU
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
        from torch.utils import cpp_extension

        build_dir.mkdir(parents=True, exist_ok=True)
        cpp_extension.load(
            name=name, sources=[str(s) for s in SOURCES], build_directory=str(build_dir), is_python_module=False,
            # without errno or floating-point traps to keep, GCC vectorises branch-free scalar loops
            # that take square roots and divisions (the tile plan's rectangles); no result changes
            extra_cflags=["-O3", "-fopenmp", "-Wno-psabi", "-fno-math-errno", "-fno-trapping-math", *flags],
            extra_ldflags=["-fopenmp"], verbose=False,
        )  # fmt: skip
        return hasattr(torch.ops.tinysplat_cpu, "rasterize_forward")
    except Exception as e:  # no compiler, no ninja, a failed build, a read-only home
        first = str(e).strip().splitlines()[:1] or [type(e).__name__]
        warnings.warn(
            f"TinySplat uses its slower pure-PyTorch rasterizer: the compiled one did not build in {build_dir} "
            f"({first[0][:300]}); a C++ compiler (g++ or clang++) gets it, TINYSPLAT_CPP=0 silences this",
            stacklevel=2,
        )
        return False


def _ops():
    if not available():
        raise RuntimeError("TinySplat's compiled CPU rasterizer is not available here (see the warning above)")
    return torch.ops.tinysplat_cpu


def supports(means: Tensor, channels: int, tile_size: int) -> bool:
    return (
        means.device.type == "cpu"
        and means.dtype == torch.float32
        and 1 <= channels <= MAX_CHANNELS
        and tile_size <= MAX_TILE_SIZE
        and available()
    )


def plan_tiles(means2d, conics, opacities, depths, radii, width: int, height: int, tile_size=8, chunk=32) -> TilePlan:
    """`rasterize_torch.plan_tiles` (the same arguments, the same plan, its Gaussian ids int32), compiled:
    a radix sort by depth and a counting sort by tile instead of sorting the (tile, Gaussian) pairs."""
    with torch.no_grad():
        per_tile, isect_gids = _ops().plan_tiles(
            means2d.contiguous(), conics.contiguous(), opacities.contiguous(), radii.contiguous(),
            depths.contiguous(), width, height, tile_size,
        )  # fmt: skip
        return plan_from_lists(per_tile, isect_gids, width, height, tile_size, chunk)


def _plan_args(plan: TilePlan):
    return (
        plan.tile_ids.contiguous(), plan.tile_start.contiguous(), plan.tile_count.contiguous(),
        plan.isect_gids.contiguous(), plan.width, plan.height, plan.tile_size,
    )  # fmt: skip


class RasterizeToPixelsCpp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d, conics, colors, opacities, background, plan: TilePlan, absgrad_out: Optional[Tensor]):
        keep_freed_memory()  # measured here too: 150 -> 127 ms a forward+backward at 200k Gaussians
        inputs = [t.detach().contiguous() for t in (means2d, conics, colors, opacities)]
        bg = None if background is None else background.detach().contiguous()
        image, alpha, last, t_final = _ops().rasterize_forward(*inputs, bg, *_plan_args(plan))
        ctx.plan, ctx.absgrad_out = plan, absgrad_out
        ctx.has_background = background is not None
        ctx.save_for_backward(*inputs, bg if bg is not None else torch.empty(0), last, t_final)
        return image, alpha

    @staticmethod
    def backward(ctx, v_image, v_alpha):
        plan: TilePlan = ctx.plan
        means2d, conics, colors, opacities, bg, last, t_final = ctx.saved_tensors
        bg = bg if ctx.has_background else None
        v_means2d, v_conics, v_opacities, v_colors, *v_abs = _ops().rasterize_backward(
            means2d, conics, colors, opacities, bg, *_plan_args(plan), last, t_final,
            v_image.contiguous(), v_alpha.contiguous(), ctx.absgrad_out is not None,
        )  # fmt: skip
        v_background = None
        if ctx.has_background and ctx.needs_input_grad[4]:
            v_background = (t_final[..., None] * v_image).sum((0, 1))
        if ctx.absgrad_out is not None:
            ctx.absgrad_out += v_abs[0]
        return v_means2d, v_conics, v_colors, v_opacities, v_background, None, None


def rasterize_to_pixels(
    means2d: Tensor,  # [N, 2]
    conics: Tensor,  # [N, 3]
    colors: Tensor,  # [N, D], D <= 4
    opacities: Tensor,  # [N]
    plan: TilePlan,
    background: Optional[Tensor] = None,  # [D]
    absgrad_out: Optional[Tensor] = None,  # [N, 2]
) -> Tuple[Tensor, Tensor]:
    """As `rasterize_torch.rasterize_to_pixels`: image [H, W, D] and alpha [H, W, 1] of one camera."""
    return RasterizeToPixelsCpp.apply(means2d, conics, colors, opacities, background, plan, absgrad_out)
