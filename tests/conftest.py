"""Shared fixtures."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

PLUGINS = Path(__file__).parent / "fixtures" / "plugins"


@pytest.fixture(scope="session")
def plugin_env(tmp_path_factory):
    """An environment in which a third-party package (tests/fixtures/plugins: a strategy and a loss
    term) is installed through pip, as a user would install one."""
    site = tmp_path_factory.mktemp("plugin_site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(site)]
        + [str(PLUGINS)],
        check=True,
        capture_output=True,
    )
    return {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
