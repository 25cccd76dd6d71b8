"""Reads the bundled real scene without Nerfstudio, so core tests run wherever torch does."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def scene_dir(name: str = "tumbler") -> Path:
    path = Path(os.environ.get("TINYSPLAT_DATA", SHARED_DATA)) / name
    if not path.is_dir():
        message = f"real scene not found at {path}: the tests read ../shared/data beside the project"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def load_cameras(path: Path, scale: float = 1.0):
    """All frames of transforms.json: world-to-camera [C, 4, 4] (OpenCV axes), K [C, 3, 3], (w, h)."""
    meta = json.loads((path / "transforms.json").read_text())
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
    from plyfile import PlyData

    vertex = PlyData.read(str(path / "sparse_pc.ply"))["vertex"]
    xyz = np.stack([vertex["x"], vertex["y"], vertex["z"]], axis=1)
    rgb = np.stack([vertex["red"], vertex["green"], vertex["blue"]], axis=1) / 255.0
    return torch.tensor(xyz, dtype=torch.float64), torch.tensor(rgb, dtype=torch.float64)
