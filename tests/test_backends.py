"""The rasterizer each switch picks (README, "Using it"): `--pipeline.model.backend torch|cpp|auto`,
`TINYSPLAT_CPP=0` (no compiled kernels, not even a build attempt) and `TINYSPLAT_COMPILE=0` (the
PyTorch rasterizer's per-tile kernels without torch.compile), each seen by which functions ran, and
all of them drawing the same picture with the same gradients. And torch.compile itself: really used
here (a silent fallback to eager would fail), and a failed compile said in one warning line, with the
same picture after it. The env switches are read once per process, so those run in a child."""

import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).resolve().parent
# cpp against torch (its projection and SH too), on the Gaussians below: measured 1.6e-6 (image) and
# 4.3e-6 (gradients, relative to the largest); eager against compiled torch: 1.2e-7 and 1e-6
IMAGE_TOL = 1e-5
GRAD_TOL = 3e-5


WIDTH, HEIGHT, FOCAL = 96, 72, 60.0


def gaussians(n: int = 600):
    """A blob of anisotropic Gaussians with SH degree 1 colours 3 units in front of the camera."""
    gen = torch.Generator().manual_seed(0)
    return {
        "means": torch.randn(n, 3, generator=gen) * 0.3 + torch.tensor([0.0, 0.0, 3.0]),
        "quats": torch.randn(n, 4, generator=gen),
        "scales": 0.04 * torch.exp(0.5 * torch.randn(n, 3, generator=gen)),
        "opacities": 0.05 + 0.9 * torch.rand(n, generator=gen),
        "colors": 0.5 * torch.randn(n, 4, 3, generator=gen),
    }


def intrinsics():
    return torch.tensor([[[FOCAL, 0, WIDTH / 2], [0, FOCAL, HEIGHT / 2], [0, 0, 1]]])


def render(backend: str = "auto"):
    """The image [H, W, 3] and the gradients of a weighted sum of it by `gaussians()`."""
    from tinysplat_ns.core.rasterization import rasterization

    params = {name: value.requires_grad_() for name, value in gaussians().items()}
    image, alpha, _ = rasterization(
        params["means"], params["quats"], params["scales"], params["opacities"], params["colors"], torch.eye(4)[None],
        intrinsics(), WIDTH, HEIGHT, sh_degree=1, backend=backend,
    )  # fmt: skip
    assert 0.1 < float(alpha.mean()) < 0.9  # something drawn, and edges
    weights = torch.rand(image.shape, generator=torch.Generator().manual_seed(1))
    ((image * weights).sum() + alpha.sum()).backward()
    return image[0].detach(), {name: p.grad for name, p in params.items()}


def assert_same_render(ours, reference):
    assert (ours[0] - reference[0]).abs().max() < IMAGE_TOL
    for name, grad in reference[1].items():
        err = (ours[1][name] - grad).abs().max() / grad.abs().max()
        assert err < GRAD_TOL, f"gradient of {name}: relative error {err:.3g}"


@contextmanager
def rasterizers_called():
    """The names of the rasterizers whose per-camera function ran inside the block: "torch"
    (rasterize_torch), "cpp" (the compiled kernels)."""
    from tinysplat_ns.core import rasterize_torch
    from tinysplat_ns.core.kernels import rasterize as compiled

    called = []
    originals = {module: module.rasterize_to_pixels for module in (rasterize_torch, compiled)}

    def spy(name, original):
        def rasterize_to_pixels(*args, **kwargs):
            called.append(name)
            return original(*args, **kwargs)

        return rasterize_to_pixels

    try:
        for module, name in ((rasterize_torch, "torch"), (compiled, "cpp")):
            module.rasterize_to_pixels = spy(name, originals[module])
        yield called
    finally:
        for module, original in originals.items():
            module.rasterize_to_pixels = original


