"""NeRF-Synthetic (Blender) scenes beside the 3D Gaussian Splatting paper: each method trained on
each scene found under a folder with `ns-train <method> blender-data`, its test views scored with
`ns-eval`, and a table of PSNR (the paper's beside it), SSIM, training minutes and Gaussians.

    .venv/bin/python benchmarks/nerf_synthetic.py [--root ../shared/data/nerf_synthetic]
        [--methods tinysplat-cpu-quality tinysplat] [--scenes lego] [--keep runs/] [-- ns-train options]

A method that is not TinySplat's (splatfacto) trains and is scored through benchmarks/offline_ns.py,
which scores no LPIPS where AlexNet's weights are not on disk.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

BIN = Path(sys.executable).parent
OFFLINE_NS = Path(__file__).resolve().parent / "offline_ns.py"
# 3DGS (Kerbl et al. 2023), PSNR at 30k iterations on the test views, white background
PAPER_PSNR = {
    "chair": 35.83, "drums": 26.15, "ficus": 34.87, "hotdog": 37.72,
    "lego": 35.78, "materials": 30.00, "mic": 35.36, "ship": 30.80,
}  # fmt: skip


def command(method: str, verb: str):
    if method.startswith("tinysplat"):
        return [str(BIN / f"ns-{verb}")]
    return [sys.executable, str(OFFLINE_NS), verb]


def train_and_score(method: str, scene: Path, out: Path, extra):
    """(PSNR, SSIM, training minutes, Gaussians) of `method` on `scene`, trained under `out`."""
    start = time.perf_counter()
    train = command(method, "train") + [method, "--output-dir", str(out), "--vis", "tensorboard"]
    train += list(extra) + ["blender-data", "--data", str(scene)]
    log = out / "train.log"
    out.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as stream:
        result = subprocess.run(train, stdout=stream, stderr=subprocess.STDOUT)
    minutes = (time.perf_counter() - start) / 60
    if result.returncode != 0:
        raise SystemExit(f"error: {method} on {scene.name} failed (exit {result.returncode}); see {log}")
    config = next(out.rglob("config.yml"))
    scores = out / "eval.json"
    subprocess.run(
        command(method, "eval") + ["--load-config", str(config), "--output-path", str(scores)],
        check=True,
        capture_output=True,
    )
    metrics = json.loads(scores.read_text())["results"]
    checkpoint = sorted(config.parent.glob("nerfstudio_models/*.ckpt"))[-1]
    state = torch.load(checkpoint, map_location="cpu")["pipeline"]
    count = len(next(v for k, v in state.items() if k.endswith("gauss_params.means")))
    return metrics["psnr"], metrics["ssim"], minutes, count


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_root = Path(__file__).resolve().parents[2] / "shared" / "data" / "nerf_synthetic"
    parser.add_argument("--root", type=Path, default=default_root, help="folder holding the scenes' folders")
    parser.add_argument("--methods", nargs="+", default=["tinysplat-cpu-quality", "tinysplat"])
    parser.add_argument("--scenes", nargs="+", default=list(PAPER_PSNR), help="those present are trained")
    parser.add_argument("--keep", type=Path, help="keep the runs under this folder (default: a temporary one)")
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="after --: options for every ns-train")
    args = parser.parse_args()
    extra = args.extra[1:] if args.extra[:1] == ["--"] else args.extra
    scenes = [args.root / name for name in args.scenes if (args.root / name / "transforms_train.json").exists()]
    if not scenes:
        raise SystemExit(f"error: {args.root}: none of {', '.join(args.scenes)} is there; pass --root")

    print(f"{'scene':<10} {'method':<20} {'PSNR':>6} {'paper':>6} {'SSIM':>6} {'minutes':>7} {'Gaussians':>9}")
    with tempfile.TemporaryDirectory() as temp:
        root = args.keep or Path(temp)
        for scene in scenes:
            for method in args.methods:
                psnr, ssim, minutes, count = train_and_score(method, scene, root / scene.name / method, extra)
                paper = PAPER_PSNR.get(scene.name, float("nan"))
                print(
                    f"{scene.name:<10} {method:<20} {psnr:>6.2f} {paper:>6.2f} {ssim:>6.3f} {minutes:>7.1f} {count:>9,}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
