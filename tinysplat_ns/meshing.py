"""Point clouds and meshes of a trained TinySplat run, made as Nerfstudio makes them for a NeRF: the
run renders its training views (colour, depth, opacity, normals), the opaque pixels go back to world
points, and open3d fuses the depth images into a TSDF mesh or fits a Poisson surface to the points.

Nerfstudio's own `ns-export pointcloud|tsdf|poisson` sample a NeRF ray by ray (a pixel sampler in the
datamanager, ray bundles into the model), which a rasterizer does not take; on a TinySplat run they
stop with one line naming the `tinysplat-export` command that makes the same file."""

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from tinysplat_ns.core.frames import Similarity, transform_points
from tinysplat_ns.core.ply import in_box
from tinysplat_ns.core.surfaces import camera_points, to_world

# ns-export's verbs that render ray bundles -> tinysplat-export's flags and ns-export's file name
RAY_VERBS = {
    "pointcloud": ("--points", "point_cloud.ply"),
    "poisson": ("--mesh poisson", "poisson_mesh.ply"),
    "tsdf": ("--mesh tsdf", "tsdf_mesh.ply"),
}


def refuse_ray_sampling() -> None:
    """Stop `ns-export pointcloud|tsdf|poisson` (or any tool that hands a TinySplat model rays) with
    one line naming the command that makes the same file."""
    argv = sys.argv[1:]
    verb = argv[0] if argv and argv[0] in RAY_VERBS else None

    def value(flag: str, default: str) -> str:
        for i, arg in enumerate(argv):
            if arg == flag and i + 1 < len(argv):
                return argv[i + 1]
            if arg.startswith(flag + "="):
                return arg.split("=", 1)[1]
        return default

    flags, name = RAY_VERBS.get(verb, ("--mesh tsdf", "mesh.ply"))
    command = (
        f"tinysplat-export --load-config {shlex.quote(value('--load-config', 'RUN/config.yml'))} "
        f"--output {shlex.quote(str(Path(value('--output-dir', 'exports')) / name))} {flags}"
    )
    if verb in ("pointcloud", "poisson") and value("--num-points", ""):
        command += f" --num-points {shlex.quote(value('--num-points', ''))}"
    tool = f"ns-export {verb}" if verb else "this tool"
    sys.exit(f"error: {tool} samples the scene ray by ray, as a NeRF renders, which a TinySplat run does not; the same file: {command}")


@dataclass
class View:
    """One training view as the run renders it."""

    rgb: Tensor  # [H, W, 3] colour of the Gaussians alone (not composited onto the background)
    alpha: Tensor  # [H, W, 1]
    depth: Tensor  # [H, W, 1] camera z
    normals: Tensor  # [H, W, 3] world-space unit normals, zero where undefined
    K: Tensor  # [3, 3]
    viewmat: Tensor  # [4, 4] world-to-camera, OpenCV axes


def training_views(pipeline, downscale: float = 1.0, progress: bool = True) -> Iterator[View]:
    """The run's training views rendered from their poses as training left them (with camera
    optimisation, the optimised ones), at 1/`downscale` of the photos' resolution."""
    from nerfstudio.cameras.cameras import Cameras
    from rich.progress import track

    from tinysplat_ns.tinysplat_model import viewmats_from_c2w

    model = pipeline.model
    cameras: Cameras = pipeline.datamanager.train_dataset.cameras
    indices = range(len(cameras))
    for i in track(indices, description="Rendering the training views", disable=not progress):
        camera = cameras[i : i + 1]
        camera.metadata = {"cam_idx": i}
        with torch.no_grad():
            camera.camera_to_worlds = model.camera_optimizer.apply_to_camera(camera.to(model.device)).cpu()
        camera.metadata = None
        camera.rescale_output_resolution(1.0 / downscale)
        with torch.no_grad():
            out = model.get_outputs_for_camera(camera.to(model.device))
        alpha = out["accumulation"].cpu()
        background = out["background"].cpu()
        rgb = ((out["rgb"].cpu() - (1 - alpha) * background) / alpha.clamp(min=1e-6)).clamp(0, 1)
        yield View(
            rgb=rgb,
            alpha=alpha,
            depth=torch.where(alpha > 0, out["depth"].cpu(), 0.0),
            normals=out["normals"].cpu() * 2 - 1,
            K=camera.get_intrinsics_matrices()[0],
            viewmat=viewmats_from_c2w(camera.camera_to_worlds)[0],
        )


