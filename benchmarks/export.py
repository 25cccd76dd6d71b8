"""Exporting a trained run to a 3DGS .ply: `tinysplat-export` against Nerfstudio's
`ns-export gaussian-splat` on the same checkpoint (whole commands, as a user runs them), and the
writers alone on the same arrays: ours, Nerfstudio 1.1.5's, and the `gsply` package's when installed
(`pip install gsply`).

    .venv/bin/python benchmarks/export.py [--counts 100000 1000000]

The checkpoints are a 1-step run of the real scene with its Gaussians replaced by N random ones of
SH degree 3 (what is timed does not depend on their values).
"""

import argparse
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import yaml
from common import scene_dir

from tinysplat_ns.core.ply import property_names, write_ply

BIN = Path(sys.executable).parent
# per Gaussian, SH degree 3
SHAPES = {
    "means": (3,),
    "scales": (3,),
    "quats": (4,),
    "features_dc": (3,),
    "features_rest": (15, 3),
    "opacities": (1,),
}


def base_run(work: Path) -> Path:
    subprocess.run(
        [str(BIN / "ns-train"), "tinysplat-cpu", "--data", str(scene_dir()), "--output-dir", str(work),
         "--max-num-iterations", "1", "--vis", "tensorboard", "--steps-per-eval-all-images", "0"],
        check=True, capture_output=True,
    )  # fmt: skip
    return next(work.rglob("config.yml"))


def run_with_gaussians(base_config: Path, n: int) -> Path:
    """A copy of the run whose checkpoint holds `n` random Gaussians."""
    config = yaml.load(base_config.read_text(), Loader=yaml.Loader)
    checkpoint = torch.load(next(base_config.parent.glob("nerfstudio_models/*.ckpt")), weights_only=False)
    gen = torch.Generator().manual_seed(0)
    for name, shape in SHAPES.items():
        checkpoint["pipeline"][f"_model.gauss_params.{name}"] = torch.randn((n, *shape), generator=gen)
    config.timestamp = f"n{n}"
    models = config.get_checkpoint_dir()
    models.mkdir(parents=True)
    torch.save(checkpoint, models / "step-000000000.ckpt")
    path = models.parent / "config.yml"
    path.write_text(yaml.dump(config))
    return path


def command_seconds(cmd) -> float:
    start = time.perf_counter()
    subprocess.run([str(BIN / cmd[0]), *map(str, cmd[1:])], check=True, capture_output=True)
    return time.perf_counter() - start


def nerfstudio_columns(gaussians):
    """The arrays ns-export hands its writer (its own ordered dict of columns)."""
    n = len(gaussians["means"])
    columns = OrderedDict()
    table = np.concatenate(
        [gaussians["means"], np.zeros((n, 3), np.float32), gaussians["features_dc"],
         gaussians["features_rest"].transpose(0, 2, 1).reshape(n, -1), gaussians["opacities"],
         gaussians["scales"], gaussians["quats"]], axis=1,
    )  # fmt: skip
    for i, name in enumerate(property_names(15)):
        columns[name] = table[:, i : i + 1]
    return columns


def best_of_2(write, path: Path) -> float:
    """Best of two writes of a new file (replacing one would time freeing its cached pages too)."""
    times = []
    for _ in range(2):
        path.unlink(missing_ok=True)
        start = time.perf_counter()
        write()
        times.append(time.perf_counter() - start)
    path.unlink()
    return min(times)


def writer_seconds(n: int, out: Path) -> dict:
    gen = torch.Generator().manual_seed(1)
    gaussians = {name: torch.randn((n, *shape), generator=gen).numpy() for name, shape in SHAPES.items()}
    times = {"ours": best_of_2(lambda: write_ply(out / "ours.ply", gaussians), out / "ours.ply")}
    try:
        import gsply
    except ImportError:
        times["gsply"] = None
    else:
        times["gsply"] = best_of_2(
            lambda: gsply.plywrite(
                out / "gsply.ply", gaussians["means"], gaussians["scales"], gaussians["quats"],
                gaussians["opacities"][:, 0], gaussians["features_dc"], gaussians["features_rest"],
            ),
            out / "gsply.ply",
        )  # fmt: skip
    from nerfstudio.scripts.exporter import ExportGaussianSplat

    columns = nerfstudio_columns(gaussians)
    start = time.perf_counter()
    ExportGaussianSplat.write_ply(str(out / "nerfstudio.ply"), n, columns)
    times["nerfstudio"] = time.perf_counter() - start
    return times


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--counts", type=int, nargs="+", default=[100_000, 1_000_000])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base = base_run(work / "base")
        print("whole commands (load the checkpoint, write the .ply), seconds:")
        print(f"{'gaussians':>9} {'tinysplat-export':>16} {'ns-export':>9} {'speed-up':>8}")
        for n in args.counts:
            config = run_with_gaussians(base, n)
            ours = command_seconds(["tinysplat-export", "--load-config", config, "--output", work / f"ours{n}.ply"])
            theirs = command_seconds(
                ["ns-export", "gaussian-splat", "--load-config", config, "--output-dir", work / f"ns{n}"]
            )
            print(f"{n:>9} {ours:>16.2f} {theirs:>9.2f} {theirs / ours:>7.1f}x", flush=True)
            for path in (work / f"ours{n}.ply", work / f"ns{n}" / "splat.ply"):
                path.unlink()
        print("writers alone on the same arrays, seconds:")
        print(f"{'gaussians':>9} {'ours':>7} {'gsply':>7} {'nerfstudio':>10} {'vs gsply':>8} {'vs nerfstudio':>13}")
        for n in args.counts:
            t = writer_seconds(n, work)
            if t["gsply"] is None:
                gsply_time, vs_gsply = "-", "(no gsply)"
            else:
                gsply_time, vs_gsply = f"{t['gsply']:.3f}", f"{t['gsply'] / t['ours']:.1f}x"
            vs_nerfstudio = f"{t['nerfstudio'] / t['ours']:.0f}x"
            ours, nerfstudio = t["ours"], t["nerfstudio"]
            print(f"{n:>9} {ours:>7.3f} {gsply_time:>7} {nerfstudio:>10.2f} {vs_gsply:>8} {vs_nerfstudio:>13}")


if __name__ == "__main__":
    main()