def compiled_regions(fn) -> int:
    """How many torch.compile'd regions ran during `fn()` (the profiler's record of them)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return sum(event.name.startswith("Torch-Compiled Region") for event in prof.events())


def test_backend_option_picks_the_rasterizer_and_all_draw_the_same():
    """`--pipeline.model.backend` as ns-train parses it, through the model: torch runs the PyTorch
    rasterizer, cpp the compiled one, auto (the default) the compiled one on a CPU."""
    import copy

    import tyro
    from nerfstudio.cameras.cameras import Cameras
    from nerfstudio.data.scene_box import SceneBox
    from nerfstudio.plugins.registry import discover_methods

    preset = discover_methods()[0]["tinysplat-cpu"]
    g = gaussians()
    camera = Cameras(
        camera_to_worlds=torch.tensor([[[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]]),
        fx=FOCAL, fy=FOCAL, cx=WIDTH / 2, cy=HEIGHT / 2, width=WIDTH, height=HEIGHT,
    )  # fmt: skip
    renders = {}
    for flag, expected in (("cpp", "cpp"), ("torch", "torch"), (None, "cpp")):
        args = ["--pipeline.model.backend", flag] if flag else []
        config = tyro.cli(type(preset), default=copy.deepcopy(preset), args=args)
        assert config.pipeline.model.backend == (flag or "auto")
        # in front of the camera (OpenGL axes: it looks down -z)
        points = g["means"] * torch.tensor([1.0, -1.0, -1.0])
        colors = 255 * torch.rand(len(points), 3, generator=torch.Generator().manual_seed(2))
        model = config.pipeline.model.setup(
            scene_box=SceneBox(torch.tensor([[-1.0] * 3, [1.0] * 3])), num_train_data=1, metadata={},
            seed_points=(points, colors),
        )  # fmt: skip
        with torch.no_grad():  # the same Gaussians for every backend (the model draws random rotations)
            model.gauss_params["quats"].copy_(g["quats"])
            model.gauss_params["scales"].copy_(g["scales"].log())
            model.gauss_params["opacities"].copy_(torch.logit(g["opacities"])[:, None])
        model.eval()  # full size, a fixed background
        with rasterizers_called() as called:
            outputs = model.get_outputs(camera)
            outputs["rgb"].sum().backward()
        assert set(called) == {expected}, (flag, called)
        assert 0.1 < float(outputs["accumulation"].mean()) < 0.9
        renders[flag] = (outputs["rgb"].detach(), {n: p.grad for n, p in model.gauss_params.items() if p.grad.any()})
    assert_same_render(renders["torch"], renders["cpp"])
    assert_same_render(renders[None], renders["cpp"])


def test_cpp_backend_insists_on_the_compiled_rasterizer(monkeypatch):
    """Where the compiled kernels are not available, `cpp` stops with what to do, rather than quietly
    running the PyTorch rasterizer as `auto` does."""
    from tinysplat_ns.core.kernels import build

    monkeypatch.setattr(build, "available", lambda: False)
    with rasterizers_called() as called:
        assert render("auto")[0].shape == (HEIGHT, WIDTH, 3) and called == ["torch"]
        with pytest.raises(ValueError, match=r"needs its build to work .*use backend='torch'"):
            render("cpp")
        assert called == ["torch"]


def test_ns_train_with_the_cpp_backend_stops_in_one_line_where_it_is_not_built(monkeypatch, tmp_path):
    """`--pipeline.model.backend cpp` without the compiled kernels: ns-train's model stops before
    training with one line saying what to pass instead (not a traceback at the first render)."""
    from scene import scene_dir
    from training import build_trainer

    from tinysplat_ns.core.kernels import build

    monkeypatch.setattr(build, "available", lambda: False)
    with pytest.raises(SystemExit) as stopped:
        build_trainer(scene_dir(), tmp_path, pipeline__model__backend="cpp")
    message = str(stopped.value)
    assert message.startswith("error: --pipeline.model.backend cpp:") and "\n" not in message
    assert "use --pipeline.model.backend auto or torch" in message


def test_torch_compile_is_used_here():
    """The PyTorch rasterizer's per-tile kernels run compiled in this environment, forward and backward:
    a compile that failed (and fell back to eager, with a warning) fails this test."""
    import warnings

    from tinysplat_ns.core import rasterize_torch

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours = render("torch")  # compiles here, or loads the compiled kernels
    assert not [str(w.message) for w in caught if "TinySplat" in str(w.message)]
    assert rasterize_torch._wave_forward.compiled is not None and rasterize_torch._rows_backward.compiled is not None
    assert_same_render(ours, render("cpp"))

    from tinysplat_ns.core.rasterization import rasterization

    params = {name: value.requires_grad_() for name, value in gaussians().items()}
    out = []

    def forward():
        camera = (torch.eye(4)[None], intrinsics(), WIDTH, HEIGHT)
        out.append(rasterization(*params.values(), *camera, sh_degree=1, backend="torch")[0])

    assert compiled_regions(forward) > 0
    assert compiled_regions(lambda: out[0].sum().backward()) > 0


CHILD = """
import json, sys, warnings, torch
sys.path.insert(0, {tests!r})
from test_backends import rasterizers_called, render
from tinysplat_ns.core import rasterize_torch
from tinysplat_ns.core.kernels import build
shown = []  # the warnings a user sees (Python's default filters), as printed to stderr
show = warnings.showwarning
warnings.showwarning = lambda message, *args, **kwargs: (shown.append(str(message)), show(message, *args, **kwargs))
with rasterizers_called() as called:
    image, grads = render({backend!r})
