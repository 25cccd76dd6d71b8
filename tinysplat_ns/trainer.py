"""Nerfstudio's trainer, made to lose nothing: a step whose loss or gradients are not finite is
skipped instead of poisoning the Gaussians (and a run that keeps diverging stops with its last good
state saved), Ctrl-C saves a checkpoint at the end of the running step, and checkpoints appear
whole or not at all.

It also trains in several processes (torchrun, or Nerfstudio's `--machine.num-devices` on CUDA):
each renders its own view, the gradients are averaged before the optimizer step (no DDP wrapper:
its buckets cannot follow the Gaussians' changing count), and process 0 alone serves the viewer and
writes logs and checkpoints. What they exchange is `core/distributed.py`."""

import dataclasses
import os
import signal
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Type

import torch
import torch.distributed as dist

from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackLocation
from nerfstudio.engine.optimizers import Optimizers
from nerfstudio.engine.trainer import Trainer, TrainerConfig
from nerfstudio.utils import comms, writer
from nerfstudio.utils.decorators import check_main_thread
from nerfstudio.utils.rich_utils import CONSOLE

from tinysplat_ns.child_processes import stop_children_at_exit
from tinysplat_ns.core.distributed import Collectives, ProcessLost
from tinysplat_ns.core.ply import atomic_write

if int(os.environ.get("RANK", "0")) > 0:
    CONSOLE.quiet = True  # a torchrun process other than 0, from ns-train's first lines: process 0 speaks for all


def join_process_group(device_type: str) -> Collectives:
    """Under torchrun (WORLD_SIZE > 1 in the environment) join this training's process group from
    torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT): NCCL on CUDA, one GPU per
    process by LOCAL_RANK, gloo elsewhere. Nerfstudio's launcher joins it before the trainer exists;
    in one process there is none."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        if device_type == "cuda":
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    if dist.is_initialized() and not comms.is_main_process():
        CONSOLE.quiet = True  # process 0 speaks for all
    return Collectives()


def check_launcher(config: TrainerConfig) -> None:
    """Nerfstudio's launcher (`--machine.num-devices`) starts one process per CUDA GPU; anywhere else
    it fails in a traceback (it asserts CUDA), so the way that works is said in one line."""
    processes = config.machine.num_devices * config.machine.num_machines
    if processes <= 1:
        return
    gpus = torch.cuda.device_count() if config.machine.device_type == "cuda" else 0
    torchrun = (
        f'torchrun --standalone --nproc-per-node {config.machine.num_devices} "$(command -v ns-train)" '
        f"{config.method_name} --data <scene> ..."
    )
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise SystemExit(
            "error: --machine.num-devices under torchrun: torchrun starts the processes; drop --machine.num-devices"
        )
    if gpus < config.machine.num_devices:
        raise SystemExit(
            f"error: --machine.num-devices {config.machine.num_devices} needs that many CUDA GPUs (Nerfstudio's "
            f"launcher) and this machine has {gpus}; on CPUs, or any device, start the processes with torchrun: "
            f"{torchrun}"
        )


@dataclass
class TinySplatTrainerConfig(TrainerConfig):
    _target: Type = field(default_factory=lambda: TinySplatTrainer)
    max_bad_steps: int = 20
    """Stop after this many consecutive steps with a NaN or infinite loss or gradient (each one is
    skipped, leaving the Gaussians as they were)."""

    def set_timestamp(self) -> None:
        # ns-train's first call into the config, before it prints and saves it: under torchrun the
        # processes meet here, and all take process 0's timestamp (one output folder)
        check_launcher(self)
        collectives = join_process_group(self.machine.device_type)
        super().set_timestamp()
        self.timestamp = collectives.broadcast_object(self.timestamp)

    def save_config(self) -> None:
        if comms.is_main_process():
            super().save_config()


def all_finite(tensors: List[torch.Tensor]) -> bool:
    """Whether no value is NaN or infinite. A NaN or an infinity makes its tensor's sum so (as does a
    sum past float32's 3e38: no step to take either), and sums read at memory speed: 0.7 ms for the
    gradients of 235k Gaussians on 2 cores, where `isfinite(t).all()` takes 29 (benchmarks/finite_check.py)."""
    return not tensors or bool(torch.isfinite(torch.stack([t.sum().double() for t in tensors])).all())


class FiniteStepOptimizers(Optimizers):
    """Optimizers that refuse a step whose gradients are not all finite (a NaN or infinite loss
    gives such gradients): the parameters and Adam's moments stay as they were."""

    skipped_step: bool = False
    collectives = Collectives()  # one process; the trainer sets its own
    stop_requested = False
    """In: this process asks to stop after this step; out: whether any process does."""

    def optimizer_scaler_step_some(self, grad_scaler, param_groups: List[str]) -> None:
        # the optimizers' own parameter lists: densification replaces the Gaussians' tensors there
        # (Nerfstudio's `self.parameters` still holds the first ones, whose .grad stays None)
        params = [
            p
            for group in param_groups
            for optimizer_group in self.optimizers[group].param_groups
            for p in optimizer_group["params"]
        ]
        # averaged first, so every process takes the same step, or skips it
        self.stop_requested = self.collectives.mean_gradients(params, self.stop_requested)
        self.skipped_step = not all_finite([p.grad for p in params if p.grad is not None])
        if self.skipped_step:
            self.zero_grad_all()
            return
        super().optimizer_scaler_step_some(grad_scaler, param_groups)


