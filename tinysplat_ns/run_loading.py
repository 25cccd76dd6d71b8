"""Load a trained run from its config.yml for the tools that read runs, with one-line errors."""

import sys
from pathlib import Path
from typing import Tuple

import yaml


def load_pipeline(config_path: Path) -> Tuple[object, object]:
    """-> (the run's TrainerConfig, its pipeline in inference mode with the last checkpoint)."""
    from nerfstudio.configs.base_config import InstantiateConfig
    from nerfstudio.utils.eval_utils import eval_setup

    try:
        config = yaml.load(Path(config_path).read_text(), Loader=yaml.Loader)
    except OSError as e:
        sys.exit(f"error: {config_path}: cannot be read ({e.strerror}); pass the config.yml of a run")
    except yaml.YAMLError as e:
        sys.exit(f"error: {config_path}: not a Nerfstudio run config ({type(e).__name__}); pass outputs/.../config.yml")
    if not isinstance(config, InstantiateConfig) or not hasattr(config, "pipeline"):
        sys.exit(f"error: {config_path}: not a Nerfstudio run config; pass outputs/.../config.yml")
    config, pipeline, _, _ = eval_setup(Path(config_path), test_mode="inference")
    return config, pipeline


def load_splat_model(config_path: Path):
    """The Gaussian model of a TinySplat or splatfacto run."""
    from nerfstudio.models.splatfacto import SplatfactoModel

    config, pipeline = load_pipeline(config_path)
    if not isinstance(pipeline.model, SplatfactoModel):
        sys.exit(
            f"error: {config_path}: a {config.method_name} run has no Gaussians; pass a tinysplat or splatfacto run"
        )
    return pipeline.model
