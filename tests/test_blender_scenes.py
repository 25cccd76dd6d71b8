"""A Blender-format scene (RGBA photos, no sparse points: NeRF-Synthetic's layout) trains as 3DGS's
recipe does with no flag: the photos' alpha composited onto the background the render is drawn over,
random Gaussians filling the scene box, and the densification thresholds and position learning rate
scaled by the cameras' extent; evaluation sees the photos on the dataset's white."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig
from PIL import Image
from training import build_trainer, train_steps

SIZE = 32
RADIUS = 4.0


def look_at_origin(position: np.ndarray) -> np.ndarray:
    """Camera-to-world (OpenGL axes: the camera looks down its -z) at `position`, facing the origin."""
    back = position / np.linalg.norm(position)
    right = np.cross([0.0, 0.0, 1.0], back)
    right /= np.linalg.norm(right)
    up = np.cross(back, right)
    pose = np.eye(4)
    pose[:3, :3] = np.stack([right, up, back], axis=1)
    pose[:3, 3] = position
    return pose


def blender_scene(root: Path, views=(6, 2, 2)) -> Path:
    """transforms_{train,val,test}.json and RGBA PNGs: a red disc (alpha 1) on transparent pixels
    whose RGB is black, as Blender renders them; cameras on a sphere of radius 4 around the origin."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    disc = (xx - SIZE / 2 + 0.5) ** 2 + (yy - SIZE / 2 + 0.5) ** 2 < (SIZE / 4) ** 2
    image = np.zeros((SIZE, SIZE, 4), np.uint8)
    image[disc] = (200, 30, 30, 255)
    for split, count in zip(("train", "val", "test"), views):
        (root / split).mkdir(parents=True)
        frames = []
        for i in range(count):
            direction = rng.normal(size=3)
            direction[2] = abs(direction[2]) + 0.3  # the upper hemisphere, as NeRF-Synthetic's
            Image.fromarray(image).save(root / split / f"r_{i}.png")
            pose = look_at_origin(RADIUS * direction / np.linalg.norm(direction))
            frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": pose.tolist()})
        meta = {"camera_angle_x": 0.69, "frames": frames}
        (root / f"transforms_{split}.json").write_text(json.dumps(meta))
    return root


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    data = blender_scene(tmp_path_factory.mktemp("blender") / "scene")
    return build_trainer(
        data, tmp_path_factory.mktemp("out"), pipeline__datamanager__dataparser=BlenderDataParserConfig(),
        pipeline__model__max_gaussians=0, pipeline__model__num_downscales=0,
    )  # fmt: skip


def test_training_compares_the_render_with_the_photo_on_the_same_random_background(trainer):
    model = trainer.pipeline.model
    photo = trainer.pipeline.datamanager.cached_train[0]["image"]
    assert photo.shape[-1] == 4  # the alpha is kept, not flattened onto the dataparser's white
    backgrounds, photos_seen = [], []
    render, loss = model.get_outputs, model.loss.forward

    def watched_render(camera):
        outputs = render(camera)
        backgrounds.append(outputs["background"].detach().clone())
        return outputs

    def watched_loss(inputs):
        photos_seen.append(inputs.gt.detach().clone())
        return loss(inputs)

    model.get_outputs, model.loss.forward = watched_render, watched_loss
    try:
        train_steps(trainer, range(4))
    finally:
        del model.get_outputs, model.loss.forward
    assert len(photos_seen) == len(backgrounds) == 4
    for gt, background in zip(photos_seen, backgrounds):
        # every view of this scene is the same disc
        transparent, disc = photo[..., 3] == 0, photo[..., 3] == 255
        assert torch.allclose(gt[transparent], background.expand(int(transparent.sum()), 3))
        assert torch.allclose(gt[disc], torch.tensor([200, 30, 30]) / 255.0)
    backgrounds = torch.stack(backgrounds)
    assert (backgrounds.std(dim=0) > 0.01).all()  # a new random one each step


def test_evaluation_sees_the_photos_on_the_datasets_white(trainer):
    pipeline = trainer.pipeline
    pipeline.eval()
    try:
        camera, batch = next(iter(pipeline.datamanager.fixed_indices_eval_dataloader))
        with torch.no_grad():
            outputs = pipeline.model.get_outputs_for_camera(camera)
        _, images = pipeline.model.get_image_metrics_and_images(outputs, batch)
    finally:
        pipeline.train()
    gt = images["img"][:, :SIZE]  # photo | render, side by side
    transparent = batch["image"][..., 3] == 0
    assert torch.equal(gt[transparent], torch.ones(int(transparent.sum()), 3))
    assert torch.allclose(outputs["background"], torch.ones(SIZE, SIZE, 3))


def test_random_gaussians_fill_the_scene_box(trainer):
    model = trainer.pipeline.model
    assert model.config.num_random == 100_000  # 3DGS's count for the Blender scenes
    means = model.means.detach()
    assert len(means) >= 90_000  # (less what the first steps' pruning removed)
    # Blender's box is [-1.5, 1.5]^3 (splatfacto's default, a cube of side 10, put most outside it)
    assert means.min().item() >= -1.5 - 0.05 and means.max().item() <= 1.5 + 0.05
    assert (means.min(dim=0).values < -1.4).all() and (means.max(dim=0).values > 1.4).all()


def test_thresholds_and_position_learning_rate_scale_with_the_cameras_extent(trainer):
    poses = [f["transform_matrix"] for f in json.loads((trainer.pipeline.datamanager.config.data / "transforms_train.json").read_text())["frames"]]
    centres = np.array(poses)[:, :3, 3]
    extent = 1.1 * np.linalg.norm(centres - centres.mean(axis=0), axis=1).max()  # 3DGS's getNerfppNorm
    model = trainer.pipeline.model
    assert model.scene_scale == pytest.approx(extent, rel=1e-6)
    assert model.strategy_state["scene_scale"] == pytest.approx(extent, rel=1e-6)
    means = trainer.optimizers.optimizers["means"]
    assert means.param_groups[0]["initial_lr"] == pytest.approx(1.6e-4 * extent)
    scheduler = trainer.optimizers.schedulers["means"]
    final = scheduler.lr_lambdas[0](trainer.config.max_num_iterations) * scheduler.base_lrs[0]
    assert final == pytest.approx(1.6e-6 * extent, rel=1e-4)
