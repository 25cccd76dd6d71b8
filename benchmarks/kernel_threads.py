"""How the compiled kernels' time falls from one thread to two, for each way they are built here: GCC
with OpenMP (the default on Linux) and clang++ without it (how macOS builds them: the loops run on
std::threads, core/kernels/parallel.h). 200k Gaussians on the bundled scene's camera at 300x400,
forward and backward; each build in a process of its own.

    .venv/bin/python benchmarks/kernel_threads.py [--gaussians 200000] [--compilers c++ clang++]
"""

import argparse
import os
import shutil
import subprocess
import sys

import torch
from common import scene_camera, scene_gaussians, timed


def measure(n: int) -> None:
    """In the child: the loaded library's name, then ms at 1 and 2 threads, forward and forward+backward."""
    from rasterizer import ours

    from tinysplat_ns.core.kernels import build

    assert build.available(), "the compiled kernels did not build"
    g, camera = scene_gaussians(n), scene_camera()
    ours(g, camera, backward=True)  # builds and loads the library
    times = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for backward in (False, True):
            times.append(1e3 * timed(lambda: ours(g, camera, backward), repeat=7))
    print(build.library(), *(f"{t:.1f}" for t in times))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gaussians", type=int, default=200_000)
    parser.add_argument("--compilers", nargs="+", default=["c++", "clang++"])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return measure(args.gaussians)
    print(f"{args.gaussians:,} Gaussians at 300x400, median of 7 (ms)")
    print(f"{'compiler':9} {'library':32} {'fwd 1T':>7} {'fwd 2T':>7} {'speedup':>7} {'f+b 1T':>7} {'f+b 2T':>7} {'speedup':>7}")
    for compiler in args.compilers:
        if not shutil.which(compiler):
            print(f"{compiler:9} not found")
            continue
        child = subprocess.run(
            [sys.executable, __file__, "--child", "--gaussians", str(args.gaussians)],
            env=dict(os.environ, CXX=compiler), capture_output=True, text=True, check=False,
        )  # fmt: skip
        if child.returncode != 0:
            print(f"{compiler:9} failed: {child.stderr.strip().splitlines()[-1:]}")
            continue
        library, f1, b1, f2, b2 = child.stdout.split()[-5:]
        f1, b1, f2, b2 = map(float, (f1, b1, f2, b2))
        print(f"{compiler:9} {library:32} {f1:7.1f} {f2:7.1f} {f1 / f2:6.2f}x {b1:7.1f} {b2:7.1f} {b1 / b2:6.2f}x")


if __name__ == "__main__":
    main()
