"""Scenes as users bring them: the other dataparsers, and broken scenes that must stop before
training with one line naming the file and the fix."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from plyfile import PlyData, PlyElement
from scene import blender_scene, scene_dir

from tinysplat_ns.data import CheckedDatamanagerConfig, SceneError
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

BIN = Path(sys.executable).parent


def ns_train(args, cwd, timeout=600):
    return subprocess.run(
        [str(BIN / "ns-train"), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def scene_copy(tmp_path):
    """A writable copy of the real scene, to break."""
    dst = tmp_path / "scene"
    shutil.copytree(scene_dir(), dst)
    return dst


def load(data: Path):
    config = CheckedDatamanagerConfig(dataparser=NerfstudioDataParserConfig(load_3D_points=True), data=data)
    return config.setup(device="cpu", test_mode="val")


def scene_error(data: Path) -> str:
    with pytest.raises(SceneError) as caught:
        load(data)
    return str(caught.value)


def test_missing_folder(tmp_path):
    message = scene_error(tmp_path / "nowhere")
    assert message == f"error: {tmp_path / 'nowhere'}: no such scene folder; pass --data <scene folder>"


def test_folder_without_poses_points_at_colmap(scene_copy):
    (scene_copy / "transforms.json").unlink()
    message = scene_error(scene_copy)
    assert str(scene_copy / "transforms.json") in message and "ns-train tinysplat colmap" in message


def test_truncated_image(scene_copy):
    image = scene_copy / "images" / "0009.jpg"
    image.write_bytes(image.read_bytes()[:2000])
    message = scene_error(scene_copy)
    assert message.startswith(f"error: {image}: cannot decode image") and "replace the file" in message


def test_image_of_the_wrong_size(scene_copy):
    image = scene_copy / "images" / "0012.jpg"
    Image.open(image).resize((200, 300)).save(image)
    message = scene_error(scene_copy)
    assert message.startswith(f"error: {image}: image is 200x300 but its camera is 300x400")


def test_listed_image_missing(scene_copy):
    image = scene_copy / "images" / "0004.jpg"
    image.unlink()
    assert scene_error(scene_copy).startswith(f"error: {image}: image is listed in the scene but missing")


def test_ns_train_prints_one_line_not_a_traceback(scene_copy):
    (scene_copy / "images" / "0014.jpg").write_bytes(b"not a jpeg")
    result = ns_train(["tinysplat", "--data", scene_copy, "--vis", "tensorboard"], scene_copy.parent)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {scene_copy / 'images' / '0014.jpg'}")


def test_no_sparse_points_starts_from_random_gaussians(scene_copy):
    (scene_copy / "sparse_pc.ply").unlink()
    meta = json.loads((scene_copy / "transforms.json").read_text())
    del meta["ply_file_path"]
    (scene_copy / "transforms.json").write_text(json.dumps(meta))
    result = ns_train(
        [
            "tinysplat-cpu", "--data", scene_copy, "--max-num-iterations", 5, "--vis", "tensorboard",
            "--output-dir", scene_copy.parent / "out", "--pipeline.model.num-random", 2000,
        ],
        scene_copy.parent,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "no sparse points" in result.stdout and "2000 random Gaussians" in result.stdout
    assert list((scene_copy.parent / "out").rglob("step-000000004.ckpt"))


def test_colmap_parser_finds_sparse_0(tmp_path):
    result = ns_train(
        ["tinysplat-cpu", "--max-num-iterations", 5, "--vis", "tensorboard", "--output-dir", tmp_path, "colmap",
         "--data", scene_dir()],
        tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "COLMAP model found at" in result.stdout
    assert list(tmp_path.rglob("step-000000004.ckpt"))


def test_blender_data(tmp_path):
    data = blender_scene(tmp_path / "blender")
    result = ns_train(
        ["tinysplat", "--max-num-iterations", 5, "--vis", "tensorboard", "--output-dir", tmp_path / "out",
         "--machine.device-type", "cpu", "--pipeline.model.num-random", 2000, "blender-data", "--data", data],
        tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert list((tmp_path / "out").rglob("step-000000004.ckpt"))


def test_ci_fails_instead_of_skipping_without_the_data(monkeypatch, tmp_path):
    monkeypatch.setenv("TINYSPLAT_DATA", str(tmp_path / "missing"))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="real scene not found"):
        scene_dir()
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception):
        scene_dir()


def edit_transforms(scene: Path, change) -> None:
    meta = json.loads((scene / "transforms.json").read_text())
    change(meta)
    (scene / "transforms.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("frames, message", [(0, ": 0 frames; training needs"), (1, ": 1 frame; training needs")])
def test_too_few_photos(scene_copy, frames, message):
    edit_transforms(scene_copy, lambda meta: meta.update(frames=meta["frames"][:frames]))
    assert scene_error(scene_copy).startswith(f"error: {scene_copy / 'transforms.json'}{message}")


def test_pose_with_nan(scene_copy):
    edit_transforms(scene_copy, lambda meta: meta["frames"][3]["transform_matrix"][1].__setitem__(2, float("inf")))
    name = json.loads((scene_copy / "transforms.json").read_text())["frames"][3]["file_path"]
    assert scene_error(scene_copy) == (
        f"error: {scene_copy / 'transforms.json'}: the transform_matrix of frame {name!r} is NaN or inf; "
        "fix or remove that frame"
    )


def test_transforms_not_json(scene_copy):
    (scene_copy / "transforms.json").write_text('{"frames": [')
    assert "transforms.json: not valid JSON" in scene_error(scene_copy)


def damage_truncated(path: Path):
    path.write_bytes(path.read_bytes()[:300])


def damage_empty(path: Path):
    PlyData([PlyElement.describe(np.empty(0, dtype=PlyData.read(str(path))["vertex"].data.dtype), "vertex")]).write(
        str(path)
    )


def damage_nan(path: Path):
    data = PlyData.read(str(path), mmap=False)
    data["vertex"]["x"][10] = np.nan
    data.write(str(path))


@pytest.mark.parametrize(
    "damage, problem",
    [(damage_truncated, "cannot be read (PlyElementParseError"), (damage_empty, "has no points"),
     (damage_nan, "has NaN/inf points")],
)  # fmt: skip
def test_damaged_sparse_points_fall_back_to_random_init(scene_copy, capsys, damage, problem):
    damage(scene_copy / "sparse_pc.ply")
    datamanager = load(scene_copy)
    assert "points3D_xyz" not in datamanager.train_dataparser_outputs.metadata
    printed = " ".join(capsys.readouterr().out.split())
    assert f"Warning: {scene_copy / 'sparse_pc.ply'} {problem}" in printed
    assert "starting from random Gaussians" in printed
