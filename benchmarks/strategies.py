"""Densification strategies compared on the bundled scene, on the CPU: the same schedule and the
same Gaussian budget for each (tinysplat-cpu: 3000 steps, half resolution until step 1000,
refinements until step 2500), then test-view PSNR/SSIM (ns-eval) and the Gaussian count.

    .venv/bin/python benchmarks/strategies.py [--steps 3000] [--budget 30000] [--strategies adc mcmc none]
        [--seeds 42 43 ...]
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import scene_dir

BIN = Path(sys.executable).parent


def train_and_eval(strategy: str, steps: int, budget: int, out: Path, seed: int = 42):
    start = time.perf_counter()
    subprocess.run(
        [
            str(BIN / "ns-train"), "tinysplat-cpu", "--data", str(scene_dir()), "--output-dir", str(out),
            "--max-num-iterations", str(steps), "--vis", "tensorboard", "--steps-per-eval-all-images", "0",
            "--pipeline.model.strategy", strategy, "--pipeline.model.max-gaussians", str(budget),
            "--pipeline.model.adc.refine-stop-iter", str(steps - 500),
            "--pipeline.model.mcmc.refine-stop-iter", str(steps - 500), "--machine.seed", str(seed),
        ],
        check=True, capture_output=True,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    config = next(out.rglob("config.yml"))
    subprocess.run(
        [str(BIN / "ns-eval"), "--load-config", str(config), "--output-path", str(out / "eval.json")],
        check=True,
        capture_output=True,
    )
    metrics = json.loads((out / "eval.json").read_text())["results"]
    checkpoint = sorted(config.parent.glob("nerfstudio_models/*.ckpt"))[-1]
    count = len(torch.load(checkpoint, map_location="cpu")["pipeline"]["_model.gauss_params.means"])
    return metrics["psnr"], metrics["ssim"], count, seconds


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--budget", type=int, default=30_000)
    parser.add_argument("--strategies", nargs="+", default=["adc", "mcmc", "none"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42], help="a run per seed (--machine.seed)")
    args = parser.parse_args()
    print(f"{args.steps} steps of tinysplat-cpu, budget {args.budget} Gaussians")
    print(f"{'strategy':>8} {'seed':>4} {'PSNR':>6} {'SSIM':>6} {'Gaussians':>9} {'train s':>7}")
    for strategy in args.strategies:
        for seed in args.seeds:
            with tempfile.TemporaryDirectory() as out:
                psnr, ssim, count, seconds = train_and_eval(strategy, args.steps, args.budget, Path(out), seed)
            print(f"{strategy:>8} {seed:>4} {psnr:>6.2f} {ssim:>6.3f} {count:>9} {seconds:>7.0f}", flush=True)


if __name__ == "__main__":
    main()
