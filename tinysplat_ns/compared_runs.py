"""Trained runs of any Nerfstudio method loaded to be looked at side by side: each through
Nerfstudio's `eval_setup` and rendered through its own model, all seen from cameras given in the
first run's coordinates (each run's dataparser may have moved the dataset differently), and scored
on the first run's held-out test views."""

import sys
import time
from contextlib import contextmanager
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple
from unittest import mock

import numpy as np
import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.pipelines.base_pipeline import Pipeline
from torch import Tensor
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from tinysplat_ns.core.frames import Similarity, compose, inverse, transform_cameras
from tinysplat_ns.run_files import latest_checkpoint, numpy_scalars_allowed, read_config
from tinysplat_ns.tinysplat_model import lpips_weights_path


@dataclass
class TestView:
    """A photo the first run held out, and its camera in that run's coordinates."""

    name: str
    camera: Cameras  # one camera, on the CPU
    photo: Tensor  # [H, W, 3] float in 0..1


@dataclass
class ComparedRun:
    config_path: Path
    method: str
    step: int
    pipeline: Pipeline
    to_run: Similarity  # the first run's coordinates -> this run's
    test_names: List[str]  # the file names this run held out
    data: Path
    pixels_per_second: float = 0.0  # measured on its renders (until the first: assume slow)

    @property
    def gaussian_count(self) -> Optional[int]:
        params = getattr(self.pipeline.model, "gauss_params", None)
        return None if params is None else int(params["means"].shape[0])

    def render(self, camera: Cameras) -> Tensor:
        """[H, W, 3] colours in 0..1 on the CPU of one camera posed in the first run's coordinates."""
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
    if not config_path.is_file():
        sys.exit(f"error: {config_path}: no such file; pass the config.yml of a run (outputs/.../config.yml)")
    plain = read_config(config_path)
    method = plain.get("method_name")

    from nerfstudio.configs.method_configs import all_methods

    if method not in all_methods:
        sys.exit(f"error: {config_path}: method {method!r} is not installed here; install the package that provides it")
    checkpoint = latest_checkpoint(config_path, plain)
    data = plain["pipeline"].get("datamanager", {}).get("data") or plain.get("data")
    if data is not None and not Path(data).exists():
        sys.exit(
            f"error: {config_path}: its dataset {data} is not there; run from the folder ns-train ran in "
            "(the path is relative to it) or restore the data"
        )

    from nerfstudio.utils.eval_utils import eval_setup

    def checkpoints_beside_config(config):
        config.relative_model_dir = checkpoint.parent.resolve()  # absolute: used as is
        return config

    try:
        with numpy_scalars_allowed(), lpips_without_download():
            _, pipeline, _, step = eval_setup(config_path, update_config_callback=checkpoints_beside_config)
    except Exception as e:  # Nerfstudio's own asserts and loader errors
        sys.exit(f"error: {config_path}: Nerfstudio could not load this run ({type(e).__name__}: {e})")
    return pipeline, method, step


def _dataset_transform(pipeline: Pipeline) -> Similarity:
    """The run's dataset coordinates -> run coordinates, as its dataparser computed them."""
    outputs = pipeline.datamanager.train_dataparser_outputs
    return outputs.dataparser_transform.double().cpu(), float(outputs.dataparser_scale)


def _test_names(pipeline: Pipeline) -> List[str]:
    return [Path(p).name for p in pipeline.datamanager.eval_dataset.image_filenames]


def load_runs(config_paths: Sequence[Path]) -> List[ComparedRun]:
    runs: List[ComparedRun] = []
    for path in config_paths:
        pipeline, method, step = load_run(path)
        if runs:
            to_run = compose(_dataset_transform(pipeline), inverse(_dataset_transform(runs[0].pipeline)))
        else:
            to_run = (torch.eye(3, 4, dtype=torch.float64), 1.0)
        data = Path(pipeline.datamanager.dataparser.config.data).resolve()
        runs.append(ComparedRun(path, method, step, pipeline, to_run, _test_names(pipeline), data))
    return runs


def dataset_warnings(runs: Sequence[ComparedRun]) -> List[str]:
    """What makes the runs' comparison less than like for like: different data, or different
    photos held out (then a run may be scored on photos it trained on)."""
    first, warnings = runs[0], []
    for letter, run in zip("BCDEFGH", runs[1:]):
        if run.data != first.data:
            warnings.append(
                f"A and {letter} were trained on different datasets ({first.data} and {run.data}): "
                "cameras are matched through each dataset's own coordinates"
            )
        if run.test_names != first.test_names:
            common = len(set(run.test_names) & set(first.test_names))
            warnings.append(
                f"A and {letter} held out different test photos ({common} of A's {len(first.test_names)} "
                f"in common): all runs are scored on A's, which {letter} may have trained on"
            )
    return warnings


def test_views(run: ComparedRun) -> List[TestView]:
    """The run's held-out photos with their cameras, as `ns-eval` scores them."""
    views = []
    for name, (camera, batch) in zip(run.test_names, run.pipeline.datamanager.fixed_indices_eval_dataloader):
        photo = batch["image"]
        photo = photo.float() / 255 if photo.dtype == torch.uint8 else photo.float()
        if photo.shape[-1] == 4:  # a TinySplat run keeps photos' alpha: ns-eval sees them on its background
            background = getattr(run.pipeline.model, "background_color", torch.ones(3)).to(photo.device)
            photo = photo[..., :3] * photo[..., 3:] + (1 - photo[..., 3:]) * background
        views.append(TestView(name, camera.to("cpu"), photo.cpu()))
    return views


def image_metrics(rendered: Tensor, photo: Tensor) -> Dict[str, float]:
    """PSNR and SSIM of [H, W, 3] images in 0..1, computed as Nerfstudio's models do."""
    pred, gt = rendered.permute(2, 0, 1)[None], photo.permute(2, 0, 1)[None]
    return {
        "psnr": float(peak_signal_noise_ratio(pred, gt, data_range=1.0)),
        "ssim": float(structural_similarity_index_measure(pred, gt, data_range=1.0)),
    }


def to_uint8(image: Tensor) -> np.ndarray:
    return (image.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
