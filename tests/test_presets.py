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


def test_config_written_before_an_option_existed_loads_with_its_default():
    import re

    import yaml

    from tinysplat_ns.core.losses.composite import PUBLISHED_3DGS

    config = tinysplat_trainer()
    config.pipeline.model.max_gaussians = 1234
    text = yaml.dump(config)
    # the model's `loss` option and its nested lines, as in a config.yml from before it existed
    older = re.sub(r"\n    loss: .*?(?=\n    \S)", "", text, count=1, flags=re.DOTALL)
    assert "LossConfig" in text and "LossConfig" not in older
    model = yaml.load(older, Loader=yaml.Loader).pipeline.model  # as ns-eval / ns-viewer read it
    assert model.loss.terms == PUBLISHED_3DGS
    assert model.max_gaussians == 1234  # what the file says still wins
