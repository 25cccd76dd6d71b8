"""TinySplat's processes start torch's OpenMP with short spinning (tinysplat_ns/openmp.py): `ns-train
tinysplat...` starts itself over once with GOMP_SPINCOUNT set, our console scripts set it before
torch loads, and a user's own choice is left alone."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Stands in for ns-train: torch loaded, then the plugin's check, as ns-train's method discovery runs it.
AS_NS_TRAIN = (
    "import os, sys, torch\n"
    "sys.argv = [os.path.join(os.path.dirname(sys.executable), 'ns-train'), METHOD, '--data', 'x', *EXTRA]\n"
    "print('started with', os.environ.get('GOMP_SPINCOUNT'), flush=True)\n"
    "from tinysplat_ns.openmp import restart_ns_train_spinning_briefly\n"
    "restart_ns_train_spinning_briefly()\n"
    "print('went on in', os.getpid())\n"
)


def as_ns_train(method: str, *extra: str) -> str:
    return AS_NS_TRAIN.replace("METHOD", repr(method)).replace("EXTRA", repr(extra))


def run_python(code: str, **env_changes):
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "TINYSPLAT_OMP")}
    env.update(env_changes)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.splitlines()


def test_ns_train_of_ours_starts_over_once_with_short_spinning():
    lines = run_python(as_ns_train("tinysplat-cpu"))
    assert lines[:2] == ["started with None", "started with 3000"], lines
    assert len(lines) == 3 and lines[2].startswith("went on in"), lines


@pytest.mark.parametrize(
    "command,env,expected",
    [
        (["nerfacto"], {}, "None"),  # another method's ns-train is not touched
        (["tinysplat-cpu"], {"GOMP_SPINCOUNT": "5"}, "5"),  # the user's choice wins
        (["tinysplat-cpu"], {"OMP_WAIT_POLICY": "ACTIVE"}, "None"),
        (["tinysplat-cpu"], {"TINYSPLAT_OMP": "0"}, "None"),  # opted out
        (["tinysplat-cpu", "--help"], {}, "None"),  # nothing trains
        (["tinysplat-cpu", "nerfstudio-data", "-h"], {}, "None"),
    ],
    ids=["nerfacto", "users-spin-count", "users-wait-policy", "opted-out", "long-help", "short-help"],
)
def test_left_alone(command, env, expected):
    lines = run_python(as_ns_train(*command), **env)
    assert lines[0] == f"started with {expected}" and len(lines) == 2 and lines[1].startswith("went on"), lines


def test_console_scripts_set_it_before_torch_loads():
    # the entry point `tinysplat_ns.scripts.export:entrypoint` imports the package before the module
    lines = run_python(
        "import os, sys\n"
        "import tinysplat_ns.scripts\n"
        "print('torch' in sys.modules, os.environ.get('GOMP_SPINCOUNT'))\n"
    )
    assert lines == ["False 3000"], lines
