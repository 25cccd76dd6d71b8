"""Shared fixtures."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from filelock import FileLock
from processes import adopt_orphans, survivors

from tinysplat_ns.openmp import spin_briefly

PLUGINS = Path(__file__).parent / "fixtures" / "plugins"
# a process still ending this long after its test finished is a survivor
SURVIVOR_GRACE_S = 5

# the processes the tests' commands start stay below this one, even once their parent is gone
adopt_orphans()

# The commands start with the spin count TinySplat sets already in their environment, so that
# `ns-train tinysplat...` does not start itself over: about 8 s a start on a 2-core Zen 3. The suite's
# shared run (`trained`) and test_openmp.py start as a user's do.
spin_briefly()


@pytest.fixture(autouse=True)
def no_process_outlives_its_test():
    """Every command a test runs (ns-train, the tinysplat-* scripts, ...) has stopped all it started
    by the time the test ends; a survivor fails the test, named, and is killed."""
    yield
    left = survivors(os.getpid(), grace=SURVIVOR_GRACE_S)
    if left:
        pytest.fail("processes outlived their command:\n" + "\n".join(left), pytrace=False)


@pytest.fixture(scope="session")
def plugin_env(tmp_path_factory):
    """An environment in which a third-party package (tests/fixtures/plugins: a strategy and a loss
    term) is installed through pip, as a user would install one."""
    site = tmp_path_factory.mktemp("plugin_site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(site)]
        + [str(PLUGINS)],
        check=True,
        capture_output=True,
    )
    return {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """The suite's one finished `ns-train tinysplat-cpu` run on the real scene, which the tests of
    ns-eval, ns-export, ns-render, ns-viewer, tinysplat-export and tinysplat-compare share (none writes
    into it): 300 steps, with the SH degree raised every 10 steps, so that every band has been trained
    (non-zero). Under pytest-xdist the first worker to ask trains it, in the folder all workers share,
    and the others wait for it. (its folder, its config.yml)"""
    from scene import scene_dir
    from training import TRAINED_STEPS, as_a_users, run_command

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the workers' folders lie side by side in this one
    work = base / "trained"
    with FileLock(base / "trained.lock"):
        if not (work / "finished").exists():
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir()
            run_command(
                [
                    "ns-train", "tinysplat-cpu", "--data", scene_dir(), "--output-dir", work / "outputs",
                    "--max-num-iterations", TRAINED_STEPS, "--vis", "tensorboard", "--steps-per-eval-all-images", 0,
                    "--pipeline.model.sh-degree-interval", 10,
                ],
                work,
                env=as_a_users(),
            )  # fmt: skip
            (work / "finished").touch()
    return work, next((work / "outputs").rglob("config.yml"))