def surface_points(
    views: Iterable[View], per_view: int, crop_min=None, crop_max=None, min_alpha: float = 0.5, seed: int = 0
) -> Tuple[Tensor, Tensor, Tensor]:
    """(points, colours, normals) [M, 3] from the opaque pixels of the views (those with a normal:
    not on a silhouette), up to `per_view` drawn at random from each view."""
    generator = torch.Generator().manual_seed(seed)
    picked = []
    for view in views:
        points = to_world(camera_points(view.depth, view.K), view.viewmat)
        points = points.reshape(-1, 3)
        keep = ((view.alpha[..., 0] >= min_alpha) & (view.normals.abs().sum(-1) > 0)).flatten()
        keep &= in_box(points, crop_min, crop_max)
        rows = keep.nonzero()[:, 0]
        rows = rows[torch.randperm(len(rows), generator=generator)[:per_view]]
        picked.append(tuple(t.reshape(-1, 3)[rows] for t in (points, view.rgb, view.normals)))
    if not picked:
        return tuple(torch.zeros(0, 3) for _ in range(3))  # type: ignore[return-value]
    return tuple(torch.cat(parts) for parts in zip(*picked))  # type: ignore[return-value]


def open3d_point_cloud(points: Tensor, colors: Tensor, normals: Tensor, remove_outliers: bool = True):
    """An open3d point cloud; `remove_outliers`: open3d's statistical filter with Nerfstudio's settings
    for `ns-export pointcloud` (20 neighbours, 10 standard deviations)."""
    import open3d as o3d

    cloud = o3d.geometry.PointCloud()
    cloud.points = o3d.utility.Vector3dVector(points.double().numpy())
    cloud.colors = o3d.utility.Vector3dVector(colors.double().numpy())
    cloud.normals = o3d.utility.Vector3dVector(normals.double().numpy())
    if remove_outliers and len(points) > 20:
        cloud, _ = cloud.remove_statistical_outlier(nb_neighbors=20, std_ratio=10.0)
    return cloud


def tsdf_mesh(views: Iterable[View], box: Tensor, resolution: int, min_alpha: float = 0.5):
    """open3d's TSDF fusion of the views' depth in a cube of `resolution` voxels a side over the box
    [2, 3] (its longest side), truncated at 4 voxels, and its marching-cubes mesh with the fused
    colours. A pixel the splat leaves transparent (below `min_alpha`) carves its ray as empty
    through the whole cube, so the mesh closes where the splat's silhouettes say, not a voxel band
    inside them. (A dense cube: open3d 0.20's sparse volumes, ScalableTSDFVolume and VoxelBlockGrid,
    give empty meshes on this project's CPUs.)"""
    import open3d as o3d

    length = float((box[1] - box[0]).max())
    voxel = length / resolution
    volume = o3d.pipelines.integration.UniformTSDFVolume(
        length=length, resolution=resolution, sdf_trunc=4 * voxel,
        color_type=o3d.pipelines.integration.TSDFVolumeColorType.RGB8, origin=box[0].double().numpy(),
    )  # fmt: skip
    corners = box[0] + length * torch.tensor([[i >> 2 & 1, i >> 1 & 1, i & 1] for i in range(8)], dtype=box.dtype)
    for view in views:
        height, width = view.depth.shape[:2]
        # beyond the cube's farthest corner: the carved rays' far end makes no surface inside it
        beyond = float((corners.double() @ view.viewmat[:3, :3].double().T + view.viewmat[:3, 3].double())[:, 2].max())
        if beyond <= 0:
            continue  # the cube is behind this camera
        beyond += 8 * voxel
        depth = torch.where(view.alpha >= min_alpha, view.depth, beyond)[..., 0].float().contiguous().numpy()
        color = (view.rgb * 255).round().to(torch.uint8).contiguous().numpy()
        image = o3d.geometry.RGBDImage.create_from_color_and_depth(
            o3d.geometry.Image(color), o3d.geometry.Image(depth), depth_scale=1.0, depth_trunc=beyond + 1.0,
            convert_rgb_to_intensity=False,
        )  # fmt: skip
        fx, fy, cx, cy = (float(v) for v in (view.K[0, 0], view.K[1, 1], view.K[0, 2], view.K[1, 2]))
        # open3d puts pixel centres at whole numbers, the rasterizer at halves
        intrinsic = o3d.camera.PinholeCameraIntrinsic(width, height, fx, fy, cx - 0.5, cy - 0.5)
        volume.integrate(image, intrinsic, view.viewmat.double().numpy())
    mesh = volume.extract_triangle_mesh()
    mesh.compute_vertex_normals()
    return mesh


