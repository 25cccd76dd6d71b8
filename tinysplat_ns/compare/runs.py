"""A side that is a trained run of any Nerfstudio method: loaded through Nerfstudio's `eval_setup` and
rendered through its own model, from cameras given in the comparison's reference coordinates (each
run's dataparser may have moved the dataset differently)."""

import sys
import time
from contextlib import contextmanager
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple
from unittest import mock

import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.pipelines.base_pipeline import Pipeline
from torch import Tensor

from tinysplat_ns.compare.frames import dataset_transform
from tinysplat_ns.compare.scoring import test_names
from tinysplat_ns.core.frames import Similarity, compose, inverse, transform_cameras
from tinysplat_ns.run_files import check_run, numpy_scalars_allowed
from tinysplat_ns.tinysplat_model import lpips_weights_path


@dataclass
class RunSide:
    config_path: Path
    method: str
    step: int
    pipeline: Pipeline
    to_run: Similarity  # the reference coordinates -> this run's
    test_names: List[str]  # the file names this run held out
    data: Path
    pixels_per_second: float = 0.0  # measured on its renders (until the first: assume slow)
    name: str = ""  # "A: <method>"

    @property
    def title(self) -> str:
        return self.method

    @property
    def details(self) -> List[str]:
        params = getattr(self.pipeline.model, "gauss_params", None)
        count = [] if params is None else [f"{int(params['means'].shape[0]):,} Gaussians"]
        return [f"{self.config_path.parent.name}, step {self.step}", *count]

    def render(self, camera: Cameras) -> Tensor:
        """[H, W, 3] colours in 0..1 on the CPU of one camera posed in the reference coordinates."""
        moved = deepcopy(camera)
        moved.camera_to_worlds = transform_cameras(camera.camera_to_worlds.double(), self.to_run).float()
        with torch.no_grad():  # (a forward pass changes no state: viewer tabs and scoring share the model)
            start = time.perf_counter()
            outputs = self.pipeline.model.get_outputs_for_camera(moved.to(self.pipeline.device))
            rgb = outputs["rgb"][..., :3].clamp(0, 1).float().cpu()
            self.pixels_per_second = rgb.shape[0] * rgb.shape[1] / max(time.perf_counter() - start, 1e-6)
        return rgb


class LpipsUnavailable(torch.nn.Module):
    """Stands in for LPIPS's network in a model built here without AlexNet's weights."""

    def __init__(self, *_, **__):
        super().__init__()

    def forward(self, *_):
        raise RuntimeError(f"LPIPS needs AlexNet's weights at {lpips_weights_path()}; runs are compared by PSNR/SSIM")


@contextmanager
def lpips_without_download(stand_in: type = LpipsUnavailable) -> Iterator[None]:
    """Nerfstudio's models (nerfacto, splatfacto, ...) build torchmetrics' LPIPS, which downloads
    AlexNet's weights when they are not on disk: offline, the model cannot even be built. Runs are
    compared by PSNR and SSIM, so without the weights the metric gets a stand-in network."""
    if lpips_weights_path().exists():
        yield
    else:
        with mock.patch("torchmetrics.image.lpip._NoTrainLpips", stand_in):
            yield


def load_run(config_path: Path) -> Tuple[Pipeline, str, int]:
    """Nerfstudio's `eval_setup` on a run, with one-line errors for what a user can get wrong, the
    checkpoint found beside config.yml wherever the run folder now is, and other methods'
    checkpoints (numpy floats in their optimizer state) accepted."""
    plain, checkpoint = check_run(config_path)
    method = plain.get("method_name")

    from nerfstudio.configs.method_configs import all_methods
    from nerfstudio.utils.eval_utils import eval_setup

    if method not in all_methods:
        sys.exit(f"error: {config_path}: method {method!r} is not installed here; install the package that provides it")

    def checkpoints_beside_config(config):
        config.relative_model_dir = checkpoint.parent.resolve()  # absolute: used as is
        return config

    try:
        with numpy_scalars_allowed(), lpips_without_download():
            _, pipeline, _, step = eval_setup(config_path, update_config_callback=checkpoints_beside_config)
    except Exception as e:  # Nerfstudio's own asserts and loader errors
        sys.exit(f"error: {config_path}: Nerfstudio could not load this run ({type(e).__name__}: {e})")
    return pipeline, method, step


def load_runs(config_paths: Sequence[Path], reference: Optional[Similarity] = None) -> List[RunSide]:
    """The runs, each seen from the reference coordinates: those of the dataset as `reference` (dataset
    -> reference) moves it, or else the first run's."""
    runs: List[RunSide] = []
    for path in config_paths:
        pipeline, method, step = load_run(path)
        own = dataset_transform(pipeline.datamanager)
        if reference is None:
            reference = own
        to_run = compose(own, inverse(reference))
        data = Path(pipeline.datamanager.dataparser.config.data).resolve()
        runs.append(RunSide(path, method, step, pipeline, to_run, test_names(pipeline.datamanager), data))
    return runs