def scaled_means_learning_rate(optimizers: dict, scene_scale: float) -> dict:
    """The optimizers' config with the means' learning rate (start and end) times the scene's extent,
    as 3DGS scales it: the configured rates are for a scene of extent 1."""
    optimizers = optimizers.copy()
    means = dict(optimizers["means"])
    means["optimizer"] = dataclasses.replace(means["optimizer"], lr=means["optimizer"].lr * scene_scale)
    if getattr(means.get("scheduler"), "lr_final", None) is not None:
        means["scheduler"] = dataclasses.replace(means["scheduler"], lr_final=means["scheduler"].lr_final * scene_scale)
    optimizers["means"] = means
    return optimizers


class TinySplatTrainer(Trainer):
    config: TinySplatTrainerConfig

    def __init__(self, config: TinySplatTrainerConfig, local_rank: int = 0, world_size: int = 1) -> None:
        # under torchrun ns-train hands every process rank 0 of 1
        self.collectives = join_process_group(config.machine.device_type)
        if self.collectives.distributed:
            world_size = self.collectives.world_size
            local_rank = int(os.environ.get("LOCAL_RANK", local_rank))
            if config.machine.device_type == "cuda":
                torch.cuda.set_device(local_rank)  # NCCL's own buffers (objects broadcast, barriers) go there
        super().__init__(config, local_rank, world_size)

    def setup_optimizers(self) -> Optimizers:
        optimizers = FiniteStepOptimizers(
            scaled_means_learning_rate(self.config.optimizers, self.pipeline.model.scene_scale),
            self.pipeline.get_param_groups(),
        )
        optimizers.collectives = self.collectives
        return optimizers

    def setup(self, test_mode="val") -> None:
        # a kill (SIGTERM) too ends through the exit handlers, which stop every process the run started
        stop_children_at_exit(sigterm_exits=True)
        main = self.collectives.rank == 0
        if not main:
            self.config.vis = "tensorboard"  # no viewer; Nerfstudio's writers write from process 0 only
        # the pipeline as for one process: no DDP wrapper (FiniteStepOptimizers averages the gradients)
        world_size, self.world_size = self.world_size, 1
        try:
            with _sigint_handler(_quit_now):  # loading data: nothing to save yet
                super().setup(test_mode)
        finally:
            self.world_size = world_size
        model = self.pipeline.model
        model.collectives = self.collectives
        if self.collectives.distributed:
            self._start_alike(model)
            if not main:  # process 0 writes the run's files
                self.pipeline.datamanager.train_dataparser_outputs.save_dataparser_transform = lambda path: None
        self.skipped_steps = 0
        self.bad_streak = 0
        self.interrupt_requested = False
        self.interrupted = False
        self.save_deferred = False
        # last, after the model's own callbacks (densification): the step is complete when they run
        self.callbacks += [
            TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], self._save_if_deferred),
            TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], self._stop_if_interrupted),
        ]

    def _start_alike(self, model) -> None:
        """Every process starts from process 0's Gaussians, other parameters and random states
        (Nerfstudio's launcher seeds each process differently; a loaded checkpoint is the same file)."""
        self.collectives.broadcast_([tensor.data for tensor in [*model.parameters(), *model.buffers()]])
        extra = model.get_extra_state()
        on_cpu = self.collectives.broadcast_object(_tensors_to_cpu(extra) if self.collectives.rank == 0 else None)
        if self.collectives.rank != 0:
            model.set_extra_state(on_cpu)

    def train(self) -> None:
        try:
            with _sigint_handler(self._on_sigint), _sigterm_stops_training(self.collectives.distributed) as sigterm:
                super().train()
        except (ProcessLost, StoppedByTorchrun) as e:
            if sigterm.received and self.collectives.rank != 0:
                sys.exit(143)  # torchrun stops them all: process 0 speaks for all
            if isinstance(e, ProcessLost):
                cause = f"another process of this training stopped, so all stop ({e})"
            else:
                cause = "stopped by torchrun (SIGTERM): another process of this training stopped, or torchrun did"
            saved = sorted(self.checkpoint_dir.glob("step-*.ckpt"))
            kept = f"the last checkpoint is kept: {saved[-1]}" if saved else "no checkpoint was saved yet"
            sys.exit(f"error: process {self.collectives.rank}: {cause}; {kept}. Resume with --load-dir")

    def eval_iteration(self, step: int) -> None:
        if self.collectives.rank == 0:  # its scores are logged by process 0 alone
            super().eval_iteration(step)

    def _on_sigint(self, signum, frame) -> None:
        self.interrupt_requested = True
        signal.signal(signal.SIGINT, _quit_now)
        CONSOLE.print("[bold yellow]Ctrl-C: saving a checkpoint after this step (Ctrl-C again to quit without it)")

    def _stop_if_interrupted(self, step: int) -> None:
        if not self.interrupted:
            return
        path = self.write_checkpoint(step)
        write_out_logs()
        self.shutdown()
        self.collectives.barrier()  # the checkpoint is whole before any process exits
        remaining = self._start_step + self.config.max_num_iterations - 1 - step
        CONSOLE.print(
            f"Interrupted after step {step}: saved {path}\nResume with: ns-train {self.config.method_name} "
            f"--data {self.config.data or self.config.pipeline.datamanager.data} --load-dir {self.checkpoint_dir} "
            f"--max-num-iterations {remaining} (and this run's other options)",
            soft_wrap=True,
        )
        sys.exit(130)

    def train_iteration(self, step: int):
        self.optimizers.stop_requested = self.interrupt_requested
        loss, loss_dict, metrics_dict = super().train_iteration(step)
        self.interrupted = self.optimizers.stop_requested  # agreed by all processes, at this same step
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
            path = self.write_checkpoint(step - self.bad_streak)  # the Gaussians are as after that step
            write_out_logs()  # this step's count too
            self.shutdown()
            self.collectives.barrier()
            if self.collectives.rank != 0:
                sys.exit(1)  # process 0 says why
            sys.exit(
                f"error: training diverged: {self.bad_streak} steps in a row (up to step {step}) had a NaN or "
                f"infinite loss or gradient; the last good state is saved in {path}. Lower the learning "
                "rates or check the data, then resume with --load-dir"
            )
        return loss, loss_dict, metrics_dict

    @check_main_thread
    def save_checkpoint(self, step: int) -> None:
        """Nerfstudio's periodic and final checkpoints. A periodic one due while the strategy has just
        upset the Gaussians (ADC's opacity reset: they render almost transparent for some steps) is
        written at the first step after, so that every checkpoint renders as the training does; the
        final one never waits."""
        if self.training_state != "completed" and self.pipeline.model.strategy.upset(step):
            self.save_deferred = True
            return
        self.save_deferred = False
        self.write_checkpoint(step)

    def _save_if_deferred(self, step: int) -> None:
        if self.save_deferred and not self.pipeline.model.strategy.upset(step):
            self.save_checkpoint(step)

    @check_main_thread
    def write_checkpoint(self, step: int) -> Path:
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