def poisson_mesh(cloud, depth: int = 9):
    """open3d's screened Poisson surface of an oriented point cloud, less the surface it invents away
    from the points: vertices farther from the cloud than 2 octree cells or twice the points' median
    spacing, whichever is more. (Nerfstudio drops the vertices of the lowest 10% of point density
    instead, which also cuts an object's thinly seen rim: on a ball seen from above, silhouette IoU
    0.84 against 0.90; farther cut-offs keep sheets in front of a real scene's surface: at 4 cells,
    the bundled scene's median depth error went from 6.6% to 27%.)"""
    import open3d as o3d

    mesh, _ = o3d.geometry.TriangleMesh.create_from_point_cloud_poisson(cloud, depth=depth)
    if len(mesh.vertices):
        cell = float(np.max(cloud.get_max_bound() - cloud.get_min_bound())) * 1.1 / 2**depth
        spacing = float(np.median(np.asarray(cloud.compute_nearest_neighbor_distance())))
        vertices = o3d.geometry.PointCloud(mesh.vertices)
        gap = np.asarray(vertices.compute_point_cloud_distance(cloud))
        mesh.remove_vertices_by_mask(gap > max(2 * cell, 2 * spacing))
    mesh.compute_vertex_normals()
    return mesh


def surface_of_run(pipeline, kind: str, *, num_points: int, resolution: int, poisson_depth: int, downscale: float,
                   crop_min=None, crop_max=None):  # fmt: skip
    """`kind` ("points", "tsdf", "poisson") of a loaded run, cropped, and a few words on how it was
    made; None for the surface when nothing is left."""
    cameras = pipeline.datamanager.train_dataset.cameras
    views = training_views(pipeline, downscale)
    if kind == "tsdf":
        box = pipeline.datamanager.train_dataparser_outputs.scene_box.aabb
        if crop_min is not None and crop_max is not None:
            box = torch.tensor([crop_min, crop_max])
        mesh = crop_mesh(tsdf_mesh(views, box, resolution), crop_min, crop_max)
        detail = f"{resolution} voxels a side, each {float((box[1] - box[0]).max()) / resolution:.4g}"
        return (mesh if len(mesh.triangles) else None), detail
    points = surface_points(views, -(-num_points // len(cameras)), crop_min, crop_max)
    if len(points[0]) > num_points:  # (whole views' shares drawn: a few too many)
        keep = torch.randperm(len(points[0]), generator=torch.Generator().manual_seed(0))[:num_points]
        points = tuple(t[keep] for t in points)
    if not len(points[0]):
        return None, ""
    cloud = open3d_point_cloud(*points)
    if kind == "points":
        return cloud, "outliers removed"
    mesh = crop_mesh(poisson_mesh(cloud, poisson_depth), crop_min, crop_max)
    return (mesh if len(mesh.triangles) else None), f"from {len(cloud.points):,} points, depth {poisson_depth}"


def crop_mesh(mesh, crop_min=None, crop_max=None):
    import open3d as o3d

    if crop_min is None and crop_max is None:
        return mesh
    low = np.array(crop_min if crop_min is not None else [-np.inf] * 3, dtype=float)
    high = np.array(crop_max if crop_max is not None else [np.inf] * 3, dtype=float)
    vertices = np.asarray(mesh.vertices)
    if len(vertices):  # open3d's box needs finite corners
        low, high = np.maximum(low, vertices.min(0)), np.minimum(high, vertices.max(0))
    if (low > high).any():
        return o3d.geometry.TriangleMesh()
    return mesh.crop(o3d.geometry.AxisAlignedBoundingBox(low, high))


def move_to_frame(surface, similarity: Similarity) -> None:
    """A point cloud or mesh moved, in place, into the frame x -> s (R x + t)."""
    import open3d as o3d

    vertices = surface.points if hasattr(surface, "points") else surface.vertices
    moved = transform_points(torch.from_numpy(np.asarray(vertices)), similarity).numpy()
    vertices[:] = o3d.utility.Vector3dVector(moved)  # (assigned in place: the same open3d vector)
    if hasattr(surface, "points"):
        normals = torch.from_numpy(np.asarray(surface.normals)) @ similarity[0][:, :3].T
        surface.normals = o3d.utility.Vector3dVector(F.normalize(normals, dim=-1).numpy())
    else:
        surface.compute_vertex_normals()


def write(surface, path: Path) -> None:
    """A point cloud or mesh to `path` (binary; the format from its suffix), written whole or not at all."""
    import open3d as o3d

    from tinysplat_ns.core.ply import atomic_write

    with atomic_write(path) as partial:
        # open3d picks the format from the name: the partial file keeps the suffix
        named = partial.with_name(partial.name + path.suffix)
        try:
            written = (
                o3d.io.write_point_cloud(str(named), surface) if hasattr(surface, "points")
                else o3d.io.write_triangle_mesh(str(named), surface)
            )  # fmt: skip
            if not written:
                sys.exit(f"error: {path}: open3d could not write it; check the folder can be written")
            named.replace(partial)
        finally:
            named.unlink(missing_ok=True)
