"""Tile-based Gaussian rasterizer in pure PyTorch, with a hand-written backward.

Compositing follows gsplat 1.4's CUDA kernel (front to back, alpha = min(0.999, o * exp(-sigma)),
skip alpha < 1/255, stop a pixel before its transmittance falls to 1e-4), so a scene trained on
either backend renders the same on the other. (gsplat also skips sigma < 0, which a projected
covariance, positive definite, cannot give.)

How it is laid out for a CPU: the image is cut into small square tiles; each tile holds its
depth-sorted list of Gaussians, cut into chunks of `chunk` Gaussians; a tile and one chunk make a
row. Work goes in waves: wave w composites the w-th chunk of every tile that has one and whose
pixels are not yet opaque, as dense [rows, pixels, chunk] tensors. A tile leaves the waves once all
its pixels are done (the CPU analogue of a CUDA block's early exit). A Gaussian's log-alpha over a
tile is a quadratic in the pixel position, so a row's log-alphas are one matmul of the pixels'
monomials with the row's coefficients, and the backward pass's sums over pixels are the transposed
matmul. The backward pass keeps only each row's starting transmittance and colour from the forward
pass; with those, rows no longer depend on each other and it recomputes them in large batches.

Which tiles a Gaussian touches comes from the exact extent of its alpha >= 1/255 ellipse (it
depends on opacity), not from gsplat's 3-sigma square: the picture is the one every pixel would get
against every Gaussian, with no cut-off at 3 sigma.
"""

import ctypes
import functools
import logging
import math
import os
import sys
import warnings
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
from torch import Tensor

ALPHA_MAX = 0.999
ALPHA_MIN = 1.0 / 255.0
T_MIN = 1e-4


@dataclass
class TilePlan:
    """Which Gaussians touch which tile, in depth order (no gradients)."""

    width: int
    height: int
    tile_size: int
    tiles_x: int
    tiles_y: int
    chunk: int
    tile_ids: Tensor  # [T] tiles that have Gaussians, most Gaussians first
    tile_start: Tensor  # [T] offset of each tile's list in `isect_gids`
    tile_count: Tensor  # [T] length of each tile's list
    isect_gids: Tensor  # [M] Gaussian ids grouped by tile, front to back (int32 in the compiled plan)
    wave_sizes: List[int]  # wave w covers tiles [0, wave_sizes[w]) of `tile_ids`

    @property
    def n_isects(self) -> int:
        return int(self.isect_gids.numel())


