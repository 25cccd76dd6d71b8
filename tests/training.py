"""Training through Nerfstudio's own Trainer in this process, step by step, so tests can watch the
model between steps (the loop of Trainer.train() without its logging, evaluation and saving)."""

import copy
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
