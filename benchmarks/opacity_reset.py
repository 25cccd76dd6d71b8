"""How long a scene takes to render as before after ADC's opacity reset (every opacity capped at
0.01): a run trained to a reset step, then the test views' mean PSNR just before it, just after it,
and at steps after it. It sets how long the trainer waits to write a checkpoint due at a reset
(tinysplat_ns/core/strategies/adc.py, RESET_RECOVERY_STEPS).

    .venv/bin/python benchmarks/opacity_reset.py [--method tinysplat-cpu] [--reset 1500]
        [--data ../shared/data/tumbler --parser nerfstudio-data] [--after 25 50 100 150 200 300]
"""

import argparse
import sys
import tempfile
from pathlib import Path

from common import method_trainer, scene_dir

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from training import train_steps  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--method", default="tinysplat-cpu")
    parser.add_argument("--data", type=Path, default=scene_dir())
    parser.add_argument("--parser", default="nerfstudio-data")
    parser.add_argument("--reset", type=int, default=1500, help="the reset's step (ADC's reset_every)")
    parser.add_argument("--after", type=int, nargs="+", default=[25, 50, 100, 150, 200, 300])
    parser.add_argument("--set", nargs="*", default=[], help="dotted.path=value overrides of the config")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as out:
        overrides = [f"pipeline.model.adc.reset_every={args.reset}", *args.set]
        trainer = method_trainer(args.method, args.data, args.parser, Path(out), overrides)
        model = trainer.pipeline.model
        assert model.config.strategy == "adc" and args.reset < model.strategy.refine_stop_iter, "no reset then"

        def test_psnr(step):
            return trainer.pipeline.get_average_eval_image_metrics(step)["psnr"]

        train_steps(trainer, range(args.reset))
        before = test_psnr(args.reset - 1)
        print(f"{args.method} on {args.data.name}, opacity reset at step {args.reset}")
        print(f"{'step':>6} {'test PSNR':>9} {'vs before':>9}")
        print(f"{args.reset - 1:>6} {before:>9.2f} {0.0:>9.2f}")
        step = args.reset
        for after in [0, *args.after]:
            train_steps(trainer, range(step, args.reset + after + 1))
            step = args.reset + after + 1
            psnr = test_psnr(args.reset + after)
            print(f"{args.reset + after:>6} {psnr:>9.2f} {psnr - before:>+9.2f}", flush=True)


if __name__ == "__main__":
    main()
