"""TinySplat through Nerfstudio's own, unchanged command-line tools, as a user runs them: one short
`ns-train tinysplat-cpu` on the real scene, then ns-eval, ns-export, ns-render and ns-viewer on it."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from plyfile import PlyData
from training import TRAINED_STEPS

BIN = Path(sys.executable).parent
# Mean PSNR over the 4 test views after the shared run's 300 steps: measured 18.35 dB (2026-12-06);
# one step from the SfM points gives 11.7 dB. The floor leaves 1.2 dB for noise.
PSNR_FLOOR = 17.5


def run_tool(cmd, cwd, env, timeout=900):
    result = subprocess.run(
        [str(BIN / cmd[0]), *map(str, cmd[1:])], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"{cmd[0]} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def run(trained, tmp_path_factory):
    """The suite's short CPU training run of the real scene (conftest's `trained`), looked at with no
    LPIPS weights on disk (as offline): a folder for what the tools write, their environment, its config."""
    _, config = trained
    work = tmp_path_factory.mktemp("e2e")
    return work, {**os.environ, "TORCH_HOME": str(work / "torch_home")}, config


def test_entry_point_is_discovered(tmp_path):
    out = run_tool(["ns-train", "tinysplat", "--help"], tmp_path, dict(os.environ)).stdout
    assert "Gaussian Splatting on CPU" in out and "--pipeline.model.max-gaussians" in out


def test_nerfstudio_starts_without_inspecting_the_stack_and_still_offers_external_methods(tmp_path):
    """tinysplat_ns/nerfstudio_startup.py: the import every Nerfstudio command runs calls no
    inspect.stack() (Nerfstudio's own check calls it once per external method it lists, 26 times);
    picking an external method that is not installed still offers to install it, and "n" installs nothing."""
    counting = (
        "import inspect; calls = []; stack = inspect.stack\n"
        # the caller's frames, as inspect.stack gives them (without this lambda's)
        "inspect.stack = lambda context=1: calls.append(1) or stack(context)[1:]\n"
        "import nerfstudio.configs.method_configs as m\n"
        "assert 'zipnerf' in m.all_methods and 'tinysplat' in m.all_methods\n"
        "print('inspect.stack calls:', len(calls))\n"
    )
    result = subprocess.run([sys.executable, "-c", counting], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "inspect.stack calls: 0", result.stdout

    offer = subprocess.run([str(BIN / "ns-train"), "zipnerf"], input="n\n", capture_output=True, text=True,
                           cwd=tmp_path, timeout=300)  # fmt: skip
    assert offer.returncode == 0, offer.stderr[-3000:]
    assert "To enable Zip-NeRF, you must install it first" in offer.stdout
    assert "Would you like to run the install it now?" in offer.stdout


def test_checkpoint_loads_with_torch_default_weights_only(run):
    _, _, config = run
    checkpoint = sorted((config.parent / "nerfstudio_models").glob("*.ckpt"))[-1]
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert state["step"] == TRAINED_STEPS - 1
    assert all(isinstance(g["lr"], float) for opt in state["optimizers"].values() for g in opt["param_groups"])


def test_eval_reports_psnr_ssim_and_skips_lpips_offline(run):
    work, env, config = run
    result = run_tool(["ns-eval", "--load-config", config, "--output-path", work / "eval.json"], work, env)
    metrics = json.loads((work / "eval.json").read_text())["results"]
    assert "LPIPS skipped" in result.stdout
    assert "lpips" not in metrics
    assert metrics["psnr"] >= PSNR_FLOOR, metrics
    assert 0.5 < metrics["ssim"] <= 1.0


def test_eval_reports_lpips_when_its_weights_are_on_disk(run, tmp_path):
    """Weights in torch's cache are used, never downloaded. (Random AlexNet weights stand in for
    the real ones, which this offline machine cannot fetch: the value is meaningless, the path is
    the one a user with the weights takes.)"""
    import torchvision

    work, env, config = run
    checkpoints = tmp_path / "torch_home" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    url = torchvision.models.AlexNet_Weights.DEFAULT.url
    torch.save(torchvision.models.alexnet().state_dict(), checkpoints / url.rsplit("/", 1)[-1])
    env = {**env, "TORCH_HOME": str(tmp_path / "torch_home")}
    result = run_tool(["ns-eval", "--load-config", config, "--output-path", tmp_path / "eval.json"], work, env)
    metrics = json.loads((tmp_path / "eval.json").read_text())["results"]
    assert "LPIPS skipped" not in result.stdout
    assert 0.0 <= metrics["lpips"] <= 1.5


def test_export_gaussian_splat_is_standard_3dgs_ply(run):
    work, env, config = run
    run_tool(["ns-export", "gaussian-splat", "--load-config", config, "--output-dir", work / "export"], work, env)
    vertex = PlyData.read(str(work / "export" / "splat.ply"))["vertex"]
    names = [p.name for p in vertex.properties]
    expected = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    expected += [f"f_rest_{i}" for i in range(45)] + ["opacity", "scale_0", "scale_1", "scale_2"]
    expected += ["rot_0", "rot_1", "rot_2", "rot_3"]
    assert names == expected

    checkpoint = sorted((config.parent / "nerfstudio_models").glob("*.ckpt"))[-1]
    params = torch.load(checkpoint, map_location="cpu")["pipeline"]
    means = params["_model.gauss_params.means"].numpy()
    opacity = params["_model.gauss_params.opacities"].numpy()[:, 0]
    exported = opacity >= math.log(1 / 254)  # ns-export drops Gaussians below opacity 1/255
    assert len(vertex) == exported.sum() > 1000
    np.testing.assert_allclose(np.stack([vertex["x"], vertex["y"], vertex["z"]], 1), means[exported], rtol=1e-6)


def test_render_interpolated_path(run):
    work, env, config = run
    out = work / "render"
    run_tool(
        [
            "ns-render", "interpolate", "--load-config", config, "--output-path", out, "--output-format", "images",
            "--interpolation-steps", 2, "--frame-rate", 2, "--pose-source", "train",
        ],
        work, env,
    )  # fmt: skip
    frames = sorted(out.glob("*.jpg")) + sorted(out.glob("*.png"))
    assert len(frames) >= 4
    from PIL import Image

    image = np.asarray(Image.open(frames[0]), dtype=np.float32)
    assert image.std() > 10  # a rendered scene, not a flat background
