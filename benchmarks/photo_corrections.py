"""Camera pose optimisation and the bilateral grid on the bundled scene at the `tinysplat-cpu` preset's
full schedule, against a known truth (tests/perturbed_scene.py): training cameras moved, or training
photos recoloured, trained without and with the correction, beside the untouched scene and the
recoloured photos each undone exactly. Prints the test PSNR of each, the pose errors, the grids' gains
against the photos', and the median step time (what each correction costs a step on this CPU).

    .venv/bin/python benchmarks/photo_corrections.py [--steps 3000] [--corrections poses colours]
        [--degrees 1.5] [--shift 0.015] [--stops 0.5] [--white-balance 0.15]
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import scene_dir

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from perturbed_scene import grid_gains, held_out_psnr, perturbed_scene, pose_errors, trained  # noqa: E402


def run(data: Path, out: Path, steps: int, **options):
    times, last = [], [time.perf_counter()]

    def clock(step, loss):
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    trainer = trained(data, out, steps, clock, **options)
    full_size = times[1000:] if len(times) > 1100 else times[10:]  # after the preset's half-size steps
    return trainer, held_out_psnr(trainer), statistics.median(full_size) * 1e3


def poses(tmp: Path, args, truth: float):
    moved = perturbed_scene(tmp / "moved", degrees=args.degrees, shift=args.shift)
    for mode in ("off", "SO3xR3"):
        trainer, psnr, ms = run(moved, tmp / mode, args.steps, pipeline__model__camera_optimizer__mode=mode)
        (degrees, shift), = [pose_errors(trainer, moved).mean(1).tolist()]
        print(
            f"cameras moved {args.degrees} deg, {args.shift:.1%}: pose optimisation {mode}: test PSNR {psnr:.2f} dB "
            f"({psnr - truth:+.2f}), pose error {degrees:.3f} deg, {shift:.4f} units, step {ms:.1f} ms",
            flush=True,
        )


def colours(tmp: Path, args, truth: float):
    recolour = dict(stops=args.stops, white_balance=args.white_balance)
    recoloured = perturbed_scene(tmp / "recoloured", **recolour)
    for grid in (False, True):
        trainer, psnr, ms = run(recoloured, tmp / f"grid{grid}", args.steps, pipeline__model__use_bilateral_grid=grid)
        line = f"photos recoloured: bilateral grid {'on' if grid else 'off'}: "
        line += f"test PSNR {psnr:.2f} dB ({psnr - truth:+.2f}), step {ms:.1f} ms"
        if grid:
            learned, made = grid_gains(trainer, recoloured)
            x, y = made.log().flatten(), learned.log().flatten()
            slope = float(((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum())
            correlation = float(torch.corrcoef(torch.stack([x, y]))[0, 1])
            shared = (learned.log() - made.log()).mean(0).exp().tolist()  # a change common to all photos
            line += (
                f"; grids' log gains against the photos': slope {slope:.2f}, correlation {correlation:.3f}, "
                f"shared gain {', '.join(f'{g:.3f}' for g in shared)} (R, G, B)"
            )
        print(line, flush=True)
    undone = perturbed_scene(tmp / "undone", undone=True, **recolour)
    _, psnr, _ = run(undone, tmp / "undone-run", args.steps)
    print(f"photos recoloured, each then undone exactly: test PSNR {psnr:.2f} dB ({psnr - truth:+.2f})", flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--corrections", nargs="+", choices=["poses", "colours"], default=["poses", "colours"])
    parser.add_argument("--degrees", type=float, default=1.5)
    parser.add_argument("--shift", type=float, default=0.015)
    parser.add_argument("--stops", type=float, default=0.5)
    parser.add_argument("--white-balance", type=float, default=0.15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _, truth, base_ms = run(scene_dir(), tmp / "truth", args.steps)
        print(f"untouched scene: test PSNR {truth:.2f} dB, step {base_ms:.1f} ms", flush=True)
        if "poses" in args.corrections:
            poses(tmp, args, truth)
        if "colours" in args.corrections:
            colours(tmp, args, truth)


if __name__ == "__main__":
    main()
