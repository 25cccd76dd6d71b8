"""Training-step time of `tinysplat-cpu` on the bundled real scene at full size (300x400), through
Nerfstudio's own Trainer: with the scene's 7,840 SfM points, and with N Gaussians spread around
them (a copy of the scene whose sparse_pc.ply holds N points).

    .venv/bin/python benchmarks/train_step.py [--gaussians 50000] [--steps 30]
"""

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import scene_dir, scene_gaussians
from plyfile import PlyData, PlyElement

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from training import build_trainer, train_steps  # noqa: E402


def scene_with_points(n: int, dst: Path) -> Path:
    shutil.copytree(scene_dir(), dst)
    g = scene_gaussians(n)
    rgb = (g["sh"][:, 0] * 0.28209479177387814 + 0.5).clamp(0, 1).mul(255).round().numpy().astype(np.uint8)
    xyz = g["means"].numpy().astype(np.float32)
    vertex = np.empty(n, dtype=[(c, "f4") for c in "xyz"] + [(c, "u1") for c in ("red", "green", "blue")])
    for i, c in enumerate("xyz"):
        vertex[c] = xyz[:, i]
    for i, c in enumerate(("red", "green", "blue")):
        vertex[c] = rgb[:, i]
    PlyData([PlyElement.describe(vertex, "vertex")]).write(str(dst / "sparse_pc.ply"))
    return dst


def step_times(data: Path, steps: int, warmup: int = 10):
    """Median-able step times at full size (300x400 from the first step)."""
    with tempfile.TemporaryDirectory() as out:
        # no cap: the preset stops at 30k Gaussians
        trainer = build_trainer(data, Path(out), pipeline__model__num_downscales=0, pipeline__model__max_gaussians=0)
        times, last = [], [time.perf_counter()]

        def clock(step, loss):
            now = time.perf_counter()
            if step >= warmup:
                times.append(now - last[0])
            last[0] = now

        train_steps(trainer, range(warmup + steps), clock)
        return times, len(trainer.pipeline.model.means)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--gaussians", type=int, default=50_000)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        for label, data in (
            ("SfM points", scene_dir()),
            (f"{args.gaussians} Gaussians", scene_with_points(args.gaussians, Path(tmp) / "scene")),
        ):
            times, n = step_times(data, args.steps)
            print(
                f"{label:>18}: {n} Gaussians, train step median {statistics.median(times) * 1e3:.0f} ms "
                f"(min {min(times) * 1e3:.0f}, max {max(times) * 1e3:.0f}) over {len(times)} steps"
            )


if __name__ == "__main__":
    main()
