"""The `tinysplat` method for `ns-train` and its presets, each registered through the
`nerfstudio.method_configs` entry point (see pyproject.toml).

A preset is a YAML file in `configs/` (installed as `tinysplat_ns.presets`): a description and the
fields it changes on the `tinysplat` config, as dotted paths; each is the `ns-train` flag of the same
path (`pipeline.model.max_gaussians` is `--pipeline.model.max-gaussians`).
"""

import dataclasses
from importlib import resources

import torch
import yaml

from nerfstudio.configs.base_config import MachineConfig, ViewerConfig
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig
from nerfstudio.plugins.types import MethodSpecification

from tinysplat_ns import nerfstudio_startup
from tinysplat_ns.data import CheckedDatamanagerConfig
from tinysplat_ns.openmp import restart_ns_train_spinning_briefly
from tinysplat_ns.schedulers import FloatExponentialDecaySchedulerConfig
from tinysplat_ns.tinysplat_model import TinySplatModelConfig
from tinysplat_ns.trainer import TinySplatTrainerConfig

# Nerfstudio loads this module (its method discovery) before it parses the command line or trains
restart_ns_train_spinning_briefly()
nerfstudio_startup.skip_stack_inspection()


@dataclasses.dataclass
class FusedAdamOptimizerConfig(AdamOptimizerConfig):
    """Adam as PyTorch's fused kernel, one pass over each tensor, instead of Nerfstudio's default (on a
    CPU, a loop of whole-tensor ops): a lego step's optimizer 15.8 -> 7.2 ms at 100k Gaussians on 2
    cores; the same update (tests/test_strategies.py)."""

    fused: bool = True


def adam(lr: float) -> AdamOptimizerConfig:
    return FusedAdamOptimizerConfig(lr=lr, eps=1e-15)


def tinysplat_trainer(max_steps: int = 30000) -> TinySplatTrainerConfig:
    """3DGS with splatfacto's published schedule; CUDA when there is a GPU, CPU otherwise."""
    return TinySplatTrainerConfig(
        method_name="tinysplat",
        steps_per_eval_image=100,
        steps_per_eval_batch=0,
        steps_per_save=2000,
        steps_per_eval_all_images=1000,
        max_num_iterations=max_steps,
        mixed_precision=False,
        machine=MachineConfig(device_type="cuda" if torch.cuda.is_available() else "cpu"),
        pipeline=VanillaPipelineConfig(
            datamanager=CheckedDatamanagerConfig(
                dataparser=NerfstudioDataParserConfig(load_3D_points=True),
                cache_images_type="uint8",
            ),
            model=TinySplatModelConfig(),
        ),
        optimizers={
            "means": {
                "optimizer": adam(1.6e-4),
                "scheduler": FloatExponentialDecaySchedulerConfig(lr_final=1.6e-6, max_steps=max_steps),
            },
            "features_dc": {"optimizer": adam(0.0025), "scheduler": None},
            "features_rest": {"optimizer": adam(0.0025 / 20), "scheduler": None},
            "opacities": {"optimizer": adam(0.05), "scheduler": None},
            "scales": {"optimizer": adam(0.005), "scheduler": None},
            "quats": {"optimizer": adam(0.001), "scheduler": None},
            "camera_opt": {
                "optimizer": adam(1e-4),
                "scheduler": FloatExponentialDecaySchedulerConfig(
                    lr_final=5e-7, max_steps=max_steps, warmup_steps=1000, lr_pre_warmup=0
                ),
            },
            "bilateral_grid": {
                "optimizer": adam(2e-3),
                "scheduler": FloatExponentialDecaySchedulerConfig(
                    lr_final=1e-4, max_steps=max_steps, warmup_steps=1000, lr_pre_warmup=0
                ),
            },
        },
        viewer=ViewerConfig(num_rays_per_chunk=1 << 15),
        vis="viewer",
    )


tinysplat = MethodSpecification(
    config=tinysplat_trainer(),
    description="Gaussian Splatting on CPU (pure PyTorch rasterizer) or CUDA (gsplat)",
)


def preset(name: str) -> MethodSpecification:
    """The method `name` described by `configs/<name>.yml`."""
    source = f"configs/{name}.yml"
    spec = yaml.safe_load(resources.files("tinysplat_ns.presets").joinpath(f"{name}.yml").read_text())
    overrides = dict(spec.get("overrides") or {})
    config = tinysplat_trainer(max_steps=overrides.get("max_num_iterations", 30000))
    config.method_name = name
    for path, value in overrides.items():
        apply_override(config, path, value, source)
    return MethodSpecification(config=config, description=spec["description"])


def apply_override(config, path: str, value, source: str) -> None:
    *parents, leaf = path.split(".")
    target = config
    for part in parents:
        target = getattr(target, part, None)
    if (
        target is None
        or not dataclasses.is_dataclass(target)
        or leaf not in {f.name for f in dataclasses.fields(target)}
    ):
        raise ValueError(f"{source}: {path} is not a field of the tinysplat config")
    setattr(target, leaf, value)


tinysplat_cpu = preset("tinysplat-cpu")
tinysplat_cpu_mcmc = preset("tinysplat-cpu-mcmc")
tinysplat_cpu_quality = preset("tinysplat-cpu-quality")
tinysplat_mcmc = preset("tinysplat-mcmc")
