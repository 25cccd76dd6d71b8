"""Training in several processes (tinysplat_ns/core/distributed.py, tinysplat_ns/trainer.py) on
CPUs: gloo, 2 processes of 1 thread each, started by torchrun as a user starts them.

The failure to rule out is two independent copies of one training (same seed, same result): the
replicas must hold the same Gaussians bitwise and have trained on different views."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from distributed_step import SIZES, adc_accumulating, view_loss, views_and_scene
from scene import scene_dir

BIN = Path(sys.executable).parent
TESTS = Path(__file__).parent
# small images: 300 steps in about a minute on two cores
FAST = [
    "--pipeline.datamanager.camera-res-scale-factor", "0.25", "--steps-per-eval-image", "0",
    "--steps-per-eval-all-images", "0", "--logging.steps-per-log", "1",
]  # fmt: skip
DENSIFYING = {
    "adc": [
        "--pipeline.model.strategy", "adc", "--pipeline.model.adc.refine-start-iter", "50",
        "--pipeline.model.adc.refine-every", "50", "--pipeline.model.adc.reset-every", "150",
        "--pipeline.model.adc.grow-grad2d", "2e-5", "--pipeline.model.max-gaussians", "12000",
    ],
    "mcmc": [
        "--pipeline.model.strategy", "mcmc", "--pipeline.model.mcmc.refine-start-iter", "50",
        "--pipeline.model.mcmc.refine-every", "50", "--pipeline.model.max-gaussians", "9000",
    ],
    "thin-out": ["--pipeline.model.strategy", "thin-out", "--pipeline.model.thin-out.every", "20"],
}  # fmt: skip
INITIAL_GAUSSIANS = 7840  # the bundled scene's SfM points


def torchrun(args, log: Path, env=None, patched=False) -> subprocess.Popen:
    """`torchrun --standalone --nproc-per-node 2 ns-train tinysplat-cpu ...` in the background, its
    output in log.out / log.err."""
    script = str(TESTS / "patched_ns_train.py") if patched else str(BIN / "ns-train")
    return subprocess.Popen(
        [str(BIN / "torchrun"), "--standalone", "--nproc-per-node", "2", script, "tinysplat-cpu",
         "--data", str(scene_dir()), "--vis", "tensorboard", *FAST, *map(str, args)],
        cwd=log.parent, stdout=open(f"{log}.out", "w"), stderr=open(f"{log}.err", "w"), text=True,
        env={**(env or os.environ), "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip


def output(log: Path) -> str:
    return Path(f"{log}.out").read_text() + Path(f"{log}.err").read_text()


@pytest.mark.parametrize("strategy,steps", [("adc", 300), ("mcmc", 300), ("thin-out", 40)])
def test_two_processes_hold_the_same_gaussians_trained_on_different_views(tmp_path, plugin_env, strategy, steps):
    log = tmp_path / "run"
    env = {**plugin_env, "REPLICAS_TO": str(tmp_path)}
    run = torchrun(["--output-dir", tmp_path, "--max-num-iterations", steps, *DENSIFYING[strategy]], log, env, True)
    assert run.wait(timeout=900) == 0, output(log)[-3000:]
    first, second = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))

    count = len(first["params"]["means"])
    if strategy == "adc":
        assert INITIAL_GAUSSIANS < count <= 12000
    elif strategy == "mcmc":
        assert INITIAL_GAUSSIANS < count <= 9000
    else:
        assert count < INITIAL_GAUSSIANS
    for name, value in first["params"].items():
        assert torch.equal(value, second["params"][name]), name
    for group, state in first["moments"].items():
        for index, moments in state.items():
            for key, value in moments.items():
                assert torch.equal(value, second["moments"][group][index][key]), (group, key)
    # each step, a different view in each process: together, the one-process order of the views
    assert len(first["views"]) == len(second["views"]) == steps
    assert all(a != b for a, b in zip(first["views"], second["views"]))
    views = 44
    interleaved = [v for pair in zip(first["views"], second["views"]) for v in pair]
    for epoch in range(2 * steps // views):
        assert sorted(interleaved[epoch * views : (epoch + 1) * views]) == list(range(views))


def test_nerfstudios_launcher_trains_the_same_way(tmp_path):
    """Nerfstudio's launcher seeds each process differently (seed + rank) and joins the process group
    itself; MCMC's random draws must still agree."""
    subprocess.run([sys.executable, str(TESTS / "nerfstudio_launcher.py"), str(scene_dir()), str(tmp_path)],
                   check=True, capture_output=True, timeout=600)  # fmt: skip
    first, second = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert len(first["params"]["means"]) > INITIAL_GAUSSIANS
    for name, value in first["params"].items():
        assert torch.equal(value, second["params"][name]), name
    assert all(a != b for a, b in zip(first["views"], second["views"]))
    assert len(list(tmp_path.rglob("step-*.ckpt"))) == 1


