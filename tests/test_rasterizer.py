"""Our CPU rasterizers, compiled (core/kernels/rasterize) and pure PyTorch (rasterize_torch), forward and
hand-written backward, against the dense float64 reference, on Gaussians placed at the real scene's
SfM points, seen by its real cameras."""

import pytest
import torch
from dense_reference import render_dense
from scene import load_cameras, load_points, scene_dir

from tinysplat_ns.core.rasterization import rasterization

# Tolerances: measured worst cases were 2e-15 (float64) and 2e-6 (float32) for images and
# relative gradients; the bounds leave a margin of about 10x.
TOL = {torch.float64: 1e-12, torch.float32: 2e-5}
# The 2D means' gradients and absgrad sum per-pixel terms; in float32 a pixel whose alpha sits on the
# 1/255 cut can fall on the other side than in float64 and move one Gaussian's sum by a whole pixel's
# term: measured 6e-4 (absgrad) and 2.1e-3 (gradient, both backends).
TOL_ABSGRAD = {torch.float64: 1e-12, torch.float32: 3e-3}


def real_gaussians(n: int, opaque: bool, seed: int = 0):
    """`n` Gaussians at the scene's SfM points with their colours (SH degree 3), scales from the
    nearest neighbours. `opaque` makes them large and nearly opaque, so pixels saturate and stop
    early, and some alphas reach the 0.999 clamp."""
    gen = torch.Generator().manual_seed(seed)
    xyz, rgb = load_points(scene_dir())
    pick = torch.randperm(len(xyz), generator=gen)[:n]
    xyz, rgb = xyz[pick], rgb[pick]
    dist = torch.cdist(xyz, xyz)
    dist.fill_diagonal_(float("inf"))
    log_scale = torch.log(dist.topk(3, largest=False).values.mean(1))[:, None].repeat(1, 3)
    log_scale = log_scale + 0.3 * torch.randn(n, 3, generator=gen, dtype=torch.float64) + (1.0 if opaque else 0.0)
    low, high = (0.9, 0.99995) if opaque else (0.02, 0.99)
    opacities = low + (high - low) * torch.rand(n, generator=gen, dtype=torch.float64)
    sh = 0.1 * torch.randn(n, 16, 3, generator=gen, dtype=torch.float64)
    sh[:, 0] = (rgb - 0.5) / 0.28209479177387814
    quats = torch.randn(n, 4, generator=gen, dtype=torch.float64)
    return {"means": xyz, "quats": quats, "log_scales": log_scale, "opacities": opacities, "sh": sh}


def camera(index: int):
    viewmats, Ks, sizes, _ = load_cameras(scene_dir(), scale=0.25)
    return viewmats[index], Ks[index], sizes[index]


CASES = [  # (what, opaque, antialiased, camera)
    ("sfm points", False, False, 5),
    ("saturated pixels", True, False, 17),
    ("antialiased", False, True, 30),
]


