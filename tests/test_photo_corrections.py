"""Camera pose optimisation (`--pipeline.model.camera-optimizer.mode SO3xR3`) and the bilateral grid
(`--pipeline.model.use-bilateral-grid True`), proven by their effect against a known truth: a copy of
the real scene whose training photos were changed in known ways (tests/perturbed_scene.py), trained
with and without the correction, scored on the scene's own test photos and poses."""

import pytest
import torch
from perturbed_scene import grid_gains, held_out_psnr, perturbed_scene, pose_errors, trained


def test_pose_optimisation_moves_moved_cameras_back(tmp_path):
    """Training cameras turned by 1.5 degrees and moved by 1.5% of the cameras' spread: 1000 steps of
    SO3xR3 take them part of the way back and the test photos score higher than without it."""
    data = perturbed_scene(tmp_path / "scene", degrees=1.5, shift=0.015)
    off = trained(data, tmp_path / "off", 1000)
    on = trained(data, tmp_path / "on", 1000, pipeline__model__camera_optimizer__mode="SO3xR3")
    before, after = pose_errors(off, data).mean(1), pose_errors(on, data).mean(1)
    assert abs(before[0] - 1.5) < 1e-3  # the perturbation, seen in the run's frame
    gain = held_out_psnr(on) - held_out_psnr(off)
    print(f"pose error {before.tolist()} -> {after.tolist()}, test PSNR +{gain:.2f} dB")
    # measured (1000 steps): 1.50 -> 0.93 degrees, 0.0166 -> 0.0120 units, +1.64 dB; other draws of the
    # moves gave 0.99-1.05 degrees, 0.0136 units, +0.9 dB
    assert after[0] < 0.8 * before[0]
    assert after[1] < 0.9 * before[1]
    assert gain > 0.4


def test_bilateral_grid_learns_each_photos_exposure_and_white_balance(tmp_path):
    """Training photos each with their own exposure (up to a stop either way) and white balance (each
    channel up to 30% more or less): with the grid, each photo's correction follows the change made to
    it, the grids' mean stays the identity (the look common to all photos is the Gaussians'), and the
    test photos score higher than without it."""
    data = perturbed_scene(tmp_path / "scene", stops=1.0, white_balance=0.3)
    half_size = {"pipeline__model__resolution_schedule": 10**6}  # the preset's first 1000 steps' size throughout
    off = trained(data, tmp_path / "off", 2000, **half_size)
    on = trained(data, tmp_path / "on", 2000, pipeline__model__use_bilateral_grid=True, **half_size)
    learned, made = grid_gains(on, data)
    correlation = float(torch.corrcoef(torch.stack([learned.log().flatten(), made.log().flatten()]))[0, 1])
    common = learned.mean(0)  # what the photos' grids do to grey, on average
    gain = held_out_psnr(on) - held_out_psnr(off)
    print(f"grid gains against the photos': correlation {correlation:.3f}, mean {common.tolist()}; +{gain:.2f} dB")
    # The gain grows as the run without the grid bends its colours to each photo's: at half a stop and
    # 15%, 1500 steps gave anything from -0.06 to +0.94 dB as rounding changed (a kernel's summation
    # order, AVX2 or AVX-512); 3000 steps +2.03. Here, 2000 steps, seven runs over training seeds 42-44
    # and both builds: +1.19 to +3.41 dB, correlation 0.978
    assert correlation > 0.8
    assert (common - 1).abs().max() < 1e-3
    assert gain > 0.6


def test_compiled_bilateral_grid_matches_nerfstudios_in_float64():
    """The grid as training applies it on a CPU (core/kernels/bilateral_grid.cpp, its gradient written by
    hand) against Nerfstudio's `slice` (F.grid_sample, autograd) in float64: random colour maps in a grid
    that is not square, an image of another shape, colours beyond [0, 1] too (their grey level clamped at
    the grid's ends, where grid_sample gives it no gradient)."""
    from nerfstudio.model_components.lib_bilagrid import BilateralGrid, slice

    from tinysplat_ns.core.kernels import bilateral_grid as compiled

    gen = torch.Generator().manual_seed(0)
    grids = BilateralGrid(num=3, grid_X=16, grid_Y=12, grid_W=8).double()
    with torch.no_grad():
        grids.grids.add_(0.3 * torch.randn(grids.grids.shape, generator=gen, dtype=torch.float64))
    height, width = 37, 53
    rgb = torch.rand(height, width, 3, generator=gen, dtype=torch.float64) * 1.4 - 0.2
    v_out = torch.randn(height, width, 3, generator=gen, dtype=torch.float64)
    f64 = dict(dtype=torch.float64)
    rows, cols = torch.meshgrid(torch.linspace(0, 1, height, **f64), torch.linspace(0, 1, width, **f64), indexing="ij")
    reference_rgb = rgb.clone().requires_grad_()
    expected = slice(grids, torch.stack([cols, rows], -1)[None], reference_rgb[None], torch.tensor(1))["rgb"][0]
    (expected * v_out).sum().backward()

    grid, ours_rgb = grids.grids.detach()[1].float().requires_grad_(), rgb.float().requires_grad_()
    assert compiled.supports(grid, ours_rgb)
    out = compiled.apply(grid, ours_rgb)
    (out * v_out.float()).sum().backward()
    assert (out.double() - expected).abs().max() < 1e-5
    pairs = (("image", ours_rgb.grad, reference_rgb.grad), ("grid", grid.grad, grids.grids.grad[1]))
    for name, ours, reference in pairs:
        error = float((ours.double() - reference).abs().max() / reference.abs().max())
        assert error < 1e-5, f"{name} gradient: relative error {error:.3g}"


def test_grids_total_variation_matches_nerfstudios():
    """The grids' smoothness term with its gradient in one pass (core/bilateral_grid.py) against
    Nerfstudio's `total_variation_loss` through autograd, in float64, on grids of unequal sides."""
    from nerfstudio.model_components.lib_bilagrid import total_variation_loss

    from tinysplat_ns.core.bilateral_grid import total_variation

    grids = torch.randn(5, 12, 4, 6, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    reference, ours = grids.clone().requires_grad_(), grids.clone().requires_grad_()
    expected = total_variation_loss(reference)
    value = total_variation(ours)
    (3 * expected).backward()
    (3 * value).backward()
    assert value.item() == pytest.approx(expected.item(), rel=1e-12)
    assert torch.allclose(ours.grad, reference.grad, rtol=1e-12, atol=1e-15)