# One step of two processes against one process with the mean of the same two views' gradients.

@pytest.mark.parametrize("sizes", SIZES)
def test_a_two_process_step_is_a_one_process_step_on_the_mean_of_both_views(tmp_path, sizes):
    subprocess.run([str(BIN / "torchrun"), "--standalone", "--nproc-per-node", "2", str(TESTS / "distributed_step.py"),
                    str(tmp_path / "step"), sizes], check=True, capture_output=True, timeout=300)  # fmt: skip
    # the reference, in one process: the mean of both views' losses; ADC's statistics accumulate
    # over both views, each in its own pixels, with gsplat's batch normalisation (a render of C
    # cameras reports n_cameras = C, which undoes the mean's 1/C)
    params, views = views_and_scene(SIZES[sizes])
    adc, reference = adc_accumulating()
    radii = []
    for view in views:
        loss, info = view_loss(params, view, 1 / len(views))
        loss.backward()
        adc.step_post_backward(params, {}, reference, 1, dict(info, n_cameras=len(views)))
        _, alone = adc_accumulating()
        adc.step_post_backward(params, {}, alone, 1, dict(info, n_cameras=len(views)))
        radii.append(alone["radii"])
    # gsplat's update of a batch keeps, for a Gaussian seen by several cameras, the last camera's
    # radius (an index assignment with repeated indices), not their maximum: a batch of views does
    reference["radii"] = torch.where(radii[1] > 0, radii[1], radii[0])
    assert int((reference["count"] == 2).sum()) > 100 and bool((reference["count"] == 1).any())

    for rank in (0, 1):
        step = torch.load(tmp_path / f"step.{rank}", weights_only=False)
        for name, p in params.items():
            torch.testing.assert_close(step["grads"][name], p.grad, rtol=1e-6, atol=1e-9, msg=name)
        for name in ("grad2d", "count", "radii"):
            torch.testing.assert_close(step["state"][name], reference[name], rtol=1e-6, atol=1e-9, msg=name)


# Stops and resumes.


def wait_for_checkpoint(run: subprocess.Popen, folder: Path) -> Path:
    deadline = time.time() + 600
    while time.time() < deadline and run.poll() is None:
        saved = sorted(folder.rglob("step-*.ckpt"))
        if saved:
            return saved[-1]
        time.sleep(0.05)
    raise AssertionError("no checkpoint was saved")


def workers(run: subprocess.Popen):
    """torchrun's processes, by LOCAL_RANK."""
    found = {}
    for child in psutil.Process(run.pid).children():
        found[int(child.environ()["LOCAL_RANK"])] = child
    return found