@pytest.mark.parametrize("what,opaque,antialiased,cam", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize(
    "backend,dtype",
    [("torch", torch.float64), ("torch", torch.float32), ("cpp", torch.float32)],
    ids=["torch-float64", "torch-float32", "cpp-float32"],
)
def test_matches_dense_reference(what, opaque, antialiased, cam, backend, dtype):
    g = real_gaussians(1500, opaque)
    viewmat, K, (width, height) = camera(cam)
    background = torch.tensor([0.2, 0.5, 0.7], dtype=torch.float64)
    gen = torch.Generator().manual_seed(1)
    w_rgb = torch.rand(height, width, 3, generator=gen, dtype=torch.float64)
    w_depth = torch.rand(height, width, 1, generator=gen, dtype=torch.float64)
    w_alpha = torch.rand(height, width, 1, generator=gen, dtype=torch.float64)

    ref_params = [v.clone().requires_grad_() for v in g.values()]
    means, quats, log_scales, opacities, sh = ref_params
    rgb, depth, alpha, stats = render_dense(
        means, quats, log_scales.exp(), opacities, sh, 3, viewmat, K, width, height, background,
        antialiased=antialiased, per_pixel_means2d=True,
    )  # fmt: skip
    loss = (rgb * w_rgb).sum() + (depth * w_depth).sum() + (alpha * w_alpha).sum()
    ref_grads = torch.autograd.grad(loss, ref_params + [stats["pixel_means2d"]])
    ref_absgrad = ref_grads[-1].abs().sum(0)  # [N_kept, 2]
    if opaque:
        assert stats["stopped_pixels"] > 100, "the case must exercise the early stop"

    def render_ours(absgrad: bool):
        params = [v.detach().to(dtype).requires_grad_() for v in g.values()]
        means, quats, log_scales, opacities, sh = params
        out, out_alpha, info = rasterization(
            means, quats, log_scales.exp(), opacities, sh, viewmat[None].to(dtype), K[None].to(dtype),
            width, height, sh_degree=3, backgrounds=background[None].to(dtype), render_mode="RGB+ED",
            rasterize_mode="antialiased" if antialiased else "classic", absgrad=absgrad, backend=backend,
        )  # fmt: skip
        info["means2d"].retain_grad()
        loss = (out[0, ..., :3] * w_rgb.to(dtype)).sum() + (out[0, ..., 3:] * w_depth.to(dtype)).sum()
        loss = loss + (out_alpha[0] * w_alpha.to(dtype)).sum()
        loss.backward()
        return params, out, out_alpha, info

    ours, out, out_alpha, info = render_ours(absgrad=True)
    if backend == "cpp":  # without absgrad the compiled backward is a kernel of its own: the same gradients,
        # but for the 2D means' rounding (the compiler fuses other multiply-adds there): measured 8.7e-8
        for a, b in zip(render_ours(absgrad=False)[0], ours, strict=True):
            assert (a.grad - b.grad).abs().max() <= 1e-6 * b.grad.abs().max()

    tol = TOL[dtype]
    assert torch.equal(info["radii"][0], stats["radii"])
    assert (out[0, ..., :3].double() - rgb).abs().max() < tol
    assert (out_alpha[0].double() - alpha).abs().max() < tol
    drawn = alpha[..., 0] > 0.05  # expected depth is ill-conditioned where almost nothing is drawn
    assert ((out[0, ..., 3].double() - depth[..., 0]).abs()[drawn] / depth[..., 0][drawn]).max() < tol * 10
    for name, ours_param, ref_grad in zip(g.keys(), ours, ref_grads[:-1], strict=True):
        err = (ours_param.grad.double() - ref_grad).abs().max() / ref_grad.abs().max()
        assert err < tol, f"gradient of {name}: relative error {err:.3g}"
    kept = (stats["radii"] > 0).nonzero().squeeze(1)
    depths = info["depths"][0].detach().double()[kept]
    ref_order = kept[torch.argsort(depths, stable=True)]
    # the 2D means' gradients, what ADC's densification reads
    ours_grad2d = info["means2d"].grad[0].double()[ref_order]
    ref_grad2d = ref_grads[-1].sum(0)
    err = (ours_grad2d - ref_grad2d).abs().max() / ref_grad2d.abs().max()
    assert err < TOL_ABSGRAD[dtype], f"gradient of means2d: relative error {err:.3g}"
    ours_absgrad = info["means2d"].absgrad[0].double()[ref_order]
    err = (ours_absgrad - ref_absgrad).abs().max() / ref_absgrad.abs().max()
    assert err < TOL_ABSGRAD[dtype], f"absgrad: relative error {err:.3g}"


def test_gsplat_backend_refuses_cpu_tensors():
    """On a CPU, gsplat's ops would start a CUDA build; the error says what to do instead."""
    g = real_gaussians(10, False)
    viewmat, K, (width, height) = camera(0)
    with pytest.raises(ValueError, match="backend='torch'"):
        rasterization(
            g["means"], g["quats"], g["log_scales"].exp(), g["opacities"], g["sh"], viewmat[None], K[None],
            width, height, sh_degree=3, backend="gsplat",
        )  # fmt: skip


@pytest.mark.parametrize("backend", ["cpp", "torch"])
def test_cameras_in_one_call_render_as_one_by_one(backend):
    """Two cameras in one call give each camera's image and 2D-mean gradients (absgrad too) as it
    alone would, and the Gaussians the sum of the two gradients."""
    g = real_gaussians(800, False)
    viewmat, K, (width, height) = camera(5)
    moved = viewmat.clone()
    moved[:3, 3] += torch.tensor([0.05, -0.02, 0.1], dtype=torch.float64)
    gen = torch.Generator().manual_seed(2)
    weights = torch.rand(2, height, width, 3, generator=gen)

    def render(viewmats, weights):
        params = [v.detach().float().requires_grad_() for v in g.values()]
        means, quats, log_scales, opacities, sh = params
        out, alpha, info = rasterization(
            means, quats, log_scales.exp(), opacities, sh, viewmats.float(), K.expand(len(viewmats), 3, 3).float(),
            width, height, sh_degree=3, absgrad=True, backend=backend,
        )  # fmt: skip
        info["means2d"].retain_grad()
        ((out * weights).sum() + alpha.sum()).backward()
        return out.detach(), [p.grad for p in params], info["means2d"].grad, info["means2d"].absgrad

    both = render(torch.stack([viewmat, moved]), weights)
    alone = [render(v[None], w[None]) for v, w in ((viewmat, weights[0]), (moved, weights[1]))]
    # batched, the PyTorch projection rounds differently: measured 4.8e-7 (images), 4.4e-7 (relative
    # gradients); the compiled path gave the same images and 2D-mean gradients bit for bit
    for c in range(2):
        assert (both[0][c] - alone[c][0][0]).abs().max() < 5e-6
        for ours, reference in ((both[2][c], alone[c][2][0]), (both[3][c], alone[c][3][0])):
            assert (ours - reference).abs().max() <= 1e-5 * reference.abs().max()
    for name, grad, first, second in zip(g.keys(), both[1], alone[0][1], alone[1][1], strict=True):
        summed = first + second
        assert (grad - summed).abs().max() <= 1e-5 * summed.abs().max(), name


@pytest.mark.parametrize("cameras", [1, 2])
def test_optimised_camera_poses_get_their_gradient_on_the_compiled_path(monkeypatch, cameras):
    """One camera (training's) or two whose poses are being optimised (`viewmats.requires_grad`, as with
    `--pipeline.model.camera-optimizer.mode SO3xR3`): the compiled path renders them itself (the
    PyTorch projection and SH are never called) and gives the poses, and the Gaussians, the gradients
    PyTorch's autograd gives through the float64 PyTorch path."""
    import tinysplat_ns.core.rasterization as rasterization_module

    g = real_gaussians(800, False)
    viewmat, K, (width, height) = camera(5)
    moved = viewmat.clone()
    moved[:3, 3] += torch.tensor([0.05, -0.02, 0.1], dtype=torch.float64)
    weights = torch.rand(cameras, height, width, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)

    def render(backend, dtype):
        params = [v.detach().to(dtype).requires_grad_() for v in g.values()]
        means, quats, log_scales, opacities, sh = params
        viewmats = torch.stack([viewmat, moved][:cameras]).to(dtype).requires_grad_()
        out, alpha, _ = rasterization(
            means, quats, log_scales.exp(), opacities, sh, viewmats, K.expand(cameras, 3, 3).to(dtype), width, height,
            sh_degree=3, backend=backend,
        )  # fmt: skip
        ((out * weights.to(dtype)).sum() + alpha.sum()).backward()
        return out.detach().double(), pose_gradient(viewmats), [p.grad.double() for p in params]

    def pose_gradient(viewmats):
        """The derivatives along the moves a pose can make (what a camera optimiser's parameters see): turns
        about the camera's axes, [w]x R, and shifts of t; the matrix's other directions leave SO(3)."""
        rotations, grad = viewmats.detach().double()[:, :3, :3], viewmats.grad.double()
        axes = torch.eye(3, dtype=torch.float64)
        turns = torch.stack([torch.linalg.cross(axes[k].expand(3, 3), axes, dim=-1).T for k in range(3)])
        along_turns = torch.einsum("cij,kil,clj->ck", grad[:, :3, :3], turns, rotations)
        return torch.cat([along_turns, grad[:, :3, 3]], dim=1)

    reference = render("torch", torch.float64)

    def not_on_the_compiled_path(*args, **kwargs):
        raise AssertionError("the PyTorch projection or SH ran")

    monkeypatch.setattr(rasterization_module, "project_gaussians", not_on_the_compiled_path)
    monkeypatch.setattr(rasterization_module, "eval_sh", not_on_the_compiled_path)
    ours = render("cpp", torch.float32)
    assert (ours[0] - reference[0]).abs().max() < 2e-5
    # float32 against float64, relative to the largest entry: measured 1.0e-6 (poses; 0.19 with the SH
    # colours' share left out), 9.1e-7 (Gaussians)
    pose, pose_reference = ours[1], reference[1]
    assert pose_reference.abs().min() > 0
    assert (pose - pose_reference).abs().max() <= 1e-5 * pose_reference.abs().max()
    for name, grad, expected in zip(g.keys(), ours[2], reference[2], strict=True):
        assert (grad - expected).abs().max() <= 1e-5 * expected.abs().max(), name


@pytest.mark.parametrize("depth_range", ["projected", "4 to 6", "one depth"])
@pytest.mark.parametrize("threads", [1, 2, 3, 7])
def test_compiled_plan_is_the_torch_plan(threads, depth_range):
    """The compiled planner (radix sort by depth, counting sort by tile row then by tile, each shared
    among `threads` workers in pieces) gives exactly the pure-PyTorch plan: the same tiles, lists and
    order, depth ties in index order. Depths in [4, 6) share the top 11-bit digit of their bits (sign,
    exponent, the mantissa's first bit), one depth all digits: the sort skips those passes."""
    from tinysplat_ns.core import rasterize_torch
    from tinysplat_ns.core.kernels import rasterize as compiled_rasterizer
    from tinysplat_ns.core.projection import project_gaussians

    g = real_gaussians(1500, False)
    viewmat, K, (width, height) = camera(5)
    proj = project_gaussians(
        g["means"].float(), g["quats"].float(), g["log_scales"].exp().float(), viewmat[None].float(),
        K[None].float(), width, height,
    )  # fmt: skip
    depths = proj.depths[0].clone()
    depths[::5] = depths[7]  # ties, which must keep their index order across the workers' pieces
    if depth_range == "4 to 6":
        depths = 4 + 1.99 * (depths - depths.min()) / (depths.max() - depths.min())
    elif depth_range == "one depth":
        depths = torch.full_like(depths, 3.0)
    args = (proj.means2d[0], proj.conics[0], g["opacities"].float(), depths, proj.radii[0], width, height)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for tile_size in (8, 16):
            ours = compiled_rasterizer.plan_tiles(*args, tile_size)
            reference = rasterize_torch.plan_tiles(*args, tile_size)
            assert reference.n_isects > 10 * len(reference.tile_ids)
            for name in ("tile_ids", "tile_start", "tile_count", "isect_gids"):  # the compiled ids are int32
                assert torch.equal(getattr(ours, name).long(), getattr(reference, name)), name
            assert ours.wave_sizes == reference.wave_sizes
    finally:
        torch.set_num_threads(before)


def test_plan_lists_every_tile_a_gaussian_draws_in_and_few_others():
    """A tile's list must hold every Gaussian that draws a pixel of it (alpha >= 1/255 as the kernels
    compute it, in float32), or the picture loses it; every other entry is work for nothing. Thin,
    turned Gaussians fill little of their axis-aligned box of tiles: the plan follows each one's ellipse
    row by row of tiles: measured 70 entries beyond the 11,683 drawn, against 10,097 for the boxes."""
    from tinysplat_ns.core import rasterize_torch
    from tinysplat_ns.core.projection import project_gaussians

    g = real_gaussians(1500, False)
    stretch = torch.tensor([1.5, -1.0, -1.0], dtype=torch.float64)  # one axis long, two short
    viewmat, K, (width, height) = camera(5)
    proj = project_gaussians(
        g["means"].float(), g["quats"].float(), (g["log_scales"] + stretch).exp().float(), viewmat[None].float(),
        K[None].float(), width, height,
    )  # fmt: skip
    means2d, conics, radii, opacities = proj.means2d[0], proj.conics[0], proj.radii[0], g["opacities"].float()
    plan = rasterize_torch.plan_tiles(means2d, conics, opacities, proj.depths[0], radii, width, height, 8)
    listed = set()
    for tile, start, count in zip(plan.tile_ids.tolist(), plan.tile_start.tolist(), plan.tile_count.tolist()):
        listed.update((tile, int(gid)) for gid in plan.isect_gids[start : start + count])

    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    tile_of_pixel = ((ys // 8) * plan.tiles_x + xs // 8).flatten()
    dx = (xs.flatten() + 0.5)[None] - means2d[:, :1]  # [N, pixels], float32 as the kernels
    dy = (ys.flatten() + 0.5)[None] - means2d[:, 1:]
    a, b, c = conics.unbind(-1)
    sigma = 0.5 * (a[:, None] * dx * dx + c[:, None] * dy * dy) + b[:, None] * dx * dy
    draws = (opacities[:, None] * torch.exp(-sigma) >= 1.0 / 255.0) & (radii > 0)[:, None]
    gid, pixel = draws.nonzero(as_tuple=True)
    drawn = set(zip(tile_of_pixel[pixel].tolist(), gid.tolist()))

    assert len(drawn) > 5000
    assert drawn <= listed, f"{len(drawn - listed)} (tile, Gaussian) pairs drawn but not listed"
    assert len(listed - drawn) <= 0.05 * len(drawn), f"{len(listed - drawn)} listed, not drawn, of {len(drawn)}"


def spread_gaussians(n: int, seed: int = 0):
    """Gaussians in front of, beside (the Jacobian's clamp) and behind a camera at the origin."""
    gen = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=gen, dtype=torch.float64) * torch.tensor([3.0, 2.0, 2.0]) + torch.tensor(
        [0.0, 0.0, 2.5]
    )
    quats = torch.randn(n, 4, generator=gen, dtype=torch.float64)
    scales = torch.rand(n, 3, generator=gen, dtype=torch.float64) ** 2 * 0.8 + 0.01  # some large: seen from beside the view
    angle = torch.tensor(0.3, dtype=torch.float64)  # a turned and shifted camera
    viewmat = torch.eye(4, dtype=torch.float64)
    viewmat[:3, :3] = torch.tensor(
        [[angle.cos(), 0, angle.sin()], [0, 1, 0], [-angle.sin(), 0, angle.cos()]], dtype=torch.float64
    )
    viewmat[:3, 3] = torch.tensor([0.2, -0.1, 0.3])
    K = torch.tensor([[120.0, 0, 70], [0, 110.0, 45], [0, 0, 1]], dtype=torch.float64)
    return means, quats, scales, viewmat[None], K[None]


@pytest.mark.parametrize("antialiased", [False, True], ids=["classic", "antialiased"])
def test_compiled_projection_matches_pytorch(antialiased):
    """The compiled projection (core/kernels/project) against the PyTorch one in float64 (itself checked against
    the dense reference above): every output, and the gradients of means, quaternions and scales for
    random output gradients, over Gaussians in view, clamped beside it and behind the camera."""
    from tinysplat_ns.core.kernels import build, project as compiled_projection
    from tinysplat_ns.core.projection import project_gaussians

    assert build.available()
    means, quats, scales, viewmats, Ks = spread_gaussians(3005)  # not a whole number of vectors of Gaussians
    results = {}
    compiled = compiled_projection.project_gaussians
    for name, project, dtype in (("torch", project_gaussians, torch.float64), ("cpp", compiled, torch.float32)):
        inputs = [t.to(dtype).requires_grad_() for t in (means, quats, scales)]
        proj = project(*inputs, viewmats.to(dtype), Ks.to(dtype), 140, 90, with_compensation=antialiased)
        results[name] = (proj, inputs)
    ref, ours = results["torch"][0], results["cpp"][0]
    kept = ref.radii[0] > 0
    assert 500 < int(kept.sum()) < 2500  # some culled, some drawn
    assert torch.equal(ours.radii, ref.radii)
    for field in ("means2d", "conics", "depths") + (("compensations",) if antialiased else ()):
        a, b = getattr(ours, field)[0][kept].double(), getattr(ref, field)[0][kept]
        assert (a - b).abs().max() / b.abs().max() < 3e-5, field  # measured 1.6e-6
    gen = torch.Generator().manual_seed(1)
    upstream = {f: torch.randn(getattr(ref, f).shape, generator=gen, dtype=torch.float64) for f in ("means2d", "conics", "depths")}
    if antialiased:
        upstream["compensations"] = torch.randn(ref.compensations.shape, generator=gen, dtype=torch.float64)
    for f, g in upstream.items():  # the rasterizer gives a culled Gaussian's 2D shape no gradient
        if f != "depths":
            g[0][~kept] = 0.0
    grads = {}
    for name, (proj, inputs) in results.items():
        loss = sum((getattr(proj, f) * g.to(inputs[0].dtype)).sum() for f, g in upstream.items())
        grads[name] = torch.autograd.grad(loss, inputs)
    # per Gaussian (small gradients of large Gaussians matter too: the Jacobian's clamp acts on them),
    # relative to its gradient's norm or to a thousandth of the largest one; float32 against float64:
    # measured 5.5e-4 at worst (quaternions, antialiased); the clamp's gradient left out gave 4.9e-3
    for what, a, b in zip(("means", "quats", "scales"), grads["cpp"], grads["torch"], strict=True):
        norms = b.norm(dim=1)
        err = ((a.double() - b).norm(dim=1) / norms.clamp_min(1e-3 * norms.max())).max()
        assert err < 2e-3, f"gradient of {what}: relative error {err:.3g}"


@pytest.mark.parametrize("stored", ["16 coefficients", "the degree's"])
@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_compiled_sh_colours_match_pytorch(degree, stored):
    """The compiled SH colours (core/kernels/project; offset and clamped at 0 as rasterized) against
    sh.eval_sh in float64, with the gradients of the coefficients and of the means (through the view directions), from two
    cameras; some colours are clamped. The coefficients stored for degree 3 (as models keep them: the
    forward pass reads them in square blocks) or just the degree's (read a lane at a time), and a
    number of Gaussians that is no whole number of vectors."""
    from tinysplat_ns.core.kernels import project as compiled_projection
    from tinysplat_ns.core.projection import camera_centers
    from tinysplat_ns.core.sh import eval_sh

    n = 2003
    means, _, _, viewmat, _ = spread_gaussians(n)
    viewmats = torch.cat([viewmat, torch.eye(4, dtype=torch.float64)[None]])
    k = 16 if stored == "16 coefficients" else (degree + 1) ** 2
    coeffs = 1.5 * torch.randn(n, k, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    upstream = torch.randn(2, n, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    out = {}
    for name, dtype in (("torch", torch.float64), ("cpp", torch.float32)):
        m, c = means.to(dtype).requires_grad_(), coeffs.to(dtype).requires_grad_()
        if name == "cpp":
            colors = compiled_projection.sh_colors(degree, m, viewmats.to(dtype), c)
        else:
            dirs = m[None] - camera_centers(viewmats)[:, None]
            colors = torch.clamp_min(eval_sh(degree, dirs, c[None]) + 0.5, 0.0)
        out[name] = (colors, *torch.autograd.grad((colors * upstream.to(dtype)).sum(), [m, c], allow_unused=True))
    assert 0 < int((out["torch"][0] == 0).sum()) < out["torch"][0].numel() // 2
    for what, a, b in zip(("colours", "means", "coefficients"), out["cpp"], out["torch"], strict=True):
        if what == "means" and degree == 0:
            assert not a.any()
            continue
        err = (a.double() - b).abs().max() / b.abs().max()
        assert err < 3e-6, f"{what}: relative error {err:.3g}"  # measured 2.6e-7


def test_cpp_backend_refuses_what_it_does_not_take():
    g = real_gaussians(10, False)
    viewmat, K, (width, height) = camera(0)
    with pytest.raises(ValueError, match="backend='torch'"):
        rasterization(
            g["means"], g["quats"], g["log_scales"].exp(), g["opacities"], g["sh"], viewmat[None], K[None],
            width, height, sh_degree=3, backend="cpp",
        )  # fmt: skip


def test_failed_build_falls_back_to_pytorch(tmp_path):
    """No working compiler (and no cached build): one warning naming the fix, then the same picture
    from the pure-PyTorch rasterizer."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = (
        "import torch, warnings\n"
        "from tinysplat_ns.core.kernels import build\n"
        "from tinysplat_ns.core.rasterization import rasterization\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    g = torch.Generator().manual_seed(0)\n"
        "    means = torch.randn(200, 3, generator=g) * 0.3 + torch.tensor([0.0, 0.0, 3.0])\n"
        "    quats, scales = torch.randn(200, 4, generator=g), torch.full((200, 3), 0.05)\n"
        "    K = torch.tensor([[[50.0, 0, 32], [0, 50.0, 24], [0, 0, 1]]])\n"
        "    rgb, alpha, _ = rasterization(means, quats, scales, torch.full((200,), 0.8), torch.rand(200, 3, generator=g),\n"
        "                                  torch.eye(4)[None], K, 64, 48)\n"
        "print(build.available(), float(alpha.max()) > 0.5)\n"
        "print(*(str(w.message) for w in caught if 'rasterizer' in str(w.message)), sep='\\n')\n"
    )
    env = dict(os.environ, HOME=str(tmp_path), CXX=str(tmp_path / "no-compiler"))
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300,
        cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "False True", out.stdout
    assert len(lines) == 2 and "pure-PyTorch rasterizer" in lines[1] and "TINYSPLAT_CPP=0" in lines[1], out.stdout


@pytest.mark.parametrize("backend", ["cpp", "torch"])
def test_a_nan_gaussian_reaches_the_image(backend):
    """A Gaussian whose colour went NaN must show in the picture (NaN pixels), so that the trainer's
    finite check skips the step, rather than vanish. (NaN positions or shapes are culled by the
    projection and the plan.)"""
    g = {k: v.float() for k, v in real_gaussians(300, False).items()}
    viewmat, K, (width, height) = camera(5)

    def render():
        return rasterization(
            g["means"], g["quats"], g["log_scales"].exp(), g["opacities"], g["sh"], viewmat[None].float(),
            K[None].float(), width, height, sh_degree=3, backend=backend,
        )  # fmt: skip

    out, _, info = render()
    assert torch.isfinite(out).all()
    g["sh"][int(torch.nonzero(info["radii"][0] > 0)[0, 0]), 0, 1] = float("nan")
    out, _, _ = render()
    assert 0 < int(torch.isnan(out).any(-1).sum()) < out.shape[1] * out.shape[2] // 2
