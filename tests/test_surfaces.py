"""Point clouds and meshes of a run (`tinysplat-export --points`, `--mesh tsdf|poisson`), judged by
outside referees: open3d's ray caster from the held-out cameras against the photos' alpha, plyfile
reading the files back, and the geometry of a ball whose every photo is the same disc; Nerfstudio's
ray-sampling `ns-export` verbs naming the command that works."""

import json
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from mesh_referee import iou, raycast, read_mesh
from PIL import Image
from plyfile import PlyData
from scene import blender_scene
from training import ns_train, run_command

from tinysplat_ns.core.surfaces import depth_normals

BALL_PIXELS = 96  # the photos' side (the disc's radius is a quarter of it)
FOV = 0.69  # blender_scene's camera_angle_x
BALL_RADIUS = 4 * np.sin(np.arctan((BALL_PIXELS / 4) / (BALL_PIXELS / 2 / np.tan(FOV / 2))))


@pytest.fixture(scope="module")
def ball(tmp_path_factory):
    """(run config, scene folder): 1000 steps of tinysplat-cpu on 24 views of a ball."""
    work = tmp_path_factory.mktemp("ball")
    data = blender_scene(work / "scene", views=(24, 2, 8), size=BALL_PIXELS)
    (work / "run").mkdir()
    config = ns_train(
        "tinysplat-cpu", work / "run", "--max-num-iterations", "1000", "--steps-per-eval-all-images", "0",
        "--pipeline.model.num-random", "5000", "--pipeline.model.num-downscales", "0", "blender-data",
        data=data,
    )  # fmt: skip
    return config, data


def held_out_views(data: Path):
    """(K, world-to-camera OpenCV, RGBA photo) of each test view, read straight from the Blender files."""
    meta = json.loads((data / "transforms_test.json").read_text())
    for frame in meta["frames"]:
        photo = np.asarray(Image.open(data / f"{frame['file_path']}.png"))
        height, width = photo.shape[:2]
        focal = 0.5 * width / np.tan(0.5 * meta["camera_angle_x"])
        K = torch.tensor([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]])
        opencv = np.array(frame["transform_matrix"]) @ np.diag([1.0, -1.0, -1.0, 1.0])
        yield K, torch.tensor(np.linalg.inv(opencv), dtype=torch.float32), photo


def export(config: Path, output: Path, *flags, check=True):
    return run_command(["tinysplat-export", "--load-config", config, "--output", output, *flags], output.parent, check)


