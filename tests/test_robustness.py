"""Training that loses nothing (tinysplat_ns/trainer.py): NaN/inf steps skipped and counted, a run
that keeps diverging stopped with its last good state saved, the Gaussian budget held under a
runaway densifier, Ctrl-C saving a checkpoint that a resumed run continues from exactly, and
checkpoints that a kill mid-write cannot corrupt."""

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from scene import load_points, scene_dir
from training import build_trainer, train_steps

BIN = Path(sys.executable).parent
TESTS = Path(__file__).parent


def poison_loss(model, bad_steps):
    """Make the loss NaN at `bad_steps` (as a diverging run would)."""
    original = model.get_loss_dict

    def get_loss_dict(outputs, batch, metrics_dict=None):
        losses = original(outputs, batch, metrics_dict)
        if model.step in bad_steps:
            losses["l1"] = losses["l1"] * math.nan
        return losses

    model.get_loss_dict = get_loss_dict


def snapshot(trainer):
    model = trainer.pipeline.model
    params = {name: p.detach().clone() for name, p in model.gauss_params.items()}
    moments = {
        name: {k: v.clone() for k, v in opt.state[opt.param_groups[0]["params"][0]].items()}
        for name, opt in trainer.optimizers.optimizers.items()
        if name in params and opt.state
    }
    strategy = {k: v.clone() for k, v in model.strategy_state.items() if isinstance(v, torch.Tensor)}
    return params, moments, strategy


def assert_same(a, b):
    for part_a, part_b in zip(a, b):
        assert part_a.keys() == part_b.keys()
        for name in part_a:
            if isinstance(part_a[name], dict):
                for k in part_a[name]:
                    assert torch.equal(part_a[name][k], part_b[name][k]), (name, k)
            else:
                assert torch.equal(part_a[name], part_b[name]), name


@pytest.mark.parametrize("poison", ["loss", "gradient"])
def test_non_finite_steps_are_skipped_and_counted(tmp_path, poison):
    """ADC, so that its gradient statistics are checked too: nothing of a bad step gets in. It has
    densified at step 5 (new parameter tensors) before the bad steps 7-9."""
    trainer = build_trainer(
        scene_dir(), tmp_path, pipeline__model__strategy="adc", pipeline__model__adc__refine_start_iter=3,
        pipeline__model__adc__refine_every=5, pipeline__model__adc__grow_grad2d=1e-12,
        pipeline__model__max_gaussians=9000,
    )  # fmt: skip
    model = trainer.pipeline.model
    bad = {7, 8, 9}
    if poison == "loss":
        poison_loss(model, bad)
    else:
        model.gauss_params["scales"].register_hook(lambda g: g * math.inf if model.step in bad else g)
    train_steps(trainer, range(7))
    assert len(model.means) == 9000  # the SfM points are 7840: grown at step 5
    if poison == "gradient":  # densification replaced the parameter that had the hook
        model.gauss_params["scales"].register_hook(lambda g: g * math.inf if model.step in bad else g)
    before = snapshot(trainer)
    assert before[2]["grad2d"].abs().sum() > 0  # statistics are being gathered
    losses = []
    train_steps(trainer, range(7, 10), each=lambda step, loss: losses.append(loss))
    assert_same(before, snapshot(trainer))
    assert trainer.skipped_steps == 3 and trainer.bad_streak == 3
    if poison == "loss":
        assert all(math.isnan(loss) for loss in losses)
    train_steps(trainer, range(10, 14), each=lambda step, loss: losses.append(loss))
    assert trainer.bad_streak == 0 and all(math.isfinite(loss) for loss in losses[3:])
    assert not torch.equal(before[0]["means"], model.gauss_params["means"])
    assert all(torch.isfinite(p).all() for p in model.gauss_params.values())


