"""Nerfstudio's trainer, made to lose nothing: a step whose loss or gradients are not finite is
skipped instead of poisoning the Gaussians (and a run that keeps diverging stops with its last good
state saved), Ctrl-C saves a checkpoint at the end of the running step, and checkpoints appear
whole or not at all."""

import signal
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Type

import torch

from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackLocation
from nerfstudio.engine.optimizers import Optimizers
from nerfstudio.engine.trainer import Trainer, TrainerConfig
from nerfstudio.utils import writer
from nerfstudio.utils.decorators import check_main_thread
from nerfstudio.utils.rich_utils import CONSOLE

from tinysplat_ns.child_processes import stop_children_at_exit
from tinysplat_ns.core.ply import atomic_write


@dataclass
class TinySplatTrainerConfig(TrainerConfig):
    _target: Type = field(default_factory=lambda: TinySplatTrainer)
    max_bad_steps: int = 20
    """Stop after this many consecutive steps with a NaN or infinite loss or gradient (each one is
    skipped, leaving the Gaussians as they were)."""


class FiniteStepOptimizers(Optimizers):
    """Optimizers that refuse a step whose gradients are not all finite (a NaN or infinite loss
    gives such gradients): the parameters and Adam's moments stay as they were."""

    skipped_step: bool = False

    def optimizer_scaler_step_some(self, grad_scaler, param_groups: List[str]) -> None:
        # the optimizers' own parameter lists: densification replaces the Gaussians' tensors there
        # (Nerfstudio's `self.parameters` still holds the first ones, whose .grad stays None)
        grads = [
            p.grad
            for group in param_groups
            for optimizer_group in self.optimizers[group].param_groups
            for p in optimizer_group["params"]
            if p.grad is not None
        ]
        self.skipped_step = not all(bool(torch.isfinite(g).all()) for g in grads)
        if self.skipped_step:
            self.zero_grad_all()
            return
        super().optimizer_scaler_step_some(grad_scaler, param_groups)


class TinySplatTrainer(Trainer):
    config: TinySplatTrainerConfig

    def setup_optimizers(self) -> Optimizers:
        return FiniteStepOptimizers(self.config.optimizers.copy(), self.pipeline.get_param_groups())

    def setup(self, test_mode="val") -> None:
        # a kill (SIGTERM) too ends through the exit handlers, which stop every process the run started
        stop_children_at_exit(sigterm_exits=True)
        with _sigint_handler(_quit_now):  # loading data: nothing to save yet
            super().setup(test_mode)
        self.skipped_steps = 0
        self.bad_streak = 0
        self.interrupted = False
        # last, after the model's own callbacks (densification): the step is complete when it runs
        self.callbacks.append(
            TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], self._stop_if_interrupted)
        )

    def train(self) -> None:
        with _sigint_handler(self._on_sigint):
            super().train()

    def _on_sigint(self, signum, frame) -> None:
        self.interrupted = True
        signal.signal(signal.SIGINT, _quit_now)
        CONSOLE.print("[bold yellow]Ctrl-C: saving a checkpoint after this step (Ctrl-C again to quit without it)")

    def _stop_if_interrupted(self, step: int) -> None:
        if not self.interrupted:
            return
        path = self.save_checkpoint(step)
        writer.write_out_storage()
        self.shutdown()
        remaining = self._start_step + self.config.max_num_iterations - 1 - step
        CONSOLE.print(
            f"Interrupted after step {step}: saved {path}\nResume with: ns-train {self.config.method_name} "
            f"--data {self.config.data or self.config.pipeline.datamanager.data} --load-dir {self.checkpoint_dir} "
            f"--max-num-iterations {remaining} (and this run's other options)",
            soft_wrap=True,
        )
        sys.exit(130)

    def train_iteration(self, step: int):
        loss, loss_dict, metrics_dict = super().train_iteration(step)
        if not self.optimizers.skipped_step:
            self.bad_streak = 0
            return loss, loss_dict, metrics_dict
        self.skipped_steps += 1
        self.bad_streak += 1
        writer.put_scalar(name="Skipped steps (NaN/inf)", scalar=self.skipped_steps, step=step)
        if self.bad_streak == 1:
            CONSOLE.print(
                f"[bold yellow]Step {step}: the loss or a gradient is NaN or infinite; step skipped "
                f"({self.skipped_steps} so far)"
            )
        if self.bad_streak >= self.config.max_bad_steps:
            path = self.save_checkpoint(step - self.bad_streak)  # the Gaussians are as after that step
            self.shutdown()
            sys.exit(
                f"error: training diverged: {self.bad_streak} steps in a row (up to step {step}) had a NaN or "
                f"infinite loss or gradient; the last good state is saved in {path}. Lower the learning "
                "rates or check the data, then resume with --load-dir"
            )
        return loss, loss_dict, metrics_dict

    @check_main_thread
    def save_checkpoint(self, step: int) -> Path:
        """Nerfstudio's checkpoint, written beside its final name and renamed into place, so a kill
        mid-write leaves the previous checkpoint whole and no partial one; older ones are deleted
        only after."""
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        path = self.checkpoint_dir / f"step-{step:09d}.ckpt"
        state = {
            "step": step,
            "pipeline": self.pipeline.state_dict(),
            "optimizers": {k: v.state_dict() for (k, v) in self.optimizers.optimizers.items()},
            "schedulers": {k: v.state_dict() for (k, v) in self.optimizers.schedulers.items()},
            "scalers": self.grad_scaler.state_dict(),
        }
        with atomic_write(path) as temp:
            torch.save(state, temp)
        if self.config.save_only_latest_checkpoint:
            for old in self.checkpoint_dir.glob("step-*.ckpt"):
                if old != path:
                    old.unlink()
        return path


def _quit_now(signum, frame) -> None:
    CONSOLE.print("Ctrl-C: stopped; the last checkpoint written is kept")
    raise SystemExit(130)


@contextmanager
def _sigint_handler(handler):
    """Ctrl-C handled by `handler` inside the block (signals reach the main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
