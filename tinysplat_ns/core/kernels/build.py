"""Building and loading the compiled kernels: the sources of this folder, one library, built on first
use with PyTorch's extension mechanism (`torch.utils.cpp_extension`, the compiler `torch.compile` needs
too) and cached in ~/.cache/tinysplat/kernels. Where it cannot be built (no compiler, a failed build:
one warning says which) or TINYSPLAT_CPP=0, the PyTorch versions of every kernel are used instead.
"""

import functools
import hashlib
import logging
import os
import threading
import warnings
from pathlib import Path
from typing import Tuple

import torch

SOURCES = [Path(__file__).with_name(f"{name}.cpp") for name in ("rasterize", "project", "ssim")]
_LOADING = threading.Lock()  # the viewer's thread renders beside training: build and load once


def _isa_flags() -> Tuple[str, list]:
    """Vector instructions for the loops, as far as this CPU has them (the build is cached per set)."""
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
    isa, flags = _isa_flags()
    name = f"tinysplat_cpu_{isa}"  # cpp_extension rebuilds it when the source changes
    # one build per torch installation: environments that shared a folder would rebuild it in turn,
    # each over a library the other has loaded
    installation = hashlib.sha256(str(Path(torch.__file__).resolve().parent).encode()).hexdigest()[:12]
    build_dir = Path.home() / ".cache" / "tinysplat" / "kernels" / f"torch-{torch.__version__}-{installation}" / name
    try:
        # its import notes that no CUDA runtime exists, which is expected on a CPU
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
        from torch.utils import cpp_extension

        build_dir.mkdir(parents=True, exist_ok=True)
        cpp_extension.load(
            name=name, sources=[str(s) for s in SOURCES], build_directory=str(build_dir), is_python_module=False,
            # without errno or floating-point traps to keep, GCC vectorises branch-free scalar loops
            # that take square roots and divisions (the tile plan's rectangles); no result changes
            extra_cflags=["-O3", "-fopenmp", "-Wno-psabi", "-fno-math-errno", "-fno-trapping-math", *flags],
            extra_ldflags=["-fopenmp"], verbose=False,
        )  # fmt: skip
        return hasattr(torch.ops.tinysplat_cpu, "rasterize_forward")
    except Exception as e:  # no compiler, no ninja, a failed build, a read-only home
        first = str(e).strip().splitlines()[:1] or [type(e).__name__]
        warnings.warn(
            f"TinySplat uses its slower pure-PyTorch rasterizer: the compiled one did not build in {build_dir} "
            f"({first[0][:300]}); a C++ compiler (g++ or clang++) gets it, TINYSPLAT_CPP=0 silences this",
            stacklevel=2,
        )
        return False


def ops():
    if not available():
        raise RuntimeError("TinySplat's compiled CPU kernels are not available here (see the warning above)")
    return torch.ops.tinysplat_cpu
