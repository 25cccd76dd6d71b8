"""Where a training step's time goes, through Nerfstudio's own Trainer: the `tinysplat` method (or a
preset) on a scene at full size, its steps split into data, render, loss, backward, optimizer and
strategy, each the median over the timed steps. `--against REV` times the same steps with the
package as it was at git revision REV too, in turns (a fresh interpreter each), and prints each part's
ratio: a change measured against the build before it, in one run on one machine.

    .venv/bin/python benchmarks/step_profile.py [--data ../shared/data/nerf_synthetic/lego] [--parser blender-data]
        [--method tinysplat] [--steps 20] [--warmup 5] [--load-dir RUN/nerfstudio_models]
        [--set pipeline.model.num_random=200000 ...] [--against REV [--rounds 3]]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REST = "backward and the rest"


def timed(times, name, function):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        result = function(*args, **kwargs)
        times[name].append(time.perf_counter() - start)
        return result

    return wrapper


def profile(args) -> dict:
    """The medians of one run of `args.steps` steps after `args.warmup`: ms per part, and the step."""
    from common import method_trainer

    sys.path.insert(0, str(REPO / "tests"))
    from training import before_step

    from nerfstudio.engine.callbacks import TrainingCallbackLocation

    with tempfile.TemporaryDirectory() as out:
        overrides = ["pipeline.model.num_downscales=0", *args.set]
        trainer = method_trainer(args.method, args.data, args.parser, Path(out), overrides, args.load_dir)
        model, datamanager = trainer.pipeline.model, trainer.pipeline.datamanager
        times = defaultdict(list)
        datamanager.next_train = timed(times, "data", datamanager.next_train)
        model.get_outputs = timed(times, "render (forward)", model.get_outputs)
        model.get_loss_dict = timed(times, "loss (forward)", model.get_loss_dict)
        model.get_metrics_dict = timed(times, "metrics", model.get_metrics_dict)
        trainer.optimizers.optimizer_scaler_step_some = timed(
            times, "optimizer", trainer.optimizers.optimizer_scaler_step_some
        )
        step_times = []
        first = trainer._start_step  # a loaded checkpoint's next step
        for step in range(first, first + args.warmup + args.steps):
            if step == first + args.warmup:
                times.clear()
            start = time.perf_counter()
            before_step(trainer, step)
            trainer.train_iteration(step)
            after = time.perf_counter()
            for callback in trainer.callbacks:
                callback.run_callback_at_location(step, location=TrainingCallbackLocation.AFTER_TRAIN_ITERATION)
            end = time.perf_counter()
            if step >= first + args.warmup:
                times["strategy and callbacks"].append(end - after)
                step_times.append(end - start)
        parts = {name: statistics.median(values) * 1000 for name, values in times.items()}
        step = statistics.median(step_times) * 1000
        height, width = model.last_size
        return {
            "step": step, "parts": {**parts, REST: step - sum(parts.values())},
            "size": f"{width}x{height}", "gaussians": len(model.means),
        }  # fmt: skip


def against(args) -> None:
    """This tree's profile and REV's, in turns, each in a fresh interpreter that imports that tree's
    package (its kernels build on first use, before the timed steps)."""
    same = ["--data", str(args.data), "--parser", args.parser, "--method", args.method, "--steps", str(args.steps),
            "--warmup", str(args.warmup), *(["--load-dir", str(args.load_dir)] if args.load_dir else []),
            "--set", *args.set]  # fmt: skip
    with tempfile.TemporaryDirectory() as work:
        before = Path(work) / "before"
        before.mkdir()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", args.against], check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(before)], input=archive.stdout, check=True)
        trees = {args.against: before, "this tree": REPO}
        runs = defaultdict(list)
        for _ in range(args.rounds):
            for name, tree in trees.items():
                result = Path(work) / "result.json"
                env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), os.environ.get("PYTHONPATH", "")])}
                run = subprocess.run([sys.executable, __file__, *same, "--json", str(result)], env=env,
                                     capture_output=True, text=True)  # fmt: skip
                if run.returncode != 0:
                    sys.exit(f"error: the profile of {name} failed:\n{run.stderr[-3000:]}")
                runs[name].append(json.loads(result.read_text()))
    first = runs["this tree"][0]
    print(f"{args.method} on {args.data.name}, {first['size']}, {first['gaussians']:,} Gaussians, {args.steps} steps "
          f"after {args.warmup}, {args.rounds} rounds in turns: medians of the rounds' medians, ms")
    print(f"  {'':<24} {args.against[:12]:>12} {'this tree':>12} {'ratio':>7}")
    for part in ["step", *first["parts"]]:
        old, new = (statistics.median(r["step"] if part == "step" else r["parts"][part] for r in runs[name])
                    for name in trees)  # fmt: skip
        print(f"  {part:<24} {old:12.1f} {new:12.1f} {new / old:7.2f}")


def main():
    from common import lego_dir

    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=lego_dir())
    parser.add_argument("--parser", default="blender-data")
    parser.add_argument("--method", default="tinysplat")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--load-dir", type=Path, help="start from a run's checkpoint (its nerfstudio_models/)")
    parser.add_argument("--set", nargs="*", default=[], help="dotted.path=value overrides of the config")
    parser.add_argument("--against", help="a git revision to time the same steps with, in turns")
    parser.add_argument("--rounds", type=int, default=3, help="with --against: runs of each tree, in turns")
    parser.add_argument("--json", type=Path, help=argparse.SUPPRESS)  # --against's runs write their figures here
    args = parser.parse_args()
    if args.against:
        against(args)
        return
    result = profile(args)
    if args.json:
        args.json.write_text(json.dumps(result))
        return
    print(f"{args.method} on {args.data.name}, {result['size']}, {result['gaussians']:,} Gaussians, "
          f"{args.steps} steps: {result['step']:.0f} ms a step (median)")  # fmt: skip
    for name, ms in result["parts"].items():
        print(f"  {name:<24} {ms:7.1f} ms")


if __name__ == "__main__":
    main()
