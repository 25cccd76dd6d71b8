"""Training in several processes on one machine, measured.

1. What the processes exchange per step (tinysplat_ns/core/distributed.py), 2 gloo processes of 1
   thread: averaging the gradients of N Gaussians (SH degree 3: 59 floats each) and gathering the
   strategy's view of the step (2D-mean gradients and radii), at 10k / 50k / 200k Gaussians.
2. `tinysplat-cpu` on the bundled scene at full resolution throughout (its preset halves it for
   the first 1000 steps, which would favour whichever run does fewer steps) for the same training
   wall time (from its first step to a Ctrl-C, whose checkpoint is then scored by ns-eval): 1 process
   of 2 threads against torchrun's 2 processes of 1 thread. Steps/s, views/s, test PSNR.

    .venv/bin/python benchmarks/distributed.py [--seconds 240] [--skip-training]
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from common import scene_dir

from tinysplat_ns.core.distributed import Collectives

BIN = Path(sys.executable).parent
FLOATS_PER_GAUSSIAN = {"means": 3, "scales": 3, "quats": 4, "opacities": 1, "features_dc": 3, "features_rest": 45}


def exchange_worker(rank: int, port: int, sizes, repeats: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    collectives = Collectives()
    results = {}
    for n in sizes:
        params = [torch.nn.Parameter(torch.zeros(n, k)) for k in FLOATS_PER_GAUSSIAN.values()]
        means2d = torch.zeros(1, n, 2, requires_grad=True)
        info = {"means2d": means2d, "radii": torch.ones(1, n, dtype=torch.int32), "width": 400, "height": 300,
                "n_cameras": 1}  # fmt: skip
        times = {"mean_gradients": [], "views_of_step": []}
        for _ in range(repeats):
            for p in params:
                p.grad = torch.randn_like(p)
            means2d.grad = torch.randn_like(means2d)
            collectives.barrier()
            start = time.perf_counter()
            collectives.mean_gradients(params)
            middle = time.perf_counter()
            collectives.views_of_step(info)
            times["mean_gradients"].append(middle - start)
            times["views_of_step"].append(time.perf_counter() - middle)
        results[n] = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    if rank == 0:
        Path(out).write_text(json.dumps(results))
    dist.destroy_process_group()


def measure_exchange(sizes=(10_000, 50_000, 200_000), repeats: int = 15) -> dict:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "exchange.json"
        mp.start_processes(exchange_worker, args=(port, sizes, repeats, str(out)), nprocs=2, start_method="fork")
        return {int(k): v for k, v in json.loads(out.read_text()).items()}


def train_for(seconds: float, processes: int, work: Path) -> dict:
    """tinysplat-cpu from its first step for `seconds`, then Ctrl-C; the checkpoint's step and ns-eval's scores."""
    command = [str(BIN / "ns-train"), "tinysplat-cpu", "--data", str(scene_dir()), "--output-dir", str(work),
               "--vis", "tensorboard", "--max-num-iterations", "100000", "--steps-per-eval-all-images", "0",
               "--steps-per-eval-image", "0", "--logging.steps-per-log", "1",
               "--pipeline.model.num-downscales", "0"]  # fmt: skip
    if processes > 1:
        command = [str(BIN / "torchrun"), "--standalone", "--nproc-per-node", str(processes), *command]
    log = work / "train.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("OMP_NUM_THREADS", None)  # one process: torch's default, a thread per core; torchrun sets 1
    with open(log, "w") as sink:
        run = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=work)
        while "Step (% Done)" not in log.read_text() and run.poll() is None:
            time.sleep(0.05)
        time.sleep(seconds)
        run.send_signal(signal.SIGINT)
        run.wait(timeout=300)
    checkpoint = max(work.rglob("step-*.ckpt"))
    config = checkpoint.parents[1] / "config.yml"
    scores = work / "eval.json"
    subprocess.run([str(BIN / "ns-eval"), "--load-config", str(config), "--output-path", str(scores)],
                   check=True, capture_output=True, cwd=work)  # fmt: skip
    steps = int(checkpoint.stem.split("-")[1]) + 1
    results = json.loads(scores.read_text())["results"]
    return {"steps": steps, "views": steps * processes, "psnr": results["psnr"], "ssim": results["ssim"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=240.0)
    parser.add_argument("--skip-training", action="store_true")
    args = parser.parse_args()

    print("Exchanged per step, 2 gloo processes of 1 thread (median ms):")
    print(f"{'Gaussians':>10} {'mean_gradients':>15} {'views_of_step':>14} {'MB averaged':>12}")
    for n, t in measure_exchange().items():
        mb = n * sum(FLOATS_PER_GAUSSIAN.values()) * 4 / 1e6
        print(f"{n:>10,} {t['mean_gradients'] * 1e3:>15.1f} {t['views_of_step'] * 1e3:>14.1f} {mb:>12.1f}")
    if args.skip_training:
        return

    print(f"\ntinysplat-cpu on the bundled scene at full resolution, {args.seconds:.0f} s of training each "
          "(then Ctrl-C, ns-eval):")
    rows = {}
    for processes, label in ((1, "1 process x 2 threads"), (2, "2 processes x 1 thread")):
        with tempfile.TemporaryDirectory() as tmp:
            rows[label] = train_for(args.seconds, processes, Path(tmp))
    one = rows["1 process x 2 threads"]
    print(f"{'':>24} {'steps':>6} {'steps/s':>8} {'views/s':>8} {'PSNR':>7} {'SSIM':>6} {'views/s ratio':>14}")
    for label, r in rows.items():
        print(f"{label:>24} {r['steps']:>6} {r['steps'] / args.seconds:>8.2f} {r['views'] / args.seconds:>8.2f} "
              f"{r['psnr']:>7.2f} {r['ssim']:>6.3f} {r['views'] / one['views']:>14.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
