"""A side that is a splat file from any trainer (Inria's, gsplat's, Brush's or OpenSplat's .ply,
SuperSplat's compressed .ply, .spz, SOG): read by TinySplat's readers and drawn by its rasterizer
(gsplat's kernels on CUDA, the compiled CPU one elsewhere), over the reference's background."""

import time
from dataclasses import dataclass
from pathlib import Path
from typing import List

import torch
from nerfstudio.cameras.cameras import Cameras
from torch import Tensor

from tinysplat_ns.compare.frames import Reference, SplatFrame, placed
from tinysplat_ns.compare.inputs import SplatFile
from tinysplat_ns.core.ply import Gaussians, sh_degree_of
from tinysplat_ns.core.rasterization import rasterization


@dataclass
class SplatSide:
    path: Path
    file_format: str
    gaussians: Gaussians  # in the reference's coordinates
    background: Tensor  # [3]
    device: torch.device
    name: str = ""
    pixels_per_second: float = 0.0

    @property
    def title(self) -> str:
        return self.path.name

    @property
    def details(self) -> List[str]:
        return [f"{self.file_format} file", f"{len(self.gaussians['means']):,} Gaussians"]

    def render(self, camera: Cameras) -> Tensor:
        """[H, W, 3] colours in 0..1 on the CPU of one camera posed in the reference coordinates."""
        from tinysplat_ns.tinysplat_model import viewmats_from_c2w

        g = self.gaussians
        width, height = int(camera.width.item()), int(camera.height.item())
        colors = torch.cat([g["features_dc"][:, None, :], g["features_rest"]], dim=1)
        with torch.no_grad():
            start = time.perf_counter()
            render, alpha, _ = rasterization(
                g["means"], g["quats"], torch.exp(g["scales"]), torch.sigmoid(g["opacities"]).squeeze(-1), colors,
                viewmats_from_c2w(camera.camera_to_worlds.float()).to(self.device),
                camera.get_intrinsics_matrices().float().to(self.device), width, height, sh_degree=sh_degree_of(g),
            )  # fmt: skip
            rgb = (render[0] + (1 - alpha[0]) * self.background.to(self.device)).clamp(0, 1).cpu()
            self.pixels_per_second = width * height / max(time.perf_counter() - start, 1e-6)
        return rgb


def load_splat(file: SplatFile, frame: SplatFrame, reference: Reference, device: torch.device) -> SplatSide:
    """The file's Gaussians, placed in the reference's coordinates."""
    moved = {k: v.float().to(device) for k, v in placed(file.gaussians, frame, reference).items()}
    return SplatSide(file.path, file.file_format, moved, reference.background, device)
