"""Every preset in configs/ is an ns-train method that trains as README's "Presets" table and the
file's header say (steps, resolution schedule, strategy, cap, device), and a preset that names a field
that does not exist fails by file and field."""

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


# What README's "Presets" table and each configs/*.yml's header comment promise, written out here (not
# read from the files): steps, the training resolution's divisor from each step on, the strategy and
# its refinement window, the cap on Gaussians, the device.
CPU_PRESETS = {
    "tinysplat-cpu": dict(
        steps=3000, downscale={0: 2, 999: 2, 1000: 1, 2999: 1}, strategy="adc", refine=(500, 2500), cap=30_000
    ),
    "tinysplat-cpu-mcmc": dict(  # its header: tinysplat-cpu's schedule, refinements from 500 to 2500
        steps=3000, downscale={0: 2, 999: 2, 1000: 1, 2999: 1}, strategy="mcmc", refine=(500, 2500), cap=30_000
    ),
    "tinysplat-cpu-quality": dict(
        steps=14_000, downscale={0: 4, 2499: 4, 2500: 2, 4999: 2, 5000: 1, 13_999: 1}, strategy="adc",
        refine=(None, 7000), cap=250_000,
    ),  # fmt: skip
}


def registered_methods():
    """The methods as ns-train finds them: Nerfstudio's discovery of the installed entry points."""
    from nerfstudio.plugins.registry import discover_methods

    return discover_methods()[0]


def model_of(config, n_points=200):
    """The preset's model, built as ns-train builds it, on `n_points` SfM points."""
    import torch
    from nerfstudio.data.scene_box import SceneBox

    gen = torch.Generator().manual_seed(0)
    points = (torch.randn(n_points, 3, generator=gen) * 0.3, torch.randint(0, 256, (n_points, 3), generator=gen))
    box = SceneBox(torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))
    return config.pipeline.model.setup(scene_box=box, num_train_data=1, metadata={}, seed_points=points)


def means_lr_factor(config, step: int) -> float:
    """The means' learning rate at `step`, as a fraction of its starting value."""
    import torch

    lr = config.optimizers["means"]["optimizer"].lr
    optimizer = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=lr)
    return config.optimizers["means"]["scheduler"].setup().get_scheduler(optimizer, lr).lr_lambdas[0](step)


@pytest.mark.parametrize("name", sorted(CPU_PRESETS))
def test_cpu_preset_trains_as_the_readme_says(name):
    import torch
    from nerfstudio.cameras.cameras import Cameras

    want = CPU_PRESETS[name]
    config = registered_methods()[name]
    assert config.machine.device_type == "cpu"
    assert config.max_num_iterations == want["steps"]
    # the means' learning rate decays over exactly the preset's steps (100x down, 10x at half way)
    assert means_lr_factor(config, want["steps"]) == pytest.approx(0.01, rel=1e-6)
    assert means_lr_factor(config, want["steps"] // 2) == pytest.approx(0.1, rel=1e-6)

    model = model_of(config)
    assert len(model.means) == 200  # from the SfM points
    assert config.pipeline.model.strategy == want["strategy"]
    start, stop = want["refine"]
    assert model.strategy.refine_stop_iter == stop
    if start is not None:
        assert model.strategy.refine_start_iter == start
    assert model.config.max_gaussians == want["cap"]  # what the model enforces after every step
    if want["strategy"] == "mcmc":
        assert model.strategy.cap == want["cap"]  # what MCMC grows to

    # the training render's size as the steps go by (a 160x120 camera)
    model.train()
    model.optimizers = None
    camera = Cameras(
        camera_to_worlds=torch.tensor([[[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 3]]]),
        fx=100.0, fy=100.0, cx=80.0, cy=60.0, width=160, height=120,
    )  # fmt: skip
    for step, divisor in want["downscale"].items():
        model.step = step
        rgb = model.get_outputs(camera)["rgb"]
        assert tuple(rgb.shape[:2]) == (120 // divisor, 160 // divisor), (step, tuple(rgb.shape))


def test_cpu_quality_preset_skips_the_all_views_evaluation():
    """Its header: no evaluation of every test view while training (`ns-eval` scores the run)."""
    assert registered_methods()["tinysplat-cpu-quality"].steps_per_eval_all_images == 0


def test_tinysplat_mcmc_is_tinysplat_with_mcmc():
    """README: `tinysplat`'s recipe (30k steps, CUDA when there is a GPU) with 3DGS-MCMC, at the paper's
    defaults (up to 1M Gaussians): every other field is tinysplat's."""
    import copy

    import torch

    methods = registered_methods()
    base, mcmc = methods["tinysplat"], methods["tinysplat-mcmc"]
    assert base.max_num_iterations == 30_000 and base.pipeline.model.strategy == "adc"
    assert base.machine.device_type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert means_lr_factor(mcmc, 30_000) == pytest.approx(0.01, rel=1e-6)
    assert mcmc.pipeline.model.strategy == "mcmc"
    strategy = model_of(mcmc).strategy
    assert strategy.cap == 1_000_000 and strategy.refine_start_iter == 500
    expected = copy.deepcopy(base)
    expected.method_name, expected.pipeline.model.strategy = "tinysplat-mcmc", "mcmc"
    assert mcmc == expected