@pytest.mark.parametrize("kind, flags, min_iou", [("tsdf", ["--resolution", "128"], 0.90), ("poisson", [], 0.86)])
def test_mesh_silhouettes_match_the_held_out_photos_alpha(ball, tmp_path, kind, flags, min_iou):
    config, data = ball
    export(config, tmp_path / "mesh.ply", "--mesh", kind, *flags)
    mesh = read_mesh(tmp_path / "mesh.ply")
    scores, too_deep = [], []
    for K, viewmat, photo in held_out_views(data):
        hit, depth, _ = raycast(mesh, K, viewmat, photo.shape[1], photo.shape[0])
        scores.append(iou(hit, torch.from_numpy(photo[..., 3] > 127)))
        middle = (photo.shape[0] // 2, photo.shape[1] // 2)
        assert hit[middle]
        too_deep.append(float(depth[middle]) - (4 - BALL_RADIUS))
    # measured: tsdf 0.935 (worst view 0.913), poisson 0.900 (0.822); 96-pixel silhouettes
    assert np.mean(scores) > min_iou and min(scores) > min_iou - 0.08, scores
    # the surface is the ball's: a camera 4 from its centre sees its near side at 4 - radius. A ball
    # of one colour holds the splat's depth loosely: measured 0.003-0.063 deeper in one run, up to
    # 0.15 in another (the median view is the steadier figure)
    assert abs(np.median(too_deep)) < 0.1, too_deep
    radii = np.linalg.norm(np.asarray(mesh.vertices), axis=1)
    assert abs(np.median(radii) / BALL_RADIUS - 1) < 0.08  # measured: 3.7% (tsdf), 4.8% (poisson) inside


def test_point_cloud_lies_on_the_ball_facing_out_with_its_colour(ball, tmp_path):
    config, _ = ball
    out = export(config, tmp_path / "points.ply", "--points", "--num-points", "20000").stdout
    vertex = PlyData.read(str(tmp_path / "points.ply"))["vertex"].data
    assert {"x", "y", "z", "nx", "ny", "nz", "red", "green", "blue"} <= set(vertex.dtype.names)
    assert 18_000 < len(vertex) <= 20_000 and f"Wrote a point cloud of {len(vertex):,} points" in out
    points = np.stack([vertex["x"], vertex["y"], vertex["z"]], axis=1)
    normals = np.stack([vertex["nx"], vertex["ny"], vertex["nz"]], axis=1)
    # measured: the points lie 5.5% inside the ball at the median, 90% of them within 14%; their
    # normals 12 degrees from the radial direction at the median, 90% within 33
    inside = 1 - np.linalg.norm(points, axis=1) / BALL_RADIUS
    assert np.median(np.abs(inside)) < 0.1 and np.quantile(np.abs(inside), 0.9) < 0.25
    cosines = (normals * points).sum(1) / np.linalg.norm(points, axis=1) / np.linalg.norm(normals, axis=1)
    assert np.median(cosines) > np.cos(np.radians(25)) and np.quantile(cosines, 0.1) > np.cos(np.radians(60))
    colours = np.stack([vertex["red"], vertex["green"], vertex["blue"]], axis=1).astype(float)
    assert np.abs(np.median(colours, axis=0) - [200, 30, 30]).max() < 12


def test_depth_normals_of_a_tilted_plane():
    K = torch.tensor([[50.0, 0, 32], [0, 50.0, 24], [0, 0, 1]])
    normal = torch.nn.functional.normalize(torch.tensor([0.3, -0.2, -1.0]), dim=0)  # facing the camera
    v, u = torch.meshgrid(torch.arange(48) + 0.5, torch.arange(64) + 0.5, indexing="ij")
    rays = torch.stack([(u - 32) / 50, (v - 24) / 50, torch.ones_like(u)], dim=-1)
    depth = (-2.0 / (rays @ normal))[..., None]  # the plane n . x = -2, cut by each pixel's ray
    alpha = torch.ones(48, 64, 1)
    alpha[:, :10] = 0  # no surface there
    rotation = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(0)))[0]
    viewmat = torch.eye(4)
    viewmat[:3, :3] = rotation
    world = depth_normals(depth, alpha, K, viewmat)
    inner = world[1:-1, 11:-1]  # (the differences reach fewer pixels near the edges)
    assert torch.allclose(inner, (rotation.T @ normal).expand_as(inner), atol=1e-4)
    assert (world[:, :11] == 0).all() and (world[0] == 0).all() and (world[:, -1] == 0).all()


# Nerfstudio's ray-sampling verbs on a TinySplat run: (its flags, the file it names, the size flags
# added to the command it names, to keep the exports small)
NS_EXPORT_VERBS = {
    "pointcloud": (["--num-points", "30000"], "point_cloud.ply", []),
    "tsdf": ([], "tsdf_mesh.ply", ["--resolution", "96"]),
    "poisson": (["--num-points", "30000"], "poisson_mesh.ply", ["--poisson-depth", "7"]),
}


@pytest.fixture(scope="module")
def exports(trained, tmp_path_factory):
    """The real scene's short run exported each way, by the tinysplat-export command that each of
    Nerfstudio's ray-sampling verbs names when it refuses (run with small sizes added): the config,
    the files, each verb's refusal."""
    work, config = trained
    out = tmp_path_factory.mktemp("surfaces")
    files, refusals = {}, {}
    for verb, (flags, name, sizes) in NS_EXPORT_VERBS.items():
        refusals[verb] = run_command(
            ["ns-export", verb, "--load-config", config, "--output-dir", out / verb, *flags], work, check=False
        )
        command = shlex.split(refusals[verb].stderr.strip().splitlines()[-1].split("the same file: ")[1])
        run_command(command + sizes, work)
        files[verb] = out / verb / name
    return config, files, refusals


def test_each_export_of_the_real_scene_read_back(exports):
    config, files, _ = exports
    points = PlyData.read(str(files["pointcloud"]))["vertex"].data
    assert 25_000 < len(points) <= 30_000
    xyz = np.stack([points["x"], points["y"], points["z"]], axis=1)
    for kind in ("tsdf", "poisson"):
        table = PlyData.read(str(files[kind]))
        vertices = np.stack([table["vertex"].data[c] for c in "xyz"], axis=1)
        assert len(vertices) > 1000 and len(table["face"].data) > 1000, kind
        faces = np.stack(table["face"].data["vertex_indices"])
        assert faces.shape[1] == 3 and faces.max() < len(vertices)
        if kind == "tsdf":  # inside the TSDF's cube (over Nerfstudio data's scene box, [-1, 1]^3)
            assert (np.abs(vertices) <= 1 + 1e-4).all()
        else:  # no further from the points than Poisson's trimming allows
            assert (vertices >= xyz.min(0) - 0.1).all() and (vertices <= xyz.max(0) + 0.1).all()


