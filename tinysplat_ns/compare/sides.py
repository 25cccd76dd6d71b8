"""The sides of a comparison, loaded and placed in one frame: runs first (A, B in the order given),
then splat files; the test views they are all scored on; and what makes the comparison less than
like for like."""

from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import torch

from tinysplat_ns.compare.frames import SplatFrame, reference_of_dataset, reference_of_file, reference_of_run
from tinysplat_ns.compare.inputs import SplatFile
from tinysplat_ns.compare.runs import load_runs
from tinysplat_ns.compare.scoring import TestView, dataset_warnings, test_views
from tinysplat_ns.compare.splats import SplatSide, load_splat


def load_sides(
    configs: Sequence[Path], splats: Sequence[SplatFile], data: Optional[Path], frame: SplatFrame
) -> Tuple[list, List[TestView], List[str]]:
    reference = reference_of_dataset(data) if data is not None else None
    runs = load_runs(configs, None if reference is None else reference.from_dataset)
    letters = iter("AB")
    for run in runs:
        run.name = f"{next(letters)}: {run.method}"
    if reference is None:
        reference = reference_of_run(runs[0]) if runs else reference_of_file()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    files = [load_splat(file, frame, reference, device) for file in splats]
    for side in files:
        side.name = f"{next(letters)}: {side.title}"
    views = test_views(reference.datamanager, reference.background) if reference.datamanager is not None else []
    warnings = dataset_warnings(runs, reference) + [w for side in files for w in _placement_warnings(side, views, frame)]
    if len(files) == 2 and data is None and not runs:
        warnings.append("no --data: the two files are shown in their own coordinates, with no test views to score on")
    return [*runs, *files], views, warnings


def _placement_warnings(side: SplatSide, views: List[TestView], frame: SplatFrame) -> List[str]:
    """A file placed where no test camera sees any of it was most likely given in the other frame."""
    if not views or any(_seen(side, view) for view in views):
        return []
    other = "run" if frame == "data" else "data"
    return [
        f"{side.name}: no test camera sees any of its Gaussians in the {frame} frame; if the file is in a "
        f"run's coordinates (ns-export, tinysplat-export) or the dataset's (Inria, gsplat, OpenSplat), "
        f"pass --splat-frame {other}"
    ]


def _seen(side: SplatSide, view: TestView) -> bool:
    """Whether the rasterizer would draw any of the side's Gaussians in the view."""
    from tinysplat_ns.core.projection import project_gaussians
    from tinysplat_ns.tinysplat_model import viewmats_from_c2w

    g, camera = side.gaussians, view.camera
    viewmats = viewmats_from_c2w(camera.camera_to_worlds.float()).to(side.device)
    Ks = camera.get_intrinsics_matrices().float().to(side.device)
    projection = project_gaussians(
        g["means"], g["quats"], torch.exp(g["scales"]), viewmats, Ks, int(camera.width), int(camera.height)
    )
    return bool((projection.radii > 0).any())
