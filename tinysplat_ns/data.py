"""Nerfstudio's full-image datamanager, with the scene checked before training starts.

A bad scene ends in one line that names the file and the fix (a `SceneError`, which exits like
`sys.exit(message)`), not in a traceback from deep inside a dataparser or an image loader.
"""

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Literal, Type, Union

import numpy as np
import numpy.typing as npt
import torch

from nerfstudio.data.datamanagers.full_images_datamanager import FullImageDatamanager, FullImageDatamanagerConfig
from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig
from nerfstudio.data.dataparsers.colmap_dataparser import ColmapDataParserConfig
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
from nerfstudio.data.datasets.base_dataset import InputDataset
from nerfstudio.data.utils.data_utils import get_depth_image_from_path
from nerfstudio.utils import comms
from nerfstudio.utils.rich_utils import CONSOLE

from tinysplat_ns.meshing import refuse_ray_sampling


class SceneError(SystemExit):
    """The scene cannot be trained on; the message says which file and what to do."""

    def __init__(self, message: str):
        super().__init__(f"error: {message}")


class CheckedDataset(InputDataset):
    """Images that are missing, undecodable or of another size than their camera fail by name.
    Depth images, when the dataparser lists them (`depth_file_path` in transforms.json), come as
    `depth_image` [H, W, 1] in scene units (Nerfstudio's DepthDataset estimates missing ones with a
    network it downloads; here there are given ones or none)."""

    def get_metadata(self, data: Dict) -> Dict:
        depth_files = self.metadata.get("depth_filenames")
        if not depth_files:
            return {}
        index = data["image_idx"]
        path = Path(depth_files[index])
        if not path.exists():
            raise SceneError(
                f"{path}: depth image is listed in the scene but missing; restore it or remove its depth_file_path"
            )
        height, width = int(self.cameras.height[index]), int(self.cameras.width[index])
        # the dataparser's unit (e.g. mm: 1e-3) and its scene scale, as DepthDataset applies them
        scale = self.metadata.get("depth_unit_scale_factor", 1.0) * self._dataparser_outputs.dataparser_scale
        try:
            depth = get_depth_image_from_path(path, height, width, scale)
        except Exception as e:
            raise SceneError(f"{path}: cannot read depth image ({e}); replace the file") from None
        return {"depth_image": depth}

    def get_numpy_image(self, image_idx: int) -> npt.NDArray[np.uint8]:
        path = Path(self._dataparser_outputs.image_filenames[image_idx])
        if not path.exists():
            raise SceneError(f"{path}: image is listed in the scene but missing; restore it or remove its frame")
        try:
            image = super().get_numpy_image(image_idx)
        except Exception as e:  # PIL raises many types for a broken file
            raise SceneError(f"{path}: cannot decode image ({e}); replace the file or remove its frame") from None
        height, width = int(self.cameras.height[image_idx]), int(self.cameras.width[image_idx])
        if image.shape[:2] != (height, width):
            raise SceneError(
                f"{path}: image is {image.shape[1]}x{image.shape[0]} but its camera is {width}x{height}; "
                "fix the intrinsics (w, h, fl_x, ...) or resize the image"
            )
        return image


@dataclass
class CheckedDatamanagerConfig(FullImageDatamanagerConfig):
    _target: Type = field(default_factory=lambda: CheckedDatamanager)


class NoPixelSampler:
    """Stands where Nerfstudio's NeRF exporters find a datamanager's pixel sampler: `ns-export
    pointcloud|poisson` set its batch size, then sample rays. A datamanager of whole images has none,
    so they get the command that works instead. (Not a property that refuses when read: the viewer
    reads every attribute of the pipeline's modules.)"""

    def __setattr__(self, name, value):
        refuse_ray_sampling()


class CheckedDatamanager(FullImageDatamanager[CheckedDataset]):
    def __init__(
        self,
        config: CheckedDatamanagerConfig,
        device: Union[torch.device, str] = "cpu",
        test_mode: Literal["test", "val", "inference"] = "val",
        world_size: int = 1,
        local_rank: int = 0,
        **kwargs,
    ):
        if config.data is not None:
            config.dataparser.data = Path(config.data)
        check_scene_layout(config.dataparser)
        try:
            super().__init__(config, device, test_mode, world_size, local_rank, **kwargs)
        except SceneError:
            raise
        except Exception as e:  # a dataparser's own failure, e.g. a malformed pose file
            parser = type(config.dataparser).__name__.replace("DataParserConfig", "")
            raise SceneError(
                f"{config.dataparser.data}: Nerfstudio's {parser} parser could not read the scene "
                f"({type(e).__name__}: {e}); check its pose files"
            ) from None
        # for the model: a .ply in the dataset's own coordinates is moved into the run's, and one
        # being viewed or evaluated ("test", "inference") gets its Gaussians from a checkpoint
        outputs = self.train_dataparser_outputs
        self.train_dataset.metadata["dataparser_transform"] = (outputs.dataparser_transform, outputs.dataparser_scale)
        self.train_dataset.metadata["camera_extent"] = camera_extent(outputs.cameras.camera_to_worlds)
        # Photos with alpha keep it: the model composites them onto the background it renders over
        # (the dataparser's colour, Blender's white, or a random one each training step), never onto one
        # colour while it renders over another. The dataparser's colour stays the background of evaluation.
        self.train_dataset.metadata["alpha_color"] = outputs.alpha_color
        for dataset in (self.train_dataset, self.eval_dataset):
            dataset._dataparser_outputs.alpha_color = None
        self.train_dataset.metadata["test_mode"] = test_mode
        self.train_pixel_sampler = NoPixelSampler()
        # Decode now, so a broken image stops the run before training starts, not in its middle (and
        # the model knows whether the photos have alpha: its background follows)
        if test_mode == "val":  # training
            self.train_dataset.metadata["photos_have_alpha"] = any(
                view["image"].shape[-1] == 4 for view in self.cached_train
            )
        if test_mode != "inference":
            _ = self.cached_eval

    def next_train(self, step: int):
        """The view of `step` depends on the step alone (a fresh shuffle of the views each epoch,
        as Nerfstudio's "random" sampling does), so a run resumed from a checkpoint sees the views
        the uninterrupted run would have. With N processes, step s of process r takes view s*N + r
        of that sequence: each process a different one."""
        if self.config.train_cameras_sampling_strategy == "random":
            count = len(self.train_dataset)
            epoch, position = divmod(step * comms.get_world_size() + comms.get_rank(), count)
            if getattr(self, "_epoch", None) != epoch:
                self._epoch, self._epoch_views = epoch, list(range(count))
                random.Random(f"{self.config.train_cameras_sampling_seed}/{epoch}").shuffle(self._epoch_views)
            self.train_unseen_cameras = [self._epoch_views[position]]
        return super().next_train(step)