def test_crop_and_data_frame(exports, tmp_path):
    config, files, _ = exports
    run_frame = PlyData.read(str(files["pointcloud"]))["vertex"].data
    everywhere = np.stack([run_frame[c] for c in "xyz"], axis=1)
    low, high = np.quantile(everywhere, 0.25, axis=0), np.quantile(everywhere, 0.75, axis=0)
    corners = ["--crop-min", *map(str, low), "--crop-max", *map(str, high)]
    export(config, tmp_path / "crop.ply", "--points", "--num-points", "30000", *corners)
    cropped = PlyData.read(str(tmp_path / "crop.ply"))["vertex"].data
    xyz = np.stack([cropped[c] for c in "xyz"], axis=1)
    assert len(xyz) > 1000 and (xyz >= low - 1e-6).all() and (xyz <= high + 1e-6).all()

    export(config, tmp_path / "data.ply", "--points", "--num-points", "30000", "--frame", "data")
    ours = PlyData.read(str(tmp_path / "data.ply"))["vertex"].data
    saved = json.loads((config.parent / "dataparser_transforms.json").read_text())
    matrix, scale = np.array(saved["transform"]), saved["scale"]
    moved = np.stack([run_frame[c] for c in "xyz"], axis=1) / scale
    expected = (moved - matrix[:, 3]) @ matrix[:, :3]  # x = R^T (y / s - t)
    assert np.allclose(np.stack([ours[c] for c in "xyz"], axis=1), expected, atol=1e-4)


def test_mistakes_get_one_line(exports, tmp_path):
    config, _, _ = exports
    far = ["--crop-min", "50", "50", "50", "--crop-max", "51", "51", "51"]
    for flags in (["--points", *far], ["--mesh", "poisson", *far]):
        result = export(config, tmp_path / "empty.ply", *flags, check=False)
        assert result.returncode != 0 and "Traceback" not in result.stderr
        assert result.stderr.strip().splitlines()[-1].startswith("error:") and "crop box" in result.stderr
        assert not (tmp_path / "empty.ply").exists()
    missing = export(tmp_path / "nowhere" / "config.yml", tmp_path / "m.ply", "--mesh", "tsdf", check=False)
    assert missing.returncode != 0 and missing.stderr.strip() == (
        f"error: {tmp_path / 'nowhere' / 'config.yml'}: no such file; pass the config.yml of a run (outputs/.../config.yml)"
    )
    other = tmp_path / "nerfacto" / "config.yml"
    other.parent.mkdir()
    other.write_text(config.read_text().replace("method_name: tinysplat-cpu", "method_name: nerfacto"))
    refused = export(other, tmp_path / "m.ply", "--points", check=False)
    assert refused.returncode != 0 and "a nerfacto run; --points and --mesh render TinySplat runs" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    wrong = export(config, tmp_path / "m.splat", "--mesh", "tsdf", check=False)
    assert wrong.returncode != 0 and "a tsdf file ends in .ply or .obj or .glb" in wrong.stderr


def assert_names_the_command_that_works(refusal, verb: str, flags: list) -> None:
    assert refusal.returncode != 0 and "Traceback" not in refusal.stderr
    line = refusal.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: ns-export {verb} ") and "tinysplat-export" in line
    command = shlex.split(line.split("the same file: ")[1])
    assert command[0] == "tinysplat-export" and (flags[:1] != ["--num-points"] or command[-2:] == flags)


@pytest.mark.parametrize("verb", NS_EXPORT_VERBS)
def test_ns_export_verbs_name_the_command_that_works(exports, verb):
    """The command each verb names wrote the file where ns-export would have (`exports` ran it)."""
    _, files, refusals = exports
    flags, _, _ = NS_EXPORT_VERBS[verb]
    assert_names_the_command_that_works(refusals[verb], verb, flags)
    assert len(PlyData.read(str(files[verb]))["vertex"].data) > 1000


def test_ns_export_pointcloud_asking_the_datamanager_first(trained, tmp_path):
    """(--normal-method open3d asks the datamanager, not the model, first.)"""
    work, config = trained
    flags = ["--normal-method", "open3d"]
    refusal = run_command(["ns-export", "pointcloud", "--load-config", config, "--output-dir", tmp_path, *flags], work,
                          check=False)  # fmt: skip
    assert_names_the_command_that_works(refusal, "pointcloud", flags)


def test_ns_export_cameras(trained, tmp_path):
    work, config = trained
    run_command(["ns-export", "cameras", "--load-config", config, "--output-dir", tmp_path], work)
    frames = json.loads((tmp_path / "transforms_train.json").read_text())
    assert len(frames) == 44 and np.array(frames[0]["transform"]).shape == (3, 4)
