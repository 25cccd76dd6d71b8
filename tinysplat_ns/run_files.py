"""A trained run's files read without building its pipeline: the config.yml as plain data and the
Gaussians of its latest checkpoint. Nerfstudio's `eval_setup` would import Nerfstudio, parse the
dataset and initialise a model before loading the checkpoint (about 10 s at any size); this takes
what an export needs, and works on a run folder that was moved."""

import re
import sys
from pathlib import Path
from typing import Any, Dict, Tuple

import numpy as np
import torch
import yaml

from tinysplat_ns.core.frames import Similarity, read_dataparser_transform
from tinysplat_ns.core.ply import PARAMETERS, Gaussians
from tinysplat_ns.core.sh import rgb_to_sh


class _PlainLoader(yaml.SafeLoader):
    """config.yml's Python objects as dicts, its paths as Paths, nothing imported or constructed."""


def _construct_python(loader: _PlainLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        items = loader.construct_sequence(node, deep=True)
        return Path(*items) if suffix.startswith("object/apply:pathlib.") else items
    return loader.construct_scalar(node)


_PlainLoader.add_multi_constructor("tag:yaml.org,2002:python/", _construct_python)


def read_config(config_path: Path) -> Dict[str, Any]:
    if not Path(config_path).is_file():
        sys.exit(f"error: {config_path}: no such file; pass the config.yml of a run (outputs/.../config.yml)")
    try:
        config = yaml.load(Path(config_path).read_text(), Loader=_PlainLoader)
    except OSError as e:
        sys.exit(f"error: {config_path}: cannot be read ({e.strerror}); pass the config.yml of a run")
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        sys.exit(f"error: {config_path}: not a Nerfstudio run config ({type(e).__name__}); pass outputs/.../config.yml")
    if not isinstance(config, dict) or not isinstance(config.get("pipeline"), dict):
        sys.exit(f"error: {config_path}: not a Nerfstudio run config; pass outputs/.../config.yml")
    return config


def latest_checkpoint(config_path: Path, config: Dict[str, Any]) -> Path:
    """The newest step-*.ckpt beside the config (the run folder as it is now), or where the config
    says the run wrote them."""
    relative = Path(config.get("relative_model_dir") or "nerfstudio_models")
    folders = [Path(config_path).parent / relative]
    if config.get("output_dir") is not None:
        recorded = Path(config["output_dir"]) / str(config.get("experiment_name")) / str(config.get("method_name"))
        folders.append(recorded / str(config.get("timestamp")) / relative)
    for folder in folders:
        steps = {
            int(m.group(1)): p for p in folder.glob("step-*.ckpt") if (m := re.fullmatch(r"step-(\d+)\.ckpt", p.name))
        }
        if steps:
            return steps[max(steps)]
    sys.exit(f"error: {folders[0]}: no checkpoint (step-*.ckpt); train the run first or pass its own config.yml")


def check_run(config_path: Path) -> Tuple[Dict[str, Any], Path]:
    """A run's config.yml (as plain data) and latest checkpoint, with one-line errors for what a user
    can get wrong (no checkpoint, its dataset moved, and read_config's), before anything as slow as
    Nerfstudio loads it."""
    config = read_config(config_path)
    checkpoint = latest_checkpoint(config_path, config)
    data = config["pipeline"].get("datamanager", {}).get("data") or config.get("data")
    if data is not None and not Path(data).exists():
        sys.exit(
            f"error: {config_path}: its dataset {data} is not there; run from the folder ns-train ran in "
            "(the path is relative to it) or restore the data"
        )
    return config, checkpoint


def numpy_scalars_allowed():
    """A context in which `torch.load(weights_only=True)` accepts numpy scalars: Nerfstudio's
    schedulers leave numpy floats in the optimizer state of other methods' checkpoints."""
    return torch.serialization.safe_globals([np.core.multiarray.scalar, np.dtype, type(np.dtype(np.float64))])


def load_gaussians(config_path: Path) -> Tuple[Gaussians, int]:
    """The Gaussians of a TinySplat or splatfacto run's latest checkpoint, as a 3DGS .ply holds
    them (degree-0 colours, which the models keep behind a sigmoid, as SH coefficients), and the step."""
    config = read_config(config_path)
    checkpoint = latest_checkpoint(config_path, config)
    try:
        with numpy_scalars_allowed():
            state = torch.load(checkpoint, map_location="cpu", mmap=True, weights_only=True)
    except Exception as e:
        sys.exit(f"error: {checkpoint}: cannot be loaded ({type(e).__name__}); the file is damaged or not a checkpoint")
    pipeline = state.get("pipeline", {})
    prefix = next((k[: -len("means")] for k in pipeline if k.endswith("gauss_params.means")), None)
    if prefix is None:
        method = config.get("method_name")
        sys.exit(f"error: {config_path}: a {method} run has no Gaussians; pass a tinysplat or splatfacto run")
    gaussians = {name: pipeline[prefix + name].float() for name in PARAMETERS}
    if gaussians["features_rest"].shape[1] == 0:  # SH degree 0
        gaussians["features_dc"] = rgb_to_sh(torch.sigmoid(gaussians["features_dc"]))
    return gaussians, int(state.get("step", 0))


def dataparser_transform(config_path: Path) -> Similarity:
    """The run's dataset coordinates -> run coordinates, which Nerfstudio saves beside config.yml."""
    path = Path(config_path).parent / "dataparser_transforms.json"
    try:
        return read_dataparser_transform(path)
    except (OSError, ValueError, KeyError, TypeError) as e:
        sys.exit(f"error: {path}: cannot be read ({type(e).__name__}); it is written by ns-train beside config.yml")
