"""Shared set-up of the benchmarks: Gaussians and a camera from the real scene."""

import math
import os
import time
from pathlib import Path
from statistics import median

import torch

from tinysplat_ns.core.scene import load_cameras, load_points


def scene_dir() -> Path:
    """The bundled real scene: ../shared/data/tumbler beside the project, or $TINYSPLAT_DATA/tumbler."""
    root = Path(os.environ.get("TINYSPLAT_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    if not (root / "tumbler").is_dir():
        raise SystemExit(f"error: {root / 'tumbler'}: scene not found; set TINYSPLAT_DATA to the data folder")
    return root / "tumbler"


def scene_gaussians(n: int, seed: int = 0):
    """`n` Gaussians spread around the scene's SfM points (resampled with a jitter of about one
    neighbour spacing), sized by their 3 nearest neighbours, as a freshly initialised splat of that
    size; degree-3 SH with the points' colours."""
    from sklearn.neighbors import NearestNeighbors

    gen = torch.Generator().manual_seed(seed)
    xyz, rgb = load_points(scene_dir())
    pick = torch.randint(0, len(xyz), (n,), generator=gen)
    spacing = torch.tensor(NearestNeighbors(n_neighbors=2).fit(xyz.numpy()).kneighbors(xyz.numpy())[0][:, 1])
    xyz = (xyz[pick] + spacing[pick, None] * torch.randn(n, 3, generator=gen, dtype=torch.float64)).float()
    dist = NearestNeighbors(n_neighbors=4).fit(xyz.numpy()).kneighbors(xyz.numpy())[0][:, 1:]
    log_scales = torch.log(torch.tensor(dist.mean(1)).float().clamp(min=1e-7))[:, None].repeat(1, 3)
    sh = torch.zeros(n, 16, 3)
    sh[:, 0] = (rgb[pick].float() - 0.5) / 0.28209479177387814
    return {
        "means": xyz,
        "quats": torch.randn(n, 4, generator=gen),
        "scales": log_scales.exp(),
        "opacities": torch.full((n,), 0.5),
        "sh": sh,
    }


def scene_camera(index: int = 0):
    """A real camera of the scene at full size (300x400): world-to-camera [1, 4, 4], K [1, 3, 3], W, H."""
    viewmats, Ks, sizes, _ = load_cameras(scene_dir())
    width, height = sizes[index]
    return viewmats[index : index + 1].float(), Ks[index : index + 1].float(), width, height


def timed(fn, repeat: int = 5, warmup: int = 1) -> float:
    """Median wall time of `fn()` in seconds, after `warmup` untimed calls (compilation, caches)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return median(times)


def psnr(a, b) -> float:
    """PSNR in dB of two images in [0, 1] (clamped first)."""
    mse = float(((a.clamp(0, 1) - b.clamp(0, 1)) ** 2).mean())
    return math.inf if mse == 0 else -10 * math.log10(mse)


def method_trainer(method: str, data: Path, parser: str, out: Path, overrides=(), load_dir=None):
    """Nerfstudio's Trainer of `method` (tinysplat or a preset) on `data` read by the dataparser
    `parser` (ns-train's subcommand name), set up to train in this process; `overrides` are
    "dotted.path=value" items (YAML values) on its config; `load_dir`: resume a run's checkpoint."""
    import copy

    import yaml
    from nerfstudio.configs.dataparser_configs import dataparsers
    from nerfstudio.plugins.registry import discover_methods

    from tinysplat_ns.tinysplat_config import apply_override

    config = copy.deepcopy(discover_methods()[0][method])
    config.pipeline.datamanager.dataparser = dataparsers[parser]
    config.pipeline.datamanager.data = data
    config.vis = "tensorboard"
    config.output_dir = out
    config.load_dir = load_dir
    for item in overrides:
        path, value = item.split("=", 1)
        apply_override(config, path, yaml.safe_load(value), "--set")
    config.set_timestamp()
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    return trainer


def lego_dir() -> Path:
    """NeRF-Synthetic lego beside the bundled scene."""
    return scene_dir().parent / "nerf_synthetic" / "lego"
