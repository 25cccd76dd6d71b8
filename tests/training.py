"""Training through Nerfstudio's own Trainer in this process, step by step, so tests can watch the
model between steps (the loop of Trainer.train() without its logging, evaluation and saving); and
whole runs through `ns-train`, as a user starts them."""

import copy
import os
import subprocess
import sys
from pathlib import Path

from nerfstudio.engine.callbacks import TrainingCallbackLocation
from nerfstudio.engine.trainer import Trainer

from tinysplat_ns.tinysplat_config import apply_override, tinysplat_cpu


def build_trainer(data: Path, output_dir: Path, load_dir: Path = None, **overrides) -> Trainer:
    """`tinysplat-cpu` on `data` with dotted-path `overrides` (as in configs/, dots as "__")."""
    config = copy.deepcopy(tinysplat_cpu.config)
    config.pipeline.datamanager.data = data
    config.output_dir = Path(output_dir)
    config.vis = "tensorboard"
    config.load_dir = load_dir
    for path, value in overrides.items():
        apply_override(config, path.replace("__", "."), value, "test")
    config.set_timestamp()
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    return trainer


def before_step(trainer: Trainer, step: int) -> None:
    """What the trainer runs before a step (the model learns the step and the optimizers)."""
    for callback in trainer.callbacks:
        callback.run_callback_at_location(step, location=TrainingCallbackLocation.BEFORE_TRAIN_ITERATION)


def train_steps(trainer: Trainer, steps, each=None):
    """Run training steps; `each(step, loss)` sees the model after every one."""
    for step in steps:
        before_step(trainer, step)
        loss, _, _ = trainer.train_iteration(step)
        for callback in trainer.callbacks:
            callback.run_callback_at_location(step, location=TrainingCallbackLocation.AFTER_TRAIN_ITERATION)
        if each is not None:
            each(step, float(loss))


# the steps of conftest's `trained`, the suite's shared run
TRAINED_STEPS = 300

OFFLINE_NS = Path(__file__).parents[1] / "benchmarks" / "offline_ns.py"


def ns_train(method: str, out: Path, *extra: str, data: Path = None, offline_lpips: bool = False) -> Path:
    """A finished run of `method` on the real scene (or `data`) under `out`: its config.yml.
    `offline_lpips`: for a model that builds LPIPS, without AlexNet's weights (benchmarks/offline_ns.py)."""
    from scene import scene_dir

    command = [sys.executable, str(OFFLINE_NS), "train"] if offline_lpips else [str(Path(sys.executable).parent / "ns-train")]
    command += [method, "--data", str(data or scene_dir()), "--output-dir", str(out), "--vis", "tensorboard"]
    subprocess.run(command + list(extra), cwd=out, check=True, capture_output=True)
    return next(out.rglob("config.yml"))


def as_a_users() -> dict:
    """The environment without the spin count conftest.py sets: `ns-train tinysplat...` sets it itself."""
    return {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}


def run_command(cmd, cwd, check=True, env=None) -> subprocess.CompletedProcess:
    """A console script of this environment (ns-train, tinysplat-export, ...) run to its end."""
    result = subprocess.run(
        [str(Path(sys.executable).parent / cmd[0]), *map(str, cmd[1:])],
        cwd=cwd, capture_output=True, text=True, timeout=900, env=env,
    )  # fmt: skip
    if check:
        assert result.returncode == 0, f"{cmd[0]} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result