def camera_extent(camera_to_worlds: torch.Tensor) -> float:
    """3DGS's scene extent: 1.1 times the farthest camera's distance from the cameras' mean centre
    (its densification thresholds and position learning rate are multiples of it)."""
    centres = camera_to_worlds[:, :3, 3].double()
    extent = 1.1 * float((centres - centres.mean(dim=0)).norm(dim=-1).max())
    return extent if extent > 1e-6 else 1.0  # cameras all at one place: no extent to scale by


def check_scene_layout(dataparser) -> None:
    """The files each dataparser needs, before it runs."""
    data = dataparser.data
    if data is None or str(data) in ("", "."):
        raise SceneError("no scene given; pass --data <scene folder>")
    data = Path(data)
    if not data.exists():
        raise SceneError(f"{data}: no such scene folder; pass --data <scene folder>")
    if isinstance(dataparser, NerfstudioDataParserConfig):
        poses = data if data.suffix == ".json" else data / "transforms.json"
        if not poses.exists():
            hint = (
                " (it has sparse/0: use `ns-train tinysplat colmap --data ...`)" if (data / "sparse/0").is_dir() else ""
            )
            raise SceneError(f"{poses}: no poses; run ns-process-data on the photos{hint}")
        meta = check_transforms(poses)
        if dataparser.load_3D_points and meta.get("ply_file_path"):
            if not sparse_points_readable(poses.parent / meta["ply_file_path"]):
                dataparser.load_3D_points = False
    elif isinstance(dataparser, ColmapDataParserConfig):
        if not (data / dataparser.colmap_path).is_dir():
            for candidate in (Path("sparse/0"), Path("sparse")):
                if (data / candidate / "cameras.bin").exists() or (data / candidate / "cameras.txt").exists():
                    CONSOLE.print(f"COLMAP model found at {data / candidate} (not at {dataparser.colmap_path})")
                    dataparser.colmap_path = candidate
                    break
            else:
                raise SceneError(
                    f"{data / dataparser.colmap_path}: no COLMAP model (cameras, images, points3D); "
                    "point --colmap-path at it"
                )
    elif isinstance(dataparser, BlenderDataParserConfig):
        if not (data / "transforms_train.json").exists():
            raise SceneError(f"{data / 'transforms_train.json'}: no poses; this is not a Blender-format scene")


def check_transforms(poses: Path) -> dict:
    """transforms.json parses, has at least two frames, and every pose is a finite 4x4 matrix."""
    try:
        meta = json.loads(poses.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SceneError(f"{poses}: not valid JSON ({e}); fix it or rerun ns-process-data") from None
    frames = meta.get("frames") if isinstance(meta, dict) else None
    if not isinstance(frames, list) or len(frames) < 2:
        count = len(frames) if isinstance(frames, list) else 0
        raise SceneError(
            f"{poses}: {count} frame{'s' if count != 1 else ''}; training needs at least 2 posed photos (one is "
            "held out for testing): add photos and rerun ns-process-data"
        )
    for frame in frames:
        try:
            matrix = np.asarray(frame["transform_matrix"], dtype=np.float64)
        except (KeyError, TypeError, ValueError):
            matrix = np.zeros(0)
        if matrix.shape != (4, 4) or not np.isfinite(matrix).all():
            what = "not a 4x4 matrix" if matrix.shape != (4, 4) else "NaN or inf"
            raise SceneError(
                f"{poses}: the transform_matrix of frame {frame.get('file_path')!r} is {what}; fix or remove that frame"
            )
    return meta


def sparse_points_readable(path: Path) -> bool:
    """False, with a warning, for a point cloud that is missing, damaged or empty: the model then
    starts from random Gaussians (open3d would hand the dataparser garbage from a damaged file)."""
    from plyfile import PlyData

    try:
        vertex = PlyData.read(str(path))["vertex"]
        xyz = np.stack([vertex[axis] for axis in "xyz"], axis=1)
        for channel in ("red", "green", "blue"):
            vertex[channel]
        problem = "has no points" if len(xyz) == 0 else None if np.isfinite(xyz).all() else "has NaN/inf points"
    except Exception as e:  # plyfile raises many types for a damaged file
        problem = f"cannot be read ({type(e).__name__}: {e})" if path.exists() else "is missing"
    if problem is None:
        return True
    CONSOLE.print(
        f"[bold yellow]Warning: {path} {problem}; starting from random Gaussians instead of its points "
        "(regenerate it with ns-process-data, or remove ply_file_path from transforms.json)",
        soft_wrap=True,
    )
    return False
