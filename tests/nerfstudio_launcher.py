"""Nerfstudio's own launcher (what `ns-train --machine.num-devices 2` spawns) made to run on a CPU:
its module is told of two CUDA GPUs (it asserts them) and, with device_type "cpu", joins with gloo.
30 steps of tinysplat-cpu with MCMC relocating every 10; each process saves its replica
(patched_ns_train.record_replicas) in OUT.

    python tests/nerfstudio_launcher.py SCENE OUT
"""

import copy
import socket
import sys
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import torch
import torch.multiprocessing as mp


class TorchWithTwoGpus:
    cuda = SimpleNamespace(is_available=lambda: True, device_count=lambda: 2)

    def __getattr__(self, name):
        return getattr(torch, name)


def worker(local_rank: int, config, dist_url: str, out: Path) -> None:
    from nerfstudio.scripts import train
    from patched_ns_train import record_replicas

    torch.set_num_threads(1)
    record_replicas(out)
    with mock.patch.object(train, "torch", TorchWithTwoGpus()):
        train._distributed_worker(local_rank, train.train_loop, 2, 2, 0, dist_url, config, device_type="cpu")


def main(scene: Path, out: Path) -> None:
    from tinysplat_ns.tinysplat_config import tinysplat_cpu

    config = copy.deepcopy(tinysplat_cpu.config)
    config.pipeline.datamanager.data = scene
    config.pipeline.datamanager.camera_res_scale_factor = 0.25
    config.output_dir, config.vis, config.timestamp = out, "tensorboard", "launcher"
    config.max_num_iterations, config.steps_per_eval_all_images = 30, 0
    config.machine.num_devices = 2
    config.pipeline.model.strategy = "mcmc"
    config.pipeline.model.mcmc.refine_start_iter, config.pipeline.model.mcmc.refine_every = 10, 10
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.start_processes(worker, args=(config, f"tcp://127.0.0.1:{port}", out), nprocs=2, start_method="spawn")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
