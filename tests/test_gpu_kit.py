"""The GPU machine's kit (`scripts/gpu_check.sh prepare`), proven on this CPU machine: a fresh venv
that holds only packages of that machine's image (scripts/gpu_machine.txt, linked in from this
environment) gets the kit by `pip install --no-index --no-deps`, and in it `gpu_check.sh smoke`,
what the device call runs first, trains TinySplat 20 steps with the colmap parser, writes its .ply
and builds splatfacto's model offline. It installs the kit's gsplat 1.5.3 (GSPLAT=1.5.3, what a
user with an RTX 50-series card runs); the rest of the suite runs Nerfstudio's pinned 1.4.0."""

import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from packaging.utils import canonicalize_name
from plyfile import PlyData

ROOT = Path(__file__).parents[1]


def machine_stand_in(dest: Path) -> Path:
    """A venv whose site-packages links only the distributions of this environment that the GPU
    machine's image also has: its python3."""
    lines = (ROOT / "scripts/gpu_machine.txt").read_text().splitlines()
    machine = {canonicalize_name(n) for line in lines if not line.startswith("#") for n in line.split()}
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(dest)], check=True)
    site = next(dest.glob("lib/python*/site-packages"))
    owners = {}  # top-level entry of site-packages -> the distributions with files in it
    for dist in importlib.metadata.distributions():
        name, location = canonicalize_name(dist.metadata["Name"]), Path(dist.locate_file(""))
        # not console scripts, nor single modules' bytecode
        for top in {file.parts[0] for file in dist.files or ()} - {"..", "__pycache__"}:
            owners.setdefault((location, top), set()).add(name)
    for (location, top), dists in owners.items():
        if dists & machine:
            assert dists <= machine, f"{top} holds {dists - machine} too, which the GPU machine lacks"
            if not (site / top).exists() and (location / top).exists():
                (site / top).symlink_to(location / top)
    return dest / "bin" / "python3"


def test_kit_installs_and_trains_in_the_gpu_machines_packages(tmp_path):
    kit, work, out = tmp_path / "kit", tmp_path / "work", tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    prepared = subprocess.run(
        ["bash", "scripts/gpu_check.sh", "prepare", "--python-version", f"{sys.version_info.major}.{sys.version_info.minor}"],
        cwd=ROOT, env={**env, "GPU_KIT": str(kit), "PIP": str(Path(sys.executable).parent / "pip")},
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    travels = float(re.search(r"= ([\d.]+) MiB of the 64 MiB", prepared.stdout).group(1))
    assert travels < 48, prepared.stdout  # the Python 3.12 kit differs only in a few binary wheels

    python = machine_stand_in(tmp_path / "machine")
    probe = "import importlib.util as u; print([m for m in ('nerfstudio', 'gsplat', 'viser', 'tyro') if u.find_spec(m)])"
    assert subprocess.run([python, "-c", probe], capture_output=True, text=True, env=env).stdout.strip() == "[]"

    smoke = subprocess.run(
        ["bash", "scripts/gpu_check.sh", "smoke"], cwd=ROOT, capture_output=True, text=True, timeout=900,
        env={**env, "PATH": f"{python.parent}:{env['PATH']}", "GPU_KIT": str(kit), "WORK": str(work), "OUT": str(out),
             "GSPLAT": "1.5.3"},
    )  # fmt: skip
    assert smoke.returncode == 0, smoke.stdout[-4000:] + smoke.stderr[-3000:]
    assert "torch " in smoke.stdout and "gsplat 1.5.3" in smoke.stdout
    assert "splatfacto 0 steps: ok" in smoke.stdout
    # the kit's own packages served the runs, not this environment's
    assert (work / "site" / "nerfstudio").is_dir() and (work / "site" / "bin" / "ns-train").exists()

    vertex = PlyData.read(str(out / "smoke.ply"))["vertex"]
    written = int(re.search(r"Wrote ([\d,]+) of", smoke.stdout).group(1).replace(",", ""))
    assert len(vertex) == written > 1000
    assert all(np.isfinite(vertex[p]).all() for p in ("x", "y", "z", "opacity", "scale_0", "rot_0", "f_dc_0"))

    checkpoint = next((work / "outputs").glob("gpu/splatfacto/smoke-splatfacto/nerfstudio_models/step-*.ckpt"))
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["pipeline"]
    assert state["_model.gauss_params.means"].shape[1] == 3
