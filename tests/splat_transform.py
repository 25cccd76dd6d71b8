"""PlayCanvas' splat-transform (a Node.js program), the reader outside Python that checks our files.
Installed from npm into a cache folder on first use; a test that needs it fails (never skips) when
npm cannot fetch it."""

import csv
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

# 2.7.1: the newest release that runs on Node 20 (3.x needs Node 22); the machines have Node 20
VERSION = "2.7.1"
CACHE = Path(os.environ.get("TINYSPLAT_CACHE", Path.home() / ".cache" / "tinysplat")) / f"splat-transform-{VERSION}"


def executable() -> Path:
    program = CACHE / "node_modules" / ".bin" / "splat-transform"
    if program.exists():
        return program
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm is not installed: the .ply tests need Node.js and npm to install @playcanvas/splat-transform")
    CACHE.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [npm, "install", "--prefix", str(CACHE), "--no-audit", "--no-fund", "--ignore-scripts",
         f"@playcanvas/splat-transform@{VERSION}"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if result.returncode != 0 or not program.exists():
        pytest.fail(f"could not install @playcanvas/splat-transform@{VERSION} from npm:\n{result.stderr[-2000:]}")
    return program


def to_columns(source: Path, work: Path) -> dict:
    """Read `source` (.ply, .splat, ...) with splat-transform: its CSV output as float64 columns."""
    target = work / (source.name + ".csv")
    result = subprocess.run(
        [str(executable()), "-w", str(source), str(target)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, (
        f"splat-transform failed on {source}:\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
    )
    with open(target, newline="") as f:
        rows = list(csv.reader(f))
    values = np.array(rows[1:], dtype=np.float64).reshape(len(rows) - 1, len(rows[0]))
    return {name: values[:, i] for i, name in enumerate(rows[0])}
