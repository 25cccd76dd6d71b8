"""The compiled kernels as other platforms' compilers build them. Clang, as on macOS: no -fopenmp
(Apple's clang rejects it), the loops' threads started through the OpenMP runtime torch loaded
(core/kernels/parallel.h); Debian's clang++ builds them here, and they must compute what the default
build (GCC) computes, on two threads. MSVC on Windows: none is tried."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from kernel_outputs import kernel_outputs

# float32 images and gradients, the two compilers' instruction choices apart (fused multiply-adds):
# measured 4.3e-7 of each output's largest value at worst
TOL = 5e-6


def test_clang_build_without_openmp_computes_what_the_default_build_does(tmp_path):
    assert shutil.which("clang++"), "clang++ not found: `make setup` installs Debian's clang"
    saved = tmp_path / "clang.pt"
    child = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("kernel_outputs.py")), str(saved)],
        env=dict(os.environ, CXX="clang++"), capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert child.returncode == 0, child.stderr[-3000:]
    clang = torch.load(saved)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        default = kernel_outputs()
    finally:
        torch.set_num_threads(before)
    assert not clang["library"].endswith("_serial") and not default["library"].endswith("_serial")
    for name, reference in default.items():
        if name != "library":
            ours = clang[name]
            assert ours.shape == reference.shape and reference.abs().max() > 0, name
            err = float((ours.double() - reference.double()).abs().max() / reference.abs().max())
            assert err < TOL, f"{name}: relative difference {err:.3g}"


def test_windows_says_in_one_line_that_it_takes_the_pytorch_rasterizer(tmp_path):
    """MSVC, PyTorch's compiler on Windows, lacks the vector extensions the kernels are written in: no
    build is tried, and one warning says which rasterizer a Windows user gets and why."""
    script = (
        "import sys, warnings, torch\n"
        "sys.platform = 'win32'\n"
        "from tinysplat_ns.core.kernels import build\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    print(build.available(), build.available())\n"
        "print(*(str(w.message) for w in caught), sep='\\n')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], env=dict(os.environ, HOME=str(tmp_path)), capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "False False" and len(lines) == 2, out.stdout
    assert "pure-PyTorch rasterizer" in lines[1] and "MSVC" in lines[1] and "TINYSPLAT_CPP=0" in lines[1]
    assert not (tmp_path / ".cache" / "tinysplat").exists()  # nothing was built