def write_out_logs() -> None:
    """The values logged and not yet written (Nerfstudio writes them at the end of each step) onto disk
    before the process exits, tensorboard's file flushed (its writer thread flushes every two minutes).
    Not the terminal's table of stats (`writer.write_out_storage` prints it): it needs a finished step."""
    for event_writer in writer.EVENT_WRITERS:
        if isinstance(event_writer, writer.LocalWriter):
            continue
        for event in writer.EVENT_STORAGE:
            getattr(event_writer, event["write_type"].value)(event["name"], event["event"], event["step"])
        tensorboard = getattr(event_writer, "tb_writer", None)
        if tensorboard is not None:
            tensorboard.flush()
    writer.EVENT_STORAGE.clear()


def _tensors_to_cpu(value):
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, dict):
        return {k: _tensors_to_cpu(v) for k, v in value.items()}
    return value


class StoppedByTorchrun(Exception):
    """SIGTERM in a process of a distributed training: torchrun stops every process when one of them
    ends (often before the survivors' next collective operation finds it gone), or when it is stopped."""


@dataclass
class _Sigterm:
    received: bool = False

    def handle(self, signum, frame) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once
        self.received = True
        if not isinstance(sys.exception(), ProcessLost):  # that one, on its way out, says why already
            raise StoppedByTorchrun()


@contextmanager
def _sigterm_stops_training(distributed: bool):
    """In a distributed training, SIGTERM inside the block raises StoppedByTorchrun; yields whether
    one came."""
    sigterm = _Sigterm()
    if not distributed or threading.current_thread() is not threading.main_thread():
        yield sigterm
        return
    previous = signal.signal(signal.SIGTERM, sigterm.handle)
    try:
        yield sigterm
    except BaseException:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # this process is ending: its exit handlers run whole
        raise
    signal.signal(signal.SIGTERM, previous)


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
