"""The compiled kernels on ARM64: built with Debian's aarch64 cross-compiler, NEON-sized lanes and the
flags build.py gives an ARM64 machine, against PyPI's aarch64 wheel of this torch (its libtorch), into
a small program (tests/aarch64/replay.cpp) that replays, under qemu-user, every call the x86 build
made on fixed inputs (tests/kernel_outputs.py). Each result must be the x86 build's."""

import os
import shutil
import subprocess
import sys
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest
import torch
from kernel_outputs import recorded_kernel_calls

from tinysplat_ns.core.kernels import build

HERE = Path(__file__).parent
# PyPI's tags for these wheels (torch's, and the CUDA runtime's that its libtorch_cpu links)
AARCH64_TAGS = ["manylinux_2_28_aarch64", "manylinux_2_25_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64"]
# float32 results of two instruction sets: measured 5.8e-7 of each output's largest value at worst
TOL = 5e-6


@pytest.fixture(scope="module")
def aarch64_torch() -> Path:
    """PyPI's aarch64 wheels of this torch and of the CUDA runtime libraries its libtorch_cpu links
    (the versions this environment has), their headers and libraries unpacked once under
    ~/.cache/tinysplat."""
    torch_version = version("torch").split("+")[0]
    target = Path.home() / ".cache" / "tinysplat" / f"aarch64-torch-{torch_version}"
    if not (target / "unpacked").exists():
        wheels = target / "wheels"
        pins = [f"torch=={torch_version}"] + [f"{p}=={version(p)}" for p in ("nvidia-cuda-runtime", "nvidia-cuda-cupti")]
        tags = [arg for tag in AARCH64_TAGS for arg in ("--platform", tag)]
        python = f"{sys.version_info.major}{sys.version_info.minor}"
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", *tags,
             "--python-version", python, "-d", str(wheels), *pins],
            env={**os.environ, "PIP_CONSTRAINT": ""}, check=True, capture_output=True, timeout=900,
        )  # fmt: skip
        for wheel in wheels.glob("*.whl"):
            with zipfile.ZipFile(wheel) as archive:
                wanted = [
                    name for name in archive.namelist()
                    if name.startswith(("torch/include/", "nvidia/"))
                    or (name.startswith("torch/lib/") and not any(w in name for w in ("cuda", "nvshmem", "python")))
                ]  # fmt: skip
                archive.extractall(target, wanted)
        shutil.rmtree(wheels)
        (target / "unpacked").touch()
    return target


def arm64_root(root: Path) -> Path:
    """A folder qemu-user reads paths under first (-L): the aarch64 C library, and the /proc/cpuinfo and
    /sys CPU files of a 2-core Neoverse N1. qemu passes the host's through otherwise, an x86
    machine's, and PyTorch's CPU detection (cpuinfo) crashes on them."""
    (root / "proc").mkdir(parents=True)
    (root / "lib").symlink_to("/usr/aarch64-linux-gnu/lib")
    core = "BogoMIPS\t: 50.00\nFeatures\t: fp asimd aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\n"
    core += "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x3\nCPU part\t: 0xd0c\nCPU revision\t: 1\n\n"
    (root / "proc" / "cpuinfo").write_text("".join(f"processor\t: {i}\n{core}" for i in range(2)))
    cpus = root / "sys" / "devices" / "system" / "cpu"
    for cpu in range(2):
        (cpus / f"cpu{cpu}" / "regs" / "identification").mkdir(parents=True)
        (cpus / f"cpu{cpu}" / "regs" / "identification" / "midr_el1").write_text("0x00000000413fd0c1\n")
        (cpus / f"cpu{cpu}" / "topology").mkdir()
        (cpus / f"cpu{cpu}" / "topology" / "physical_package_id").write_text("0\n")
    for name, value in (("possible", "0-1"), ("present", "0-1"), ("online", "0-1"), ("kernel_max", "1")):
        (cpus / name).write_text(value + "\n")
    return root


def flattened(results) -> list:
    if isinstance(results, (list, tuple)):
        return [leaf for r in results for leaf in flattened(r)]
    return [results]


def test_arm64_build_replays_the_x86_kernels_results(aarch64_torch, tmp_path):
    for tool, package in (("aarch64-linux-gnu-g++", "g++-aarch64-linux-gnu"), ("qemu-aarch64", "qemu-user")):
        assert shutil.which(tool), f"{tool} not found: `make setup` installs Debian's {package}"
    calls = recorded_kernel_calls()
    assert {name for name, _, _ in calls} == {
        "project_forward", "sh_forward", "plan_tiles", "rasterize_forward", "ssim_and_gradient", "ssim_forward",
        "rasterize_backward", "sh_backward", "project_backward", "bilateral_grid_forward",
        "bilateral_grid_backward",
    }  # fmt: skip
    torch.save([(name, inputs) for name, inputs, _ in calls], tmp_path / "calls.pt")

    include, lib = aarch64_torch / "torch" / "include", aarch64_torch / "torch" / "lib"
    runtime_libs = [lib, *{p.parent for p in aarch64_torch.glob("nvidia/*/lib/*.so*")}]
    compiled = subprocess.run(
        ["aarch64-linux-gnu-g++", "-std=c++20", *build.CFLAGS, *build.NEON, "-w", f"-I{include}",
         f"-I{include / 'torch' / 'csrc' / 'api' / 'include'}", str(HERE / "aarch64" / "replay.cpp"),
         *map(str, build.SOURCES), f"-L{lib}", "-Wl,--no-as-needed", "-ltorch_cpu", "-lc10", str(lib / "libgomp.so.1"),
         *(f"-Wl,-rpath-link,{d}" for d in runtime_libs), "-o", str(tmp_path / "replay")],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert compiled.returncode == 0, compiled.stderr[-3000:]
    ran = subprocess.run(
        ["qemu-aarch64", "-L", str(arm64_root(tmp_path / "root")),
         "-E", "LD_LIBRARY_PATH=" + ":".join(map(str, runtime_libs)), "-E", "OMP_NUM_THREADS=2",
         str(tmp_path / "replay"), str(tmp_path / "calls.pt"), str(tmp_path / "results.pt")],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert ran.returncode == 0 and f"replayed {len(calls)} calls" in ran.stdout, ran.stdout + ran.stderr[-3000:]
    # a list of tuples that the harness's own pickler wrote (torch.jit's tensor-list type tags)
    replayed = torch.load(tmp_path / "results.pt", weights_only=False)
    assert len(replayed) == len(calls)
    for (name, _, expected), got in zip(calls, replayed, strict=True):
        expected, got = flattened(expected), flattened(got)
        assert len(got) == len(expected), name
        for i, (a, b) in enumerate(zip(got, expected)):
            what = f"{name}, result {i}"
            if not isinstance(b, torch.Tensor):
                assert abs(a - b) <= TOL * abs(b), what
            elif b.is_floating_point() and b.numel() and b.any():
                assert a.shape == b.shape and a.dtype == b.dtype, what
                err = float((a.double() - b.double()).abs().max() / b.double().abs().max())
                assert err < TOL, f"{what}: relative difference {err:.3g}"
            else:
                assert torch.equal(a, b), what  # tile plans and radii: the same integers; empty outputs