def test_a_diverging_run_stops_with_its_last_good_state_saved(tmp_path):
    trainer = build_trainer(scene_dir(), tmp_path, max_bad_steps=4)
    poison_loss(trainer.pipeline.model, set(range(6, 100)))
    train_steps(trainer, range(6))
    good = {name: p.detach().clone() for name, p in trainer.pipeline.model.gauss_params.items()}
    with pytest.raises(SystemExit) as stopped:
        train_steps(trainer, range(6, 100))
    message = str(stopped.value)
    checkpoint = trainer.checkpoint_dir / "step-000000005.ckpt"
    assert message.startswith("error: training diverged: 4 steps in a row (up to step 9)")
    assert str(checkpoint) in message and "\n" not in message
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert saved["step"] == 5
    for name, value in good.items():
        assert torch.equal(saved["pipeline"][f"_model.gauss_params.{name}"], value), name


def test_budget_holds_under_a_runaway_densifier(tmp_path):
    """ADC told to grow every Gaussian every 5 steps from step 0: without the budget the count
    would double each time; with it, it stops at the cap and stays there."""
    budget = 9000  # the SfM points are 7840
    trainer = build_trainer(
        scene_dir(), tmp_path, pipeline__model__strategy="adc", pipeline__model__max_gaussians=budget,
        pipeline__model__adc__grow_grad2d=1e-12, pipeline__model__adc__refine_start_iter=0,
        pipeline__model__adc__refine_every=5, pipeline__model__adc__prune_opa=0.0,
    )  # fmt: skip
    counts = []
    train_steps(trainer, range(40), each=lambda step, loss: counts.append(len(trainer.pipeline.model.means)))
    assert max(counts) == budget and counts[-1] == budget, counts


def tensorboard_scalars(run_dir: Path):
    """What the run logged to tensorboard: {tag: {step: value}}."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next(run_dir.rglob("events.out.tfevents.*"))))
    events.Reload()
    return {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}


def tensorboard_losses(run_dir: Path):
    return tensorboard_scalars(run_dir)["Train Loss"]


def ns_train(args, log: Path, patches: dict = None) -> subprocess.Popen:
    """ns-train in the background, its output in log.out / log.err (a pipe nobody reads would
    fill up and stall it), unbuffered so that a test reads each line as it is printed.
    `patches`: tests/patched_ns_train.py's settings, to run that instead."""
    command = [sys.executable, str(TESTS / "patched_ns_train.py")] if patches else [str(BIN / "ns-train")]
    return subprocess.Popen(
        [*command, "tinysplat-cpu", "--data", str(scene_dir()), "--vis", "tensorboard",
         "--logging.steps-per-log", "1", "--steps-per-eval-image", "0", "--steps-per-eval-all-images", "0",
         # densifying every 5 steps, so the strategy's state must be restored too
         "--pipeline.model.strategy", "adc", "--pipeline.model.adc.refine-start-iter", "4",
         "--pipeline.model.adc.refine-every", "5", "--pipeline.model.adc.grow-grad2d", "2e-5",
         "--pipeline.model.max-gaussians", "12000", *map(str, args)],
        cwd=log.parent, stdout=open(f"{log}.out", "w"), stderr=open(f"{log}.err", "w"), text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **{name: str(value) for name, value in (patches or {}).items()}},
    )  # fmt: skip


def output(log: Path, stream: str) -> str:
    return Path(f"{log}.{stream}").read_text()


def wait_for_checkpoint(run: subprocess.Popen, folder: Path) -> None:
    """Until the run has saved its first checkpoint: it is training."""
    deadline = time.time() + 600
    while not list(folder.rglob("step-*.ckpt")) and time.time() < deadline and run.poll() is None:
        time.sleep(0.05)


