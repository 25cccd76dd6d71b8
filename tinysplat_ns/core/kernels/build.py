"""Building and loading the compiled kernels: the sources of this folder, one library, built on first
use with PyTorch's extension mechanism (`torch.utils.cpp_extension`, the compiler `torch.compile` needs
too) and cached in ~/.cache/tinysplat/kernels. Where it cannot be built (no compiler, a failed build:
one warning says which) or TINYSPLAT_CPP=0, the PyTorch versions of every kernel are used instead.

GCC or Clang builds them ($CXX, else c++: Apple's clang on macOS), for the CPU found: AVX-512 or AVX2
lanes on x86, NEON-sized ones on ARM64. Their loops run on torch's own threads (parallel.h), with no
-fopenmp. MSVC lacks the vector extensions they are written in: on Windows, one warning and PyTorch's.
"""

import functools
import hashlib
import logging
import os
import platform
import subprocess
import sys
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Optional, Tuple

import torch

SOURCES = [Path(__file__).with_name(f"{name}.cpp") for name in ("rasterize", "project", "ssim", "bilateral_grid")]
# without errno or floating-point traps to keep, GCC vectorises branch-free scalar loops that take
# square roots and divisions (the tile plan's rectangles); no result changes. -Wno-psabi: GCC's note
# that vector arguments' ABI changed in GCC 4.6 (clang takes the flag too)
CFLAGS = ["-O3", "-Wno-psabi", "-fno-math-errno", "-fno-trapping-math"]
NEON = ["-DTINYSPLAT_LANES=4"]  # NEON's registers hold four floats
_LOADING = threading.Lock()  # the viewer's thread renders beside training: build and load once
_built = {}  # "name": the loaded library's, which says its instruction set and how its loops share the cores


def _compiler() -> str:
    return os.environ.get("CXX", "c++")  # what torch.utils.cpp_extension builds with


def _takes(compiler: str, flag: str) -> bool:
    """Whether `compiler` builds a program with `flag` without a word (-Werror: a flag it only warns
    about is one it does not take)."""
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe.cpp"
        probe.write_text("int main() { return 0; }\n")
        try:
            done = subprocess.run(
                [compiler, flag, "-Werror", str(probe), "-o", str(Path(tmp) / "probe")], capture_output=True, timeout=120
            )
        except (OSError, subprocess.TimeoutExpired):
            return False
        return done.returncode == 0


def _openmp_runtime() -> Optional[Path]:
    """The OpenMP runtime library torch's own parallel loops run on (parallel.h starts its regions), or
    None for a torch built without one."""
    bundled = Path(torch.__file__).parent / "lib"  # what PyPI's wheels ship
    for library in (bundled / name for name in ("libgomp.so.1", "libomp.dylib", "libiomp5.dylib")):
        if library.is_file():
            return library
    maps = Path("/proc/self/maps")  # a Linux torch that links the system's runtime has it loaded by now
    loaded = sorted({Path(line.split()[-1]) for line in maps.read_text().splitlines()}) if maps.exists() else []
    return next((p for p in loaded if p.name.startswith(("libgomp.so", "libomp.so", "libiomp5.so"))), None)


def _isa_flags(compiler: str) -> Tuple[str, list]:
    """Vector instructions for the loops, as far as this CPU and compiler have them (the build is cached
    per set)."""
    machine = platform.machine().lower()
    if machine in ("arm64", "aarch64"):
        tune = "-mcpu=apple-m1" if sys.platform == "darwin" else "-mcpu=native"  # every M-series runs M1 code
        return "neon", [*NEON, *([tune] if _takes(compiler, tune) else [])]
    capability = torch.backends.cpu.get_cpu_capability()  # what ATen's own kernels picked here
    if capability == "AVX512":
        return "avx512", ["-mavx512f", "-mavx512dq", "-mavx512vl", "-mavx2", "-mfma", "-DTINYSPLAT_LANES=16"]
    if capability == "AVX2":
        return "avx2", ["-mavx2", "-mfma"]
    return "generic", []


@functools.lru_cache(maxsize=None)
def available() -> bool:
    """Build (once per source, torch version and instruction set) and load the kernels; False, with one
    warning, when that cannot be done here."""
    if os.environ.get("TINYSPLAT_CPP", "1") == "0":
        return False
    with _LOADING:
        return hasattr(torch.ops.tinysplat_cpu, "rasterize_forward") or _build_and_load()


def _build_and_load() -> bool:
    if sys.platform == "win32":
        warnings.warn(
            "TinySplat uses its slower pure-PyTorch rasterizer: its compiled one needs GCC's or Clang's vector "
            "extensions, which MSVC (PyTorch's compiler on Windows) lacks; TINYSPLAT_CPP=0 silences this",
            stacklevel=3,
        )
        return False
    compiler = _compiler()
    isa, flags = _isa_flags(compiler)
    runtime = _openmp_runtime()
    if runtime is None:
        warnings.warn("TinySplat's compiled kernels run on one thread: this torch has no OpenMP runtime", stacklevel=3)
    # the loops' threads are torch's: link its runtime (found again at load through the rpath on macOS)
    threads = ["-Wl,-rpath," + str(runtime.parent), str(runtime)] if runtime else []
    # cpp_extension rebuilds it when the source changes
    name = f"tinysplat_cpu_{isa}" + ("" if runtime else "_serial")
    # one build per torch installation as this interpreter reaches it: environments that shared a folder
    # would rebuild it in turn, each over a library the other has loaded. Not resolved: the build's flags
    # name torch's folder as reached (its OpenMP runtime, its headers), so a venv that links another's
    # torch (the GPU kit's test) builds with other flags, and in a shared folder each would rebuild it
    # for the other, a process of one waiting on the other's build
    installation = hashlib.sha256(str(Path(torch.__file__).parent).encode()).hexdigest()[:12]
    build_dir = (
        Path.home() / ".cache" / "tinysplat" / "kernels" / f"torch-{torch.__version__}-{installation}"
        / Path(compiler).name / name
    )  # fmt: skip
    try:
        # its import notes that no CUDA runtime exists, which is expected on a CPU
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
        from torch.utils import cpp_extension

        build_dir.mkdir(parents=True, exist_ok=True)
        cpp_extension.load(
            name=name, sources=[str(s) for s in SOURCES], build_directory=str(build_dir), is_python_module=False,
            extra_cflags=[*CFLAGS, *flags, *([] if runtime else ["-DTINYSPLAT_SERIAL"])],
            extra_ldflags=threads, verbose=False,
        )  # fmt: skip
        _built["name"] = name
        return hasattr(torch.ops.tinysplat_cpu, "rasterize_forward")
    except Exception as e:  # no compiler, no ninja, a failed build, a read-only home
        first = str(e).strip().splitlines()[:1] or [type(e).__name__]
        warnings.warn(
            f"TinySplat uses its slower pure-PyTorch rasterizer: the compiled one did not build in {build_dir} "
            f"({first[0][:300]}); a C++ compiler (g++ or clang++) gets it, TINYSPLAT_CPP=0 silences this",
            stacklevel=2,
        )
        return False


def library() -> str:
    """The loaded build's name, e.g. tinysplat_cpu_avx2 or tinysplat_cpu_neon (_serial: on one thread)."""
    ops()  # (raises where the kernels are not available)
    return _built["name"]


def ops():
    if not available():
        raise RuntimeError("TinySplat's compiled CPU kernels are not available here (see the warning above)")
    return torch.ops.tinysplat_cpu
