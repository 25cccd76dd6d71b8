"""The one frame every side is seen in: the reference's coordinates, those of the first run given, or
else those TinySplat's dataparser gives `--data`'s dataset (a TinySplat run on it would train in
them). A run is moved into it through both datasets' own coordinates; a splat file from the dataset's
frame (COLMAP's, where Inria's, gsplat's and OpenSplat's trainers write) by the dataparser's transform,
one in a run's frame not at all."""

from dataclasses import dataclass
from pathlib import Path
from typing import List, Literal, Optional

import torch
from torch import Tensor

from tinysplat_ns.compare.scoring import test_names
from tinysplat_ns.core.frames import Similarity, transform_gaussians
from tinysplat_ns.core.ply import Gaussians

SplatFrame = Literal["data", "run"]


@dataclass
class Reference:
    label: str  # "A" (a run), "--data", or "the file" (one splat file alone, seen in its own frame)
    data: Optional[Path]
    datamanager: Optional[object]  # its eval dataset holds the test photos and their cameras
    from_dataset: Similarity  # the dataset's coordinates -> the reference's
    background: Tensor  # [3]: what photos with alpha are scored on and splat files are drawn over
    test_names: List[str]
    run: Optional[object] = None  # the run it is, if it is one


def dataset_transform(datamanager) -> Similarity:
    """The dataset's coordinates -> those its dataparser trains in, as it computed them."""
    outputs = datamanager.train_dataparser_outputs
    return outputs.dataparser_transform.double().cpu(), float(outputs.dataparser_scale)


def reference_of_run(run) -> Reference:
    datamanager = run.pipeline.datamanager
    background = getattr(run.pipeline.model, "background_color", torch.zeros(3)).detach().float().cpu()
    return Reference(run.name.split(":")[0], run.data, datamanager, dataset_transform(datamanager), background,
                     run.test_names, run)  # fmt: skip


def reference_of_dataset(data: Path) -> Reference:
    """`data` loaded as `ns-train tinysplat` loads it (the same dataparser and test split)."""
    from tinysplat_ns.compare.datasets import datamanager_for

    datamanager = datamanager_for(data)
    alpha_color = getattr(datamanager.dataparser.config, "alpha_color", None)
    background = torch.zeros(3) if alpha_color is None else _colour(alpha_color)
    return Reference("--data", Path(data).resolve(), datamanager, dataset_transform(datamanager), background,
                     test_names(datamanager))  # fmt: skip


def reference_of_file() -> Reference:
    """One splat file with no dataset: its own coordinates, no test views, a black background."""
    identity = (torch.eye(3, 4, dtype=torch.float64), 1.0)
    return Reference("the file", None, None, identity, torch.zeros(3), [])


def _colour(value) -> Tensor:
    from nerfstudio.utils.colors import get_color

    return get_color(value).float() if isinstance(value, str) else torch.as_tensor(value, dtype=torch.float32)


def placed(gaussians: Gaussians, frame: SplatFrame, reference: Reference) -> Gaussians:
    """A splat file's Gaussians in the reference's coordinates."""
    return gaussians if frame == "run" else transform_gaussians(gaussians, reference.from_dataset)
