"""Two trainings on one CPU: `tinysplat-cpu` steps (full 300x400 images, the SfM points) timed alone,
then with a second, identical training started beside it, for each OpenMP setting given (environment
variables, which OpenMP reads once, at start). A fair share
of the cores makes each of two trainings about 2x slower; OpenMP threads that spin-wait for cores
the other process holds make it much worse.

    .venv/bin/python benchmarks/shared_cpu.py [--steps 150] [--settings default OMP_WAIT_POLICY=PASSIVE ...]

"default" is TinySplat's own choice (tinysplat_ns/openmp.py); "libgomp" is OpenMP's (TINYSPLAT_OMP=0).
"""

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

from common import scene_dir

from tinysplat_ns.openmp import SPIN_COUNT


def worker(steps: int):
    from train_step import step_times

    times, _ = step_times(scene_dir(), steps, warmup=10)
    print(f"median {statistics.median(times):.4f}")


def run(count: int, steps: int, setting: str):
    """Median step time of each of `count` trainings started together."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "TINYSPLAT_OMP")}
    if setting == "default":  # what `ns-train tinysplat...` and our console scripts set (tinysplat_ns/openmp.py)
        env["GOMP_SPINCOUNT"] = SPIN_COUNT
    elif setting != "libgomp":
        name, value = setting.split("=")
        env[name] = value
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--steps", str(steps)]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
             for _ in range(count)]  # fmt: skip
    medians = []
    for p in procs:
        out, _ = p.communicate()
        medians.append(float(out.split("median")[-1]))
    return medians


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--settings", nargs="+", default=["libgomp", "default"])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.steps)
    print(f"tinysplat-cpu steps at 300x400, {args.steps} timed per training, {os.cpu_count()} cores")
    print(f"{'setting':>26} {'alone ms':>8} {'two at once ms':>15} {'slowdown':>8}")
    for setting in args.settings:
        (alone,) = run(1, args.steps, setting)
        both = run(2, args.steps, setting)
        slowdown = statistics.mean(both) / alone
        print(f"{setting:>26} {alone * 1e3:>8.0f} {' / '.join(f'{b * 1e3:.0f}' for b in both):>15} {slowdown:>7.1f}x",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