def test_ctrl_c_saves_a_checkpoint_and_the_resumed_run_continues_exactly(tmp_path):
    steps = 60
    # the uninterrupted run, for the reference loss curve
    whole = ns_train(["--output-dir", tmp_path / "whole", "--max-num-iterations", steps], tmp_path / "whole")
    assert whole.wait(timeout=600) == 0, output(tmp_path / "whole", "err")[-2000:]
    reference = tensorboard_losses(tmp_path / "whole")
    assert sorted(reference) == list(range(steps))

    run = ns_train(
        ["--output-dir", tmp_path / "cut", "--max-num-iterations", steps, "--steps-per-save", 15], tmp_path / "cut"
    )
    wait_for_checkpoint(run, tmp_path / "cut")
    run.send_signal(signal.SIGINT)
    run.wait(timeout=600)
    out, err = output(tmp_path / "cut", "out"), output(tmp_path / "cut", "err")
    assert run.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    checkpoints = list((tmp_path / "cut").rglob("step-*.ckpt"))
    assert len(checkpoints) == 1 and not list((tmp_path / "cut").rglob("*.tmp"))
    cut = int(checkpoints[0].stem.split("-")[1])
    assert 15 <= cut < steps - 1, cut
    assert f"Interrupted after step {cut}: saved {checkpoints[0]}" in " ".join(out.split())
    assert f"--load-dir {checkpoints[0].parent} --max-num-iterations {steps - 1 - cut}" in " ".join(out.split())

    saved = torch.load(checkpoints[0], map_location="cpu", weights_only=True)
    sfm_points = len(load_points(scene_dir())[0])
    assert len(saved["pipeline"]["_model.gauss_params.means"]) != sfm_points  # densified before the cut
    # the checkpoint is usable: loaded as ns-viewer and ns-eval load it, exported, and resumed
    from nerfstudio.utils.eval_utils import eval_setup

    config = checkpoints[0].parent.parent / "config.yml"
    _, pipeline, _, loaded_step = eval_setup(config)
    assert loaded_step == cut and len(pipeline.model.means) == len(saved["pipeline"]["_model.gauss_params.means"])
    export = subprocess.run(
        [str(BIN / "tinysplat-export"), "--load-config", str(config), "--output", str(tmp_path / "cut.ply")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert export.returncode == 0 and f"step {cut})" in export.stdout, export.stderr[-2000:]
    resumed = ns_train(
        ["--output-dir", tmp_path / "resumed", "--max-num-iterations", steps - 1 - cut,
         "--load-dir", checkpoints[0].parent],
        tmp_path / "resumed",
    )  # fmt: skip
    assert resumed.wait(timeout=600) == 0, output(tmp_path / "resumed", "err")[-2000:]
    continued = tensorboard_losses(tmp_path / "resumed")
    assert sorted(continued) == list(range(cut + 1, steps))
    # same views, same random draws, same state: the same losses
    for step, loss in continued.items():
        assert loss == pytest.approx(reference[step], rel=1e-6, abs=0), (step, loss, reference[step])


def test_a_kill_while_saving_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    trainer = build_trainer(scene_dir(), tmp_path)
    train_steps(trainer, range(3))
    first = trainer.write_checkpoint(2)
    original_save = torch.save

    def killed_midway(state, path):
        original_save(state, path)
        Path(path).write_bytes(Path(path).read_bytes()[:1000])  # what a kill mid-write leaves
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", killed_midway)
    train_steps(trainer, range(3, 5))
    with pytest.raises(KeyboardInterrupt):
        trainer.write_checkpoint(4)
    assert sorted(p.name for p in trainer.checkpoint_dir.iterdir()) == [first.name]
    assert torch.load(first, map_location="cpu", weights_only=True)["step"] == 2


def test_second_ctrl_c_quits_at_once_without_saving(tmp_path):
    trainer = build_trainer(scene_dir(), tmp_path)
    train_steps(trainer, range(2))
    previous = signal.getsignal(signal.SIGINT)
    try:
        trainer._on_sigint(signal.SIGINT, None)  # the first Ctrl-C: save after this step
        assert trainer.interrupt_requested
        with pytest.raises(SystemExit) as stopped:
            signal.getsignal(signal.SIGINT)(signal.SIGINT, None)  # the second
        assert stopped.value.code == 130
    finally:
        signal.signal(signal.SIGINT, previous)
    assert not trainer.checkpoint_dir.exists() or not list(trainer.checkpoint_dir.iterdir())


# The exits of ns-train itself. What each leaves running is checked after every test
# (conftest.py's no_process_outlives_its_test).


def test_second_ctrl_c_to_ns_train_quits_at_once_keeping_the_last_checkpoint(tmp_path):
    log = tmp_path / "run"
    run = ns_train(["--output-dir", tmp_path, "--max-num-iterations", 1000, "--steps-per-save", 3], log,
                   patches={"STEP_SECONDS": 2})  # fmt: skip
    wait_for_checkpoint(run, tmp_path)
    run.send_signal(signal.SIGINT)
    deadline = time.time() + 60
    while "Ctrl-C again to quit" not in output(log, "out") and time.time() < deadline:
        time.sleep(0.02)
    run.send_signal(signal.SIGINT)  # within the same step
    assert run.wait(timeout=120) == 130
    out, err = " ".join(output(log, "out").split()), output(log, "err")
    assert "Ctrl-C: stopped; the last checkpoint written is kept" in out and "Interrupted after" not in out
    assert "Traceback" not in err, err[-2000:]
    assert [p.name for p in tmp_path.rglob("step-*.ckpt")] == ["step-000000003.ckpt"]


def test_a_diverging_ns_train_stops_in_one_line(tmp_path):
    log = tmp_path / "run"
    run = ns_train(["--output-dir", tmp_path, "--max-num-iterations", 1000, "--max-bad-steps", 3], log,
                   patches={"DIVERGE_FROM_STEP": 6})  # fmt: skip
    assert run.wait(timeout=600) == 1
    err = output(log, "err")
    assert "Traceback" not in err, err[-2000:]
    assert err.strip().splitlines()[-1].startswith("error: training diverged: 3 steps in a row (up to step 8)")
    assert [p.name for p in tmp_path.rglob("step-*.ckpt")] == ["step-000000005.ckpt"]
    # the logs (README: skipped steps counted as `Skipped steps (NaN/inf)`, each weighted loss term as
    # `Train Loss Dict/<name>`), the stopping step's count included
    logged = tensorboard_scalars(tmp_path)
    assert logged["Skipped steps (NaN/inf)"] == {6: 1.0, 7: 2.0, 8: 3.0}
    l1, dssim, total = logged["Train Loss Dict/l1"], logged["Train Loss Dict/dssim"], logged["Train Loss"]
    assert set(range(6)) <= set(l1) and set(l1) == set(dssim)
    for step in range(6):  # l1=0.8 dssim=0.2, the default: weighted, and summing to the loss
        assert 0 < l1[step] < 0.8 and 0 < dssim[step] < 0.2 * 2, (step, l1[step], dssim[step])
        assert l1[step] + dssim[step] == pytest.approx(total[step], rel=1e-5)


def test_sigterm_to_ns_train_ends_it_through_its_exit_handlers(tmp_path):
    """A kill (SIGTERM, what `kill` and `timeout` send) exits with 143 like a shell's killed job,
    through the exit handlers that stop the processes the run started, not on the spot."""
    log = tmp_path / "run"
    run = ns_train(["--output-dir", tmp_path, "--max-num-iterations", 1000, "--steps-per-save", 3], log)
    wait_for_checkpoint(run, tmp_path)
    run.terminate()
    assert run.wait(timeout=120) == 143
    assert "Traceback" not in output(log, "err")
    # the last checkpoint is kept, whole (only older ones are deleted, once a newer one is in place), and
    # no partial one is left beside it
    checkpoints = sorted(tmp_path.rglob("step-*.ckpt"))
    assert checkpoints and not [p.name for p in tmp_path.rglob("*") if p.suffix == ".tmp"]
    for checkpoint in checkpoints:
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
        step = int(checkpoint.stem.split("-")[1])
        assert saved["step"] == step and step > 0 and step % 3 == 0, (checkpoint.name, saved["step"])
        n = len(saved["pipeline"]["_model.gauss_params.means"])
        for name in ("means", "scales", "quats", "opacities", "features_dc", "features_rest"):
            value = saved["pipeline"][f"_model.gauss_params.{name}"]
            assert len(value) == n and torch.isfinite(value).all(), name
        assert saved["optimizers"]["means"]["state"][0]["exp_avg"].shape == (n, 3)