def plan_tiles(
    means2d: Tensor,  # [N, 2]
    conics: Tensor,  # [N, 3]
    opacities: Tensor,  # [N]
    depths: Tensor,  # [N]
    radii: Tensor,  # [N] 0 = culled by the projection
    width: int,
    height: int,
    tile_size: int = 8,
    chunk: int = 32,
) -> TilePlan:
    with torch.no_grad():
        tiles_x = math.ceil(width / tile_size)
        tiles_y = math.ceil(height / tile_size)
        a, b, c = conics.double().unbind(-1)
        # alpha >= 1/255  <=>  sigma <= log(255 * o): an ellipse whose axis-aligned half-widths are
        # sqrt(2 s cov_xx) and sqrt(2 s cov_yy); cov = conic^-1 (within that box, _row_tiles follows the
        # ellipse row by row of tiles). A hundredth of a pixel of slack keeps rounding at the rim from
        # dropping a pixel that the per-pixel test would keep. The determinant of a huge Gaussian's
        # conic is tiny (float64 keeps it); if it still rounds to zero, the Gaussian is given the whole
        # image and the per-pixel test decides.
        s_max = torch.log(torch.clamp(opacities.double(), min=ALPHA_MIN) * 255.0)
        det = a * c - b * b
        unbounded = torch.full_like(det, math.inf)
        half_x = torch.where(det > 0, torch.sqrt(2.0 * s_max * c / det) + 0.01, unbounded)
        half_y = torch.where(det > 0, torch.sqrt(2.0 * s_max * a / det) + 0.01, unbounded)
        u, v = means2d.double().unbind(-1)
        # pixel j (centre j + 0.5) is inside when |j + 0.5 - u| <= half
        j0 = torch.ceil(u - half_x - 0.5).clamp(min=0)
        j1 = torch.floor(u + half_x - 0.5).clamp(max=width - 1)
        i0 = torch.ceil(v - half_y - 0.5).clamp(min=0)
        i1 = torch.floor(v + half_y - 0.5).clamp(max=height - 1)
        keep = (radii > 0) & (opacities >= ALPHA_MIN) & (j0 <= j1) & (i0 <= i1)
        keep &= torch.isfinite(u) & torch.isfinite(v)
        ids = torch.nonzero(keep).squeeze(1)
        ids = ids[torch.argsort(depths[ids], stable=True)]
        tx0 = (j0[ids] // tile_size).long()
        ty0 = (i0[ids] // tile_size).long()
        nx = (j1[ids] // tile_size).long() - tx0 + 1
        ny = (i1[ids] // tile_size).long() - ty0 + 1
        # each Gaussian's tile rows in turn, and the tiles its ellipse touches in each
        owner = _runs(ny)
        ty = ty0[owner] + _places(ny, owner)
        row_ids = ids[owner]
        x0, counts = _row_tiles(
            a[row_ids], b[row_ids], c[row_ids], s_max[row_ids], u[row_ids], v[row_ids], ty, tx0[owner], nx[owner],
            width, height, tile_size,
        )  # fmt: skip
        row = _runs(counts)
        tile_of = ty[row] * tiles_x + x0[row] + _places(counts, row)
        tile_sorted, order = torch.sort(tile_of, stable=True)
        isect_gids = row_ids[row[order]]
        per_tile = torch.bincount(tile_sorted, minlength=tiles_x * tiles_y)
        return plan_from_lists(per_tile, isect_gids, width, height, tile_size, chunk)


def _runs(counts: Tensor) -> Tensor:
    """Item k repeated counts[k] times: the owner of each place in runs laid one after another."""
    owners = torch.arange(len(counts), device=counts.device)
    return torch.repeat_interleave(owners, counts, output_size=int(counts.sum()))


def _places(counts: Tensor, owner: Tensor) -> Tensor:
    """Each place's index within its owner's run (`owner` = _runs(counts))."""
    first = torch.cumsum(counts, 0) - counts
    return torch.arange(len(owner), device=owner.device) - first[owner]


def _row_tiles(a, b, c, s_max, u, v, ty, x0, nx, width: int, height: int, tile_size: int) -> Tuple[Tensor, Tensor]:
    """The tiles across that each Gaussian's alpha >= 1/255 ellipse touches in tile row ty, within its
    axis-aligned extent's columns [x0, x0 + nx) (all of them where that is one): first and count (0:
    none), in float64. At the pixel centre (u + dx, v + dy) the ellipse is a dx^2 + 2 b dx dy + c dy^2
    <= 2 s; along a pixel row it spans dx = (-b dy +- sqrt(2 s a - det dy^2)) / a, widest to the right
    at dy = -b sqrt(2 s / (det c)) and to the left at the opposite dy, so over the tile row's pixel
    centres each end lies at that dy clamped into them. s is widened by a millionth of the quadratic
    terms' size at the rim (2 s a c / det, large for a thin Gaussian) and by 1e-5, more than float32
    rounding moves the kernels' sigma, so no pixel the per-pixel test draws is left out. The compiled
    plan (kernels/rasterize.cpp's row_tiles) computes the same, operation for operation."""
    det = a * c - b * b
    # one tile wide: nothing to narrow; unbounded: plan_tiles gave it the whole image
    bounded = (nx > 1) & (det > 0) & (a > 0)
    s = s_max * (1.0 + 2e-6 * a * c / det) + 1e-5
    half_y = torch.sqrt(2.0 * s * a / det)
    ts = float(tile_size)
    top = ty.double() * ts + 0.5 - v
    bottom = torch.clamp(ty.double() * ts + ts, max=float(height)) - 0.5 - v
    outside = (top > half_y) | (bottom < -half_y)
    lo, hi = torch.maximum(top, -half_y), torch.minimum(bottom, half_y)
    turn = b * torch.sqrt(2.0 * s / (det * c))
    right = torch.minimum(torch.maximum(-turn, lo), hi)
    left = torch.minimum(torch.maximum(turn, lo), hi)
    x_right = (-b * right + torch.sqrt(torch.clamp(2.0 * s * a - det * right * right, min=0.0))) / a
    x_left = (-b * left - torch.sqrt(torch.clamp(2.0 * s * a - det * left * left, min=0.0))) / a
    j0, j1 = torch.ceil(u + x_left - 0.01 - 0.5), torch.floor(u + x_right + 0.01 - 0.5)
    first = torch.maximum(torch.floor(j0 / ts), x0.double())
    last = torch.minimum(torch.floor(torch.clamp(j1, max=width - 1.0) / ts), (x0 + nx - 1).double())
    touched = bounded.logical_not() | (outside.logical_not() & (first <= last))
    first = torch.where(bounded, first.long(), x0)
    count = torch.where(bounded, last.long() - first + 1, nx)
    return first, torch.where(touched, count, 0)


def plan_from_lists(per_tile: Tensor, isect_gids: Tensor, width: int, height: int, tile_size: int, chunk: int):
    """The plan of every tile's list of Gaussians, given as their lengths [tiles] and the lists one
    after the other in tile order [M]."""
    tiles_x, tiles_y = math.ceil(width / tile_size), math.ceil(height / tile_size)
    starts = torch.cumsum(per_tile, 0) - per_tile
    tile_count, tile_ids = torch.sort(per_tile, descending=True, stable=True)
    n_used = int((tile_count > 0).sum())
    tile_ids, tile_count = tile_ids[:n_used], tile_count[:n_used]
    n_chunks = (tile_count + chunk - 1) // chunk
    max_chunks = int(n_chunks[0]) if n_used else 0
    wave_sizes = torch.bincount(n_chunks, minlength=max_chunks + 1).flip(0).cumsum(0).flip(0)[1:].tolist()
    return TilePlan(
        width, height, tile_size, tiles_x, tiles_y, chunk,
        tile_ids, starts[tile_ids], tile_count, isect_gids, wave_sizes,
    )  # fmt: skip


def _image_to_tiles(img: Tensor, plan: TilePlan) -> Tensor:
    """[H, W, D] -> [tiles_y * tiles_x, tile_size**2, D], zero padded at the right and bottom."""
    ts, d = plan.tile_size, img.shape[-1]
    pad_h, pad_w = plan.tiles_y * ts - plan.height, plan.tiles_x * ts - plan.width
    img = torch.nn.functional.pad(img, (0, 0, 0, pad_w, 0, pad_h))
    img = img.reshape(plan.tiles_y, ts, plan.tiles_x, ts, d).permute(0, 2, 1, 3, 4)
    return img.reshape(plan.tiles_y * plan.tiles_x, ts * ts, d)


def _tiles_to_image(tiles: Tensor, plan: TilePlan) -> Tensor:
    ts, d = plan.tile_size, tiles.shape[-1]
    img = tiles.reshape(plan.tiles_y, plan.tiles_x, ts, ts, d).permute(0, 2, 1, 3, 4)
    img = img.reshape(plan.tiles_y * ts, plan.tiles_x * ts, d)
    return img[: plan.height, : plan.width]


def _pixel_features(tile_size: int, like: Tensor) -> Tensor:
    """[P, 6] monomials (x^2, xy, y^2, x, y, 1) of the pixel centres of a tile, row-major, with x
    and y measured from the tile's centre (small numbers keep float32 sums exact enough)."""
    r = torch.arange(tile_size, dtype=like.dtype, device=like.device) + 0.5 - 0.5 * tile_size
    x, y = r.repeat(tile_size), r.repeat_interleave(tile_size)
    return torch.stack([x * x, x * y, y * y, x, y, torch.ones_like(x)], dim=-1)


class _Rows:
    """Every row of a plan: a tile and one chunk of its Gaussians, wave after wave (wave w holds the
    w-th chunk of the first `wave_sizes[w]` tiles). Each Gaussian's log(o) - sigma(x, y) is written
    as a quadratic in the tile-centred pixel position, so that the log-alphas of a row's pixels are
    one matmul: features [P, 6] @ coef [6, B]."""

    def __init__(self, plan: TilePlan, table: Tensor, colors: Tensor):
        ts, B = plan.tile_size, plan.chunk
        device = table.device
        sizes = torch.tensor(plan.wave_sizes, dtype=torch.long, device=device)
        self.wave_start = [0] + torch.cumsum(sizes, 0).tolist()
        waves = _runs(sizes)
        self.tiles = _places(sizes, waves)
        pos = plan.tile_start[self.tiles, None] + waves[:, None] * B + torch.arange(B, device=device)
        inside = pos < (plan.tile_start + plan.tile_count)[self.tiles, None]
        sentinel = table.shape[0] - 1
        self.gids = torch.where(inside, plan.isect_gids[pos.clamp(max=max(plan.n_isects - 1, 0))], sentinel)
        g = table[self.gids]  # [R, B, 6]: x, y, a, b, c, opacity
        tile_ids = plan.tile_ids[self.tiles]
        centre_x = ((tile_ids % plan.tiles_x) * ts).to(table.dtype) + 0.5 * ts
        centre_y = ((tile_ids // plan.tiles_x) * ts).to(table.dtype) + 0.5 * ts
        mx, my = g[..., 0] - centre_x[:, None], g[..., 1] - centre_y[:, None]
        a, b, c, o = g[..., 2], g[..., 3], g[..., 4], g[..., 5]
        self.shape = torch.stack([mx, my, a, b, c, o], dim=1)  # [R, 6, B], tile-centred
        self.colors = colors[self.gids]  # [R, B, D + 1]
        # sigma = a/2 (x-mx)^2 + b (x-mx)(y-my) + c/2 (y-my)^2, expanded in x and y
        sigma0 = 0.5 * a * mx * mx + b * mx * my + 0.5 * c * my * my
        self.coef = torch.stack(
            [-0.5 * a, -b, -0.5 * c, a * mx + b * my, b * mx + c * my, torch.log(o) - sigma0], dim=1
        )  # [R, 6, B]; log(0) = -inf for the sentinel gives alpha 0

    def grad_from_coef(self, rows: Tensor, v_coef: Tensor) -> Tensor:
        """Chain rule from d/dcoef [R, 6, B] to d/d(x, y, a, b, c, opacity) [R, B, 6]."""
        v0, v1, v2, v3, v4, v5 = v_coef.unbind(1)
        mx, my, a, b, c, o = self.shape[rows].unbind(1)
        return torch.stack(
            [
                a * v3 + b * v4 - (a * mx + b * my) * v5,
                b * v3 + c * v4 - (b * mx + c * my) * v5,
                -0.5 * v0 + mx * v3 - 0.5 * mx * mx * v5,
                -v1 + my * v3 + mx * v4 - mx * my * v5,
                -0.5 * v2 + my * v4 - 0.5 * my * my * v5,
                torch.where(o > 0, v5 / o, torch.zeros_like(v5)),
            ],
            dim=-1,
        )


def _alpha_and_transmittance(features: Tensor, coef: Tensor, t_start: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """For rows of Gaussians [R, 6, B] over a tile's pixels [P, 6]: alpha [R, P, B] as composited
    (zero below 1/255, clamped at 0.999), 1 - alpha, and the transmittance after each Gaussian,
    never cut off (it drives the stop test)."""
    alpha = torch.exp(torch.matmul(features, coef))
    alpha = torch.where(alpha >= ALPHA_MIN, alpha, 0.0).clamp(max=ALPHA_MAX)
    one_minus = 1.0 - alpha
    t_after = torch.cumprod(one_minus, dim=-1) * t_start[..., None]
    return alpha, one_minus, t_after


def _weights(alpha: Tensor, one_minus: Tensor, t_after: Tensor) -> Tensor:
    """alpha * T in front, zero once gsplat would have stopped: the T after a Gaussian must stay
    above T_MIN (T only falls, so the Gaussians kept are a prefix)."""
    return torch.where(t_after > T_MIN, t_after, 0.0) * alpha / one_minus


def wave_forward(features: Tensor, coef: Tensor, colors: Tensor, t_start: Tensor) -> Tuple[Tensor, Tensor]:
    """Composite one chunk of Gaussians per row: colour (and weight sum) added [R, P, D + 1] and the
    uncut transmittance after the chunk [R, P]."""
    alpha, one_minus, t_after = _alpha_and_transmittance(features, coef, t_start)
    weight = _weights(alpha, one_minus, t_after)
    return torch.bmm(weight, colors), t_after[..., -1]


def rows_backward(
    features: Tensor,  # [P, 6]
    coef: Tensor,  # [R, 6, B]
    colors: Tensor,  # [R, B, D]
    t_start: Tensor,  # [R, P] uncut transmittance in front of the row
    acc_dot_start: Tensor,  # [R, P] colour composited in front of the row, dotted with the pixel's gradient
    g: Tensor,  # [R, P, D] gradient of the pixel colours
    final_term: Tensor,  # [R, P] C . g - g_alpha * T_final
    conic_rows: Tensor,  # [R, 5, B] mean x, mean y (tile-centred), a, b, c: for absgrad only
    absgrad: bool,
) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """Gradients of one batch of rows: d/dcoef [R, 6, B], d/dcolour [R, B, D] and, with `absgrad`,
    the sums of |d/dmean2d| over pixels [R, 2, B].

    dL/dalpha_k = T_k (c_k . g) - ((C - Acc_k) . g - g_alpha T_final) / (1 - alpha_k), with C the
    pixel's colour and Acc_k the colour composited up to and including Gaussian k."""
    alpha, one_minus, t_after = _alpha_and_transmittance(features, coef, t_start)
    weight = _weights(alpha, one_minus, t_after)
    color_dot = torch.bmm(g, colors.transpose(1, 2))  # [R, P, B]
    acc_dot = torch.cumsum(weight * color_dot, dim=-1) + acc_dot_start[..., None]
    t_before = t_after / one_minus
    v_alpha = t_before * color_dot - (final_term[..., None] - acc_dot) / one_minus
    # d alpha / d log-alpha = alpha, where the gradient flows: drawn, kept and not clamped
    live = (alpha > 0) & (alpha < ALPHA_MAX) & (t_after > T_MIN)
    v_log_alpha = torch.where(live, v_alpha * alpha, 0.0)
    v_coef = torch.matmul(features.T, v_log_alpha)
    v_colors = torch.bmm(weight.transpose(1, 2), g)
    v_abs = None
    if absgrad:
        mx, my, a, b, c = (v[:, None, :] for v in conic_rows.unbind(1))
        dx = features[None, :, 3, None] - mx
        dy = features[None, :, 4, None] - my
        v_abs = torch.stack(
            [(v_log_alpha * (a * dx + b * dy)).abs().sum(1), (v_log_alpha * (b * dx + c * dy)).abs().sum(1)], dim=1
        )
    return v_coef, v_colors, v_abs


@functools.lru_cache(maxsize=None)
def keep_freed_memory() -> None:
    """Every wave (and every compiled pass) allocates and frees tensors of a few to a few hundred MB. glibc
    mmaps each block above its threshold (32 MiB at most by default) and unmaps it when freed, and page
    faults cost this VM about 0.7 GB/s: a fresh 38 MB tensor (the SH gradient at 200k Gaussians) took 55 ms
    to fill, one reused from the heap 0.7 ms (/tmp/alloc.py figures in docs/benchmarks.md). So blocks up
    to 1 GiB come from the heap, and the heap is trimmed only past 2 GiB free: the process keeps up to
    that much freed memory for its next step."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 2 << 30)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):  # not glibc
        pass


def _inductor_options() -> dict:
    """Inductor's loops at most 256 bits wide. Where it picks 512-bit vectors (an Intel Xeon with AVX-512
    and AMX, 2026-12-07), its code for these kernels wrote past a buffer: glibc aborted on a corrupted heap
    in test_matches_dense_reference[torch-*], which passes eagerly and with 256-bit loops. Asked when the
    first kernel compiles, as Inductor itself asks (a cached dry-run build)."""
    from torch._inductor.cpu_vec_isa import pick_vec_isa

    isa = pick_vec_isa()
    return {"cpp.simdlen": 256} if isa and isa.bit_width() > 256 else {}


class _Kernel:
    """A per-row kernel run through `torch.compile`, which fuses its dozen elementwise passes into
    one C++ loop (no temporaries), when that works here; eagerly otherwise, or with
    TINYSPLAT_COMPILE=0. Same arithmetic either way. Once one kernel's compile has failed, all run
    eagerly: one warning line, and no second attempt that would fail the same way."""

    failed = False

    def __init__(self, fn):
        self.eager = fn
        self.compiles = os.environ.get("TINYSPLAT_COMPILE", "1") != "0"
        self.compiled = None

    def __call__(self, *args):
        if _Kernel.failed:
            self.compiled = None
        elif self.compiles:
            # Inductor's C++ build notes that no CUDA runtime exists, which is expected on a CPU.
            logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
            try:
                if self.compiled is None:
                    self.compiled = torch.compile(self.eager, dynamic=True, options=_inductor_options())
                return self.compiled(*args)
            except Exception as e:  # no C++ compiler, an unsupported platform, ...
                first = str(e).strip().splitlines()[:1] or [""]
                warnings.warn(
                    f"TinySplat rasterizes eagerly (slower): torch.compile failed with {type(e).__name__}: "
                    f"{first[0][:300]}; TINYSPLAT_COMPILE=0 silences this",
                    stacklevel=2,
                )
                _Kernel.failed = True
                self.compiled = None
        return self.eager(*args)


_wave_forward = _Kernel(wave_forward)
_rows_backward = _Kernel(rows_backward)


class RasterizeToPixels(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d, conics, colors, opacities, background, plan: TilePlan, absgrad_out: Optional[Tensor]):
        keep_freed_memory()
        dtype = means2d.dtype
        D = colors.shape[-1]
        P = plan.tile_size**2
        table = torch.cat([means2d, conics, opacities[:, None]], dim=1)
        table = torch.cat([table, table.new_zeros(1, 6)])  # sentinel row: opacity 0, never drawn
        # a column of ones makes the colour matmul also sum the weights: T_end = T_start - sum(w)
        colors_s = torch.cat([colors, torch.ones_like(colors[:, :1])], dim=1)
        colors_s = torch.cat([colors_s, colors_s.new_zeros(1, D + 1)])
        features = _pixel_features(plan.tile_size, means2d)

        inside = _image_to_tiles(means2d.new_ones(plan.height, plan.width, 1), plan)[..., 0]
        t_start = inside[plan.tile_ids]  # padding pixels start opaque: never drawn
        t_open = t_start.clone()  # transmittance with no cut-off: drives the stop test
        acc = means2d.new_zeros(len(plan.tile_ids), P, D + 1)
        rows = _Rows(plan, table, colors_s)
        done_rows, row_t, row_acc = [], [], []
        alive = torch.ones(len(plan.tile_ids), dtype=torch.bool, device=means2d.device)
        for w, n in enumerate(plan.wave_sizes):
            tiles = torch.nonzero(alive[:n]).squeeze(1)
            if len(tiles) == 0:
                break
            wave_rows = rows.wave_start[w] + tiles
            t0 = t_open[tiles]
            added, t_end = _wave_forward(features, rows.coef[wave_rows], rows.colors[wave_rows], t0)
            done_rows.append(wave_rows)
            row_t.append(t0)
            row_acc.append(acc[tiles, :, :D])
            acc[tiles] += added
            t_open[tiles] = t_end
            alive[tiles] = (t_end > T_MIN).any(1)

        t_final = t_start - acc[..., D]
        out = acc[..., :D] if background is None else acc[..., :D] + t_final[..., None] * background
        # tiles that no Gaussian touches show the background
        image = _tiles_to_image(_scatter_tiles(out, plan, fill=0.0 if background is None else background), plan)
        alpha_img = 1.0 - _tiles_to_image(_scatter_tiles(t_final[..., None], plan, fill=1.0), plan)

        def cat(parts, empty_shape, dtype=dtype):
            return torch.cat(parts) if parts else torch.zeros(empty_shape, dtype=dtype, device=means2d.device)

        ctx.plan, ctx.rows, ctx.absgrad_out = plan, rows, absgrad_out
        ctx.has_background = background is not None
        ctx.n_gaussians = len(means2d)
        ctx.save_for_backward(
            cat(done_rows, (0,), torch.long), cat(row_t, (0, P)), cat(row_acc, (0, P, D)), out, t_final
        )
        return image, alpha_img

    @staticmethod
    def backward(ctx, v_image, v_alpha_img):
        plan: TilePlan = ctx.plan
        rows: _Rows = ctx.rows
        done_rows, row_t, row_acc, out, t_final = ctx.saved_tensors
        N, D = ctx.n_gaussians, out.shape[-1]
        features = _pixel_features(plan.tile_size, out)

        g = _image_to_tiles(v_image, plan)[plan.tile_ids]  # [T, P, D]
        g_alpha = _image_to_tiles(v_alpha_img, plan)[plan.tile_ids][..., 0]  # [T, P]
        final_term = (out * g).sum(-1) - g_alpha * t_final  # [T, P]

        v_table = out.new_zeros(N + 1, 6)
        v_colors = out.new_zeros(N + 1, D + 1)
        v_abs = out.new_zeros(N + 1, 2) if ctx.absgrad_out is not None else None
        rows_per_batch = max(1, (1 << 21) // (plan.tile_size**2 * plan.chunk))
        for s in range(0, len(done_rows), rows_per_batch):
            sl = slice(s, s + rows_per_batch)
            batch = done_rows[sl]
            tiles = rows.tiles[batch]
            gt = g[tiles]  # [R, P, D]
            v_coef, v_col, v_abs_rows = _rows_backward(
                features, rows.coef[batch], rows.colors[batch, :, :D], row_t[sl], (row_acc[sl] * gt).sum(-1), gt,
                final_term[tiles], rows.shape[batch, :5], v_abs is not None,
            )  # fmt: skip
            v_rows = rows.grad_from_coef(batch, v_coef)  # [R, B, 6]
            gids = rows.gids[batch].reshape(-1)
            v_table.index_add_(0, gids, v_rows.reshape(-1, 6))
            v_colors[:, :D].index_add_(0, gids, v_col.reshape(-1, D))
            if v_abs is not None:
                v_abs.index_add_(0, gids, v_abs_rows.transpose(1, 2).reshape(-1, 2))

        v_background = None
        if ctx.has_background and ctx.needs_input_grad[4]:
            t_image = _tiles_to_image(_scatter_tiles(t_final[..., None], plan, fill=1.0), plan)
            v_background = (t_image * v_image).sum((0, 1))
        if v_abs is not None:
            ctx.absgrad_out += v_abs[:N]
        return v_table[:N, :2], v_table[:N, 2:5], v_colors[:N, :D], v_table[:N, 5], v_background, None, None


def _scatter_tiles(values: Tensor, plan: TilePlan, fill) -> Tensor:
    """Per used tile -> per tile of the image; tiles no Gaussian touches hold `fill`."""
    full = values.new_empty((plan.tiles_x * plan.tiles_y,) + values.shape[1:])
    full[...] = fill
    full[plan.tile_ids] = values
    return full


def rasterize_to_pixels(
    means2d: Tensor,  # [N, 2]
    conics: Tensor,  # [N, 3]
    colors: Tensor,  # [N, D]
    opacities: Tensor,  # [N]
    plan: TilePlan,
    background: Optional[Tensor] = None,  # [D]
    absgrad_out: Optional[Tensor] = None,  # [N, 2]
) -> Tuple[Tensor, Tensor]:
    """Composite one camera's projected Gaussians: image [H, W, D] and alpha [H, W, 1].

    When `absgrad_out` is given, the backward pass adds to it the per-pixel absolute gradients of
    `means2d`, summed (the densification signal of AbsGS, as gsplat's `absgrad`)."""
    return RasterizeToPixels.apply(means2d, conics, colors, opacities, background, plan, absgrad_out)
