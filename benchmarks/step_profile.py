"""Where a training step's time goes, through Nerfstudio's own Trainer: the `tinysplat` method (or a
preset) on a scene at full size, its steps split into data, render, loss, backward, optimizer and
strategy, each the median over the timed steps.

    .venv/bin/python benchmarks/step_profile.py [--data ../shared/data/nerf_synthetic/lego] [--parser blender-data]
        [--method tinysplat] [--steps 20] [--warmup 5] [--load-dir RUN/nerfstudio_models]
        [--set pipeline.model.num_random=200000 ...]
"""

import argparse
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from common import lego_dir, method_trainer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from training import before_step  # noqa: E402

from nerfstudio.engine.callbacks import TrainingCallbackLocation  # noqa: E402


def timed(times, name, function):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        result = function(*args, **kwargs)
        times[name].append(time.perf_counter() - start)
        return result

    return wrapper


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=lego_dir())
    parser.add_argument("--parser", default="blender-data")
    parser.add_argument("--method", default="tinysplat")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--load-dir", type=Path, help="start from a run's checkpoint (its nerfstudio_models/)")
    parser.add_argument("--set", nargs="*", default=[], help="dotted.path=value overrides of the config")
    args = parser.parse_args()

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
        total = statistics.median(step_times)
        height, width = model.last_size
        print(f"{args.method} on {args.data.name}, {width}x{height}, {len(model.means):,} Gaussians, "
              f"{args.steps} steps: {total * 1000:.0f} ms a step (median)")
        known = 0.0
        for name, values in times.items():
            ms = statistics.median(values) * 1000
            known += ms
            print(f"  {name:<24} {ms:7.1f} ms")
        print(f"  {'backward and the rest':<24} {total * 1000 - known:7.1f} ms")


if __name__ == "__main__":
    main()
