"""Where the tests find the bundled real scene; CI fails rather than skips without it."""

import os
from pathlib import Path

import pytest

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
