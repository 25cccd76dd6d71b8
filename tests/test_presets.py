"""Every preset in configs/ is an ns-train method, and a preset that names a field that does not
exist fails by file and field."""

from importlib.metadata import entry_points
from pathlib import Path

import pytest

from tinysplat_ns.tinysplat_config import apply_override, preset, tinysplat_trainer

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_every_preset_file_is_a_registered_method_and_back():
    files = {p.stem for p in CONFIGS.glob("*.yml")}
    registered = {e.name for e in entry_points(group="nerfstudio.method_configs") if e.value.startswith("tinysplat_ns")}
    assert registered == files | {"tinysplat"}
    for name in files:
        spec = preset(name)
        assert spec.config.method_name == name and spec.description


def test_unknown_field_names_the_file():
    with pytest.raises(ValueError, match=r"configs/x.yml: pipeline.model.no_such_field is not a field"):
        apply_override(tinysplat_trainer(), "pipeline.model.no_such_field", 1, "configs/x.yml")
