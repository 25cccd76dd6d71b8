"""`ns-train` with TinySplat's loss patched as the tests need, set by environment variables:
DIVERGE_FROM_STEP=N: the loss is NaN from step N on, as a diverging run's (the NaN-streak exit);
DIVERGE_RANK=R: only in the process of that rank (under torchrun);
STEP_SECONDS=S: each step takes S seconds longer (time for a second Ctrl-C within one step);
REPLICAS_TO=DIR: at the end of training each process saves its Gaussians, their Adam moments and
the views it trained on to DIR/rank<R>.pt (under torchrun: each process's own copy, which it never
writes otherwise);
EXIT_CODES_TO=DIR: each process writes the status it exits with to DIR/exit.<RANK> (torchrun reports
its processes' statuses only when one fails)."""

import math
import os
import sys
import time
from pathlib import Path

import torch

from tinysplat_ns.data import CheckedDatamanager
from tinysplat_ns.tinysplat_model import TinySplatModel
from tinysplat_ns.trainer import TinySplatTrainer


def record_replicas(folder: Path) -> None:
    """Each process of the training saves its replica to folder/rank<R>.pt at the end."""
    train = TinySplatTrainer.train
    next_train = CheckedDatamanager.next_train
    views = []

    def recorded_next_train(self, step):
        camera, data = next_train(self, step)
        views.append(int(camera.metadata["cam_idx"]))
        return camera, data

    def train_and_save_replica(self):
        train(self)
        params = {name: value.detach() for name, value in self.pipeline.model.gauss_params.items()}
        moments = {name: optimizer.state_dict()["state"] for name, optimizer in self.optimizers.optimizers.items()}
        replica = {"params": params, "moments": moments, "views": views}
        torch.save(replica, folder / f"rank{self.collectives.rank}.pt")

    TinySplatTrainer.train = train_and_save_replica
    CheckedDatamanager.next_train = recorded_next_train


if __name__ == "__main__":
    from nerfstudio.scripts.train import entrypoint

    first_bad_step = int(os.environ.get("DIVERGE_FROM_STEP", sys.maxsize))
    diverging = os.environ.get("DIVERGE_RANK", os.environ.get("RANK", "0")) == os.environ.get("RANK", "0")
    extra_seconds = float(os.environ.get("STEP_SECONDS", 0))
    loss_dict = TinySplatModel.get_loss_dict

    def patched_loss_dict(self, outputs, batch, metrics_dict=None):
        losses = loss_dict(self, outputs, batch, metrics_dict)
        time.sleep(extra_seconds)
        if self.step >= first_bad_step and diverging:
            losses = {name: value * math.nan for name, value in losses.items()}
        return losses

    TinySplatModel.get_loss_dict = patched_loss_dict

    if os.environ.get("REPLICAS_TO"):
        record_replicas(Path(os.environ["REPLICAS_TO"]))
    sys.argv = ["ns-train", *sys.argv[1:]]
    try:
        entrypoint()
    except SystemExit as e:
        if os.environ.get("EXIT_CODES_TO"):
            code = e.code if isinstance(e.code, int) else 1
            Path(os.environ["EXIT_CODES_TO"], f"exit.{os.environ.get('RANK', 0)}").write_text(str(code))
        raise
