"""Read a scene in the Nerfstudio-data layout (transforms.json + sparse_pc.ply) without Nerfstudio:
for checks and benchmarks that run on torch alone (the GPU machine has no Nerfstudio)."""

import json
from pathlib import Path

import numpy as np
import torch


def load_cameras(path: Path, scale: float = 1.0):
    """All frames of transforms.json: world-to-camera [C, 4, 4] (OpenCV axes), K [C, 3, 3], (w, h)
    per frame and the image paths, intrinsics and sizes scaled by `scale`. Poses as stored (no
    Nerfstudio re-centring or scaling)."""
    meta = json.loads((Path(path) / "transforms.json").read_text())
    viewmats, Ks, sizes, names = [], [], [], []
    for frame in meta["frames"]:
        c2w = np.array(frame["transform_matrix"], dtype=np.float64)
        c2w[:3, 1:3] *= -1  # OpenGL -> OpenCV camera axes
        viewmats.append(np.linalg.inv(c2w))
        K = np.array([[frame["fl_x"], 0, frame["cx"]], [0, frame["fl_y"], frame["cy"]], [0, 0, 1]])
        K[:2] *= scale
        Ks.append(K)
        sizes.append((round(frame["w"] * scale), round(frame["h"] * scale)))
        names.append(frame["file_path"])
    return torch.tensor(np.stack(viewmats)), torch.tensor(np.stack(Ks)), sizes, names


def load_points(path: Path):
    """The SfM points of sparse_pc.ply: positions [N, 3] and colours [N, 3] in [0, 1], float64."""
    from plyfile import PlyData

    vertex = PlyData.read(str(Path(path) / "sparse_pc.ply"))["vertex"]
    xyz = np.stack([vertex["x"], vertex["y"], vertex["z"]], axis=1)
    rgb = np.stack([vertex["red"], vertex["green"], vertex["blue"]], axis=1) / 255.0
    return torch.tensor(xyz, dtype=torch.float64), torch.tensor(rgb, dtype=torch.float64)
