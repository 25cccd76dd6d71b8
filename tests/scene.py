"""Where the tests find the bundled real scene (CI fails rather than skips without it), and a small
Blender-format scene they make."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tinysplat_ns.core.scene import load_cameras, load_points  # noqa: F401 (used by the tests)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def scene_dir(name: str = "tumbler") -> Path:
    path = Path(os.environ.get("TINYSPLAT_DATA", SHARED_DATA)) / name
    if not path.is_dir():
        message = f"real scene not found at {path}: the tests read ../shared/data beside the project"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


BLENDER_SIZE = 32


def look_at_origin(position: np.ndarray) -> np.ndarray:
    """Camera-to-world (OpenGL axes: the camera looks down its -z) at `position`, facing the origin."""
    back = position / np.linalg.norm(position)
    right = np.cross([0.0, 0.0, 1.0], back)
    right /= np.linalg.norm(right)
    up = np.cross(back, right)
    pose = np.eye(4)
    pose[:3, :3] = np.stack([right, up, back], axis=1)
    pose[:3, 3] = position
    return pose


def blender_scene(root: Path, views=(6, 2, 2), size: int = BLENDER_SIZE) -> Path:
    """transforms_{train,val,test}.json and RGBA PNGs of `size` pixels a side: a red disc (alpha 1) on
    transparent pixels whose RGB is black, as Blender renders them; cameras on a sphere of radius 4
    around the origin, so the object every view agrees with is a ball."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    disc = (xx - size / 2 + 0.5) ** 2 + (yy - size / 2 + 0.5) ** 2 < (size / 4) ** 2
    image = np.zeros((size, size, 4), np.uint8)
    image[disc] = (200, 30, 30, 255)
    for split, count in zip(("train", "val", "test"), views):
        (root / split).mkdir(parents=True)
        frames = []
        for i in range(count):
            direction = rng.normal(size=3)
            direction[2] = abs(direction[2]) + 0.3  # the upper hemisphere, as NeRF-Synthetic's
            Image.fromarray(image).save(root / split / f"r_{i}.png")
            pose = look_at_origin(4.0 * direction / np.linalg.norm(direction))
            frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": pose.tolist()})
        meta = {"camera_angle_x": 0.69, "frames": frames}
        (root / f"transforms_{split}.json").write_text(json.dumps(meta))
    return root