def test_a_killed_process_stops_all_with_one_line_and_the_checkpoint_loads(tmp_path):
    log = tmp_path / "run"
    run = torchrun(["--output-dir", tmp_path, "--max-num-iterations", 5000, "--steps-per-save", 10], log)
    wait_for_checkpoint(run, tmp_path)
    victim = workers(run)[1]
    victim.kill()
    killed = time.time()
    run.wait(timeout=60)
    assert time.time() - killed < 20
    text = output(log)
    # process 0 finds its peer gone at its next collective operation, or torchrun stops it first
    kept = the_one_error_keeps_a_checkpoint(text, ["another process of this training stopped, so all stop",
                                                   "stopped by torchrun (SIGTERM)"])  # fmt: skip
    assert "rank      : 1 (local_rank: 1)" in text and "SIGKILL" in text  # torchrun names it
    config = kept.parents[1] / "config.yml"
    scores = tmp_path / "eval.json"
    evaluated = subprocess.run([str(BIN / "ns-eval"), "--load-config", str(config), "--output-path", str(scores)],
                               cwd=tmp_path, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    scored = json.loads(scores.read_text())
    assert Path(scored["checkpoint"]) == kept and scored["results"]["psnr"] > 12


def test_torchrun_stopped_stops_all_with_one_line_and_keeps_the_checkpoint(tmp_path):
    log = tmp_path / "run"
    run = torchrun(["--output-dir", tmp_path, "--max-num-iterations", 5000, "--steps-per-save", 10], log)
    wait_for_checkpoint(run, tmp_path)
    processes = list(workers(run).values())
    run.terminate()  # what `kill` of the command, or a job scheduler's stop, sends
    stopped = time.time()
    assert run.wait(timeout=60) != 0
    assert time.time() - stopped < 20
    assert not [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    kept = the_one_error_keeps_a_checkpoint(output(log), ["stopped by torchrun (SIGTERM)"])
    state = torch.load(kept, map_location="cpu", weights_only=True)
    assert torch.isfinite(state["pipeline"]["_model.gauss_params.means"]).all()


def the_one_error_keeps_a_checkpoint(text: str, causes) -> Path:
    """The one `error:` line of a stopped distributed training: process 0's, one of `causes`, naming
    the checkpoint it kept (which exists)."""
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, text[-3000:]
    assert any(errors[0].startswith(f"error: process 0: {cause}") for cause in causes), errors[0]
    kept = Path(errors[0].split("the last checkpoint is kept: ")[1].split(".ckpt")[0] + ".ckpt")
    assert kept.exists()
    return kept


def test_ctrl_c_checkpoints_once_and_one_process_resumes(tmp_path):
    log = tmp_path / "run"
    env = {**os.environ, "EXIT_CODES_TO": str(tmp_path)}
    run = torchrun(["--output-dir", tmp_path, "--max-num-iterations", 5000, "--steps-per-save", 20], log, env, True)
    wait_for_checkpoint(run, tmp_path)
    run.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal sends torchrun; it passes it on to each
    run.wait(timeout=120)
    text = output(log)
    assert [(tmp_path / f"exit.{rank}").read_text() for rank in (0, 1)] == ["130", "130"], text[-3000:]
    interrupted = [line for line in text.splitlines() if line.startswith("Interrupted after step")]
    assert len(interrupted) == 1, text[-3000:]  # process 0 saves and says it
    step = int(interrupted[0].split()[3].rstrip(":"))
    saved = sorted(tmp_path.rglob("step-*.ckpt"))
    assert [p.name for p in saved] == [f"step-{step:09d}.ckpt"]  # (older ones are deleted: the latest only)
    assert "Resume with: ns-train tinysplat-cpu" in text

    resumed = subprocess.run(
        [str(BIN / "ns-train"), "tinysplat-cpu", "--data", str(scene_dir()), "--vis", "tensorboard", *FAST,
         "--output-dir", str(tmp_path / "resumed"), "--load-dir", str(saved[0].parent), "--max-num-iterations", "5"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = sorted((tmp_path / "resumed").rglob("step-*.ckpt"))
    assert [p.name for p in final] == [f"step-{step + 5:09d}.ckpt"]
    state = torch.load(final[0], map_location="cpu", weights_only=True)
    assert torch.isfinite(state["pipeline"]["_model.gauss_params.means"]).all()


def test_a_nan_streak_in_one_process_stops_all_keeping_the_last_good_state(tmp_path):
    log = tmp_path / "run"
    env = {**os.environ, "DIVERGE_FROM_STEP": "8", "DIVERGE_RANK": "1", "EXIT_CODES_TO": str(tmp_path)}
    run = torchrun(["--output-dir", tmp_path, "--max-num-iterations", 100, "--max-bad-steps", 5,
                    "--steps-per-save", 1000], log, env, True)  # fmt: skip
    run.wait(timeout=600)
    text = output(log)
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: training diverged: 5 steps in a row"), text[-3000:]
    assert [(tmp_path / f"exit.{rank}").read_text() for rank in (0, 1)] == ["1", "1"]
    # process 1's NaN reached process 0 through the mean: both skipped steps 8-12 and kept step 7's state
    saved = sorted(tmp_path.rglob("step-*.ckpt"))
    assert [p.name for p in saved] == ["step-000000007.ckpt"]
    state = torch.load(saved[0], map_location="cpu", weights_only=True)
    assert all(torch.isfinite(v).all() for k, v in state["pipeline"].items() if k.startswith("_model.gauss_params"))


def test_nerfstudios_launcher_on_a_cpu_points_at_torchrun_in_one_line(tmp_path):
    result = subprocess.run(
        [str(BIN / "ns-train"), "tinysplat-cpu", "--data", str(scene_dir()), "--machine.num-devices", "2",
         "--output-dir", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: --machine.num-devices 2 needs that many CUDA GPUs")
    assert "torchrun --standalone --nproc-per-node 2" in last
