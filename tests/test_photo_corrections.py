"""Camera pose optimisation (`--pipeline.model.camera-optimizer.mode SO3xR3`) and the bilateral grid
(`--pipeline.model.use-bilateral-grid True`), proven by their effect against a known truth: a copy of
the real scene whose training photos were changed in known ways (tests/perturbed_scene.py), trained
with and without the correction, scored on the scene's own test photos and poses."""

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
    """Training photos each with their own exposure (up to half a stop either way) and white balance
    (each channel up to 15% more or less): with the grid, each photo's correction follows the change
    made to it, the grids' mean stays the identity (the look common to all photos is the Gaussians'),
    and the test photos score higher than without it."""
    data = perturbed_scene(tmp_path / "scene", stops=0.5, white_balance=0.15)
    half_size = {"pipeline__model__resolution_schedule": 10**6}  # the preset's first 1000 steps' size throughout
    off = trained(data, tmp_path / "off", 1500, **half_size)
    on = trained(data, tmp_path / "on", 1500, pipeline__model__use_bilateral_grid=True, **half_size)
    learned, made = grid_gains(on, data)
    correlation = float(torch.corrcoef(torch.stack([learned.log().flatten(), made.log().flatten()]))[0, 1])
    common = learned.mean(0)  # what the photos' grids do to grey, on average
    gain = held_out_psnr(on) - held_out_psnr(off)
    print(f"grid gains against the photos': correlation {correlation:.3f}, mean {common.tolist()}; +{gain:.2f} dB")
    # measured (1500 steps at half size): correlation 0.964, on average 1.000, +0.74 dB; free grids
    # (splatfacto's): 0.997 / 0.994 / 0.992 on average, -0.22 dB. At 3000 steps at full size the grid
    # gains 3.83 of the 6.78 dB that undoing each change exactly gains (benchmarks/photo_corrections.py)
    assert correlation > 0.8
    assert (common - 1).abs().max() < 1e-3
    assert gain > 0.4