torch.save((image, grads), {out!r})
print(json.dumps({{
    "called": sorted(set(called)),
    "cpp_available": build.available(),
    "cpp_loaded": hasattr(torch.ops.tinysplat_cpu, "rasterize_forward"),
    "compiled": [k.compiled is not None for k in (rasterize_torch._wave_forward, rasterize_torch._rows_backward)],
    "warnings": [message for message in shown if "TinySplat" in message],
}}))
"""


def run_child(tmp_path: Path, backend: str, **env):
    """render(backend) in a new process with `env`: (what it reports, its render, its stderr)."""
    out = tmp_path / "render.pt"
    script = CHILD.format(tests=str(TESTS), backend=backend, out=str(out))
    done = subprocess.run(
        [sys.executable, "-c", script], env={**os.environ, **env}, capture_output=True, text=True, timeout=300,
        cwd=TESTS.parent,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), torch.load(out), done.stderr


def test_env_switches_skip_the_compiled_kernels_and_torch_compile(tmp_path):
    """TINYSPLAT_CPP=0: the default backend runs the PyTorch rasterizer, without building (a fresh
    HOME: nothing cached), loading or warning; TINYSPLAT_COMPILE=0: its kernels run eagerly. The same
    picture and gradients as the compiled kernels'."""
    report, ours, _ = run_child(tmp_path, "auto", TINYSPLAT_CPP="0", TINYSPLAT_COMPILE="0", HOME=str(tmp_path))
    assert report == {
        "called": ["torch"], "cpp_available": False, "cpp_loaded": False, "compiled": [False, False], "warnings": [],
    }  # fmt: skip
    assert not (tmp_path / ".cache" / "tinysplat").exists()  # no build was attempted
    assert_same_render(ours, render("cpp"))


def test_a_failed_torch_compile_warns_in_one_line_and_draws_the_same(tmp_path):
    """Inductor without a working C++ compiler (CXX=/bin/false, an empty compile cache): one warning
    line for both kernels, then the eager kernels' picture and gradients, those of the compiled ones."""
    report, ours, stderr = run_child(
        tmp_path, "torch", CXX="/bin/false", TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "inductor"), TINYSPLAT_CPP="0"
    )
    assert report["called"] == ["torch"] and report["compiled"] == [False, False]
    [warning] = report["warnings"]
    assert warning.startswith("TinySplat rasterizes eagerly (slower): torch.compile failed") and "\n" not in warning
    assert "C++ compiler" in warning  # what failed
    printed = [line for line in stderr.splitlines() if "TinySplat" in line]
    assert len(printed) == 1 and printed[0].endswith(warning), stderr[-3000:]
    assert_same_render(ours, render("torch"))
