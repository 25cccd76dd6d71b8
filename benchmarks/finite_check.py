"""The trainer's check that a step's gradients are all finite (`trainer.all_finite`), against the
rule it replaced (`isfinite(g).all()` for each gradient), on gradients shaped as N Gaussians' with
SH degree 3 (59 floats each), one NaN or infinity placed in some runs to show both rules see it.

    .venv/bin/python benchmarks/finite_check.py [--gaussians 235113] [--repeats 100]
"""

import argparse
import time

import torch

from tinysplat_ns.trainer import all_finite


def each_isfinite(tensors) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gaussians", type=int, default=235_113)
    parser.add_argument("--repeats", type=int, default=100)
    args = parser.parse_args()
    n = args.gaussians
    grads = [torch.randn(n, *shape) for shape in ((3,), (3,), (4,), (1,), (3,), (15, 3))]
    for bad in (float("nan"), float("inf"), -float("inf")):
        for index in (0, 2, 5):
            flat = grads[index].view(-1)
            kept = flat[len(flat) // 3].item()
            flat[len(flat) // 3] = bad
            assert not all_finite(grads) and not each_isfinite(grads)
            flat[len(flat) // 3] = kept
    assert all_finite(grads) and each_isfinite(grads)
    print(f"{n:,} Gaussians' gradients, {torch.get_num_threads()} threads")
    times = {}
    for rule in (each_isfinite, all_finite) * 2:  # twice, interleaved; the second of each counts
        rule(grads)
        start = time.perf_counter()
        for _ in range(args.repeats):
            rule(grads)
        times[rule.__name__] = (time.perf_counter() - start) / args.repeats * 1e3
    for name, ms in times.items():
        print(f"  {name:14s} {ms:7.2f} ms")
    print(f"  ratio          {times['each_isfinite'] / times['all_finite']:7.1f}x")


if __name__ == "__main__":
    main()
