"""Scoring the sides on the reference's held-out test photos, as `ns-eval` scores a run (PSNR and
SSIM through torchmetrics, as Nerfstudio's models compute them), and saying where the comparison is
less than like for like."""

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence

import torch
from nerfstudio.cameras.cameras import Cameras
from torch import Tensor
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure


@dataclass
class TestView:
    """A photo the reference held out, and its camera in the reference coordinates."""

    name: str
    camera: Cameras  # one camera, on the CPU
    photo: Tensor  # [H, W, 3] float in 0..1


def test_names(datamanager) -> List[str]:
    """The file names of the photos a datamanager holds out."""
    return [Path(p).name for p in datamanager.eval_dataset.image_filenames]


def test_views(datamanager, background: Tensor) -> List[TestView]:
    """The held-out photos with their cameras, as `ns-eval` scores them: photos with alpha on `background`."""
    views = []
    for name, (camera, batch) in zip(test_names(datamanager), datamanager.fixed_indices_eval_dataloader):
        photo = batch["image"]
        photo = photo.float() / 255 if photo.dtype == torch.uint8 else photo.float()
        if photo.shape[-1] == 4:  # a TinySplat run keeps photos' alpha: ns-eval sees them on its background
            photo = photo[..., :3] * photo[..., 3:] + (1 - photo[..., 3:]) * background.to(photo.device)
        views.append(TestView(name, camera.to("cpu"), photo.cpu()))
    return views


def image_metrics(rendered: Tensor, photo: Tensor) -> Dict[str, float]:
    """PSNR and SSIM of [H, W, 3] images in 0..1, computed as Nerfstudio's models do."""
    pred, gt = rendered.permute(2, 0, 1)[None], photo.permute(2, 0, 1)[None]
    return {
        "psnr": float(peak_signal_noise_ratio(pred, gt, data_range=1.0)),
        "ssim": float(structural_similarity_index_measure(pred, gt, data_range=1.0)),
    }


def dataset_warnings(runs: Sequence, reference) -> List[str]:
    """What makes the runs' comparison with the reference less than like for like: different data,
    or different photos held out (then a run may be scored on photos it trained on)."""
    warnings = []
    for run in runs:
        if run is reference.run:
            continue
        letter = run.name.split(":")[0]
        if run.data != reference.data:
            warnings.append(
                f"{reference.label} and {letter} were trained on different datasets ({reference.data} and {run.data}): "
                "cameras are matched through each dataset's own coordinates"
            )
        if run.test_names != reference.test_names:
            common = len(set(run.test_names) & set(reference.test_names))
            warnings.append(
                f"{reference.label} and {letter} held out different test photos ({common} of {reference.label}'s "
                f"{len(reference.test_names)} in common): all are scored on {reference.label}'s, which {letter} "
                "may have trained on"
            )
    return warnings
