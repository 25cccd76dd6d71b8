"""A Blender-format scene (RGBA photos, no sparse points: NeRF-Synthetic's layout) trains as 3DGS's
recipe does with no flag: the photos' alpha composited onto the dataset's white, which the render is
drawn over, random Gaussians filling the scene box, and the densification thresholds and position
learning rate scaled by the cameras' extent; evaluation sees the photos on the dataset's white."""

import json

import numpy as np
import pytest
import torch
from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig
from scene import BLENDER_SIZE as SIZE
from scene import blender_scene, scene_dir
from training import build_trainer, train_steps

from tinysplat_ns.core.losses.composite import WeightedLoss


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return blender_scene(tmp_path_factory.mktemp("blender") / "scene")


def blender_trainer(data, output_dir, **overrides):
    return build_trainer(
        data, output_dir, pipeline__datamanager__dataparser=BlenderDataParserConfig(),
        pipeline__model__max_gaussians=0, pipeline__model__num_downscales=0, **overrides,
    )  # fmt: skip


@pytest.fixture(scope="module")
def trainer(data, tmp_path_factory):
    return blender_trainer(data, tmp_path_factory.mktemp("out"))


def backgrounds_and_photos_seen(trainer, monkeypatch, steps=4):
    """The background of each training step's render and the photo its loss compared it with."""
    model = trainer.pipeline.model
    backgrounds, photos_seen = [], []
    render, loss = model.get_outputs, WeightedLoss.__call__

    def watched_render(camera):
        outputs = render(camera)
        backgrounds.append(outputs["background"].detach().clone())
        return outputs

    def watched_loss(self, inputs):
        photos_seen.append(inputs.gt.detach().clone())
        return loss(self, inputs)

    monkeypatch.setattr(model, "get_outputs", watched_render)
    monkeypatch.setattr(WeightedLoss, "__call__", watched_loss)
    train_steps(trainer, range(steps))
    monkeypatch.undo()
    assert len(photos_seen) == len(backgrounds) == steps
    return torch.stack(backgrounds), photos_seen


def assert_photos_composited_onto(backgrounds, photos_seen, photo):
    for gt, background in zip(photos_seen, backgrounds):
        # every view of this scene is the same disc
        transparent, disc = photo[..., 3] == 0, photo[..., 3] == 255
        assert torch.allclose(gt[transparent], background.expand(int(transparent.sum()), 3))
        assert torch.allclose(gt[disc], torch.tensor([200, 30, 30]) / 255.0)


def test_training_compares_the_render_with_the_photo_on_the_datasets_white(trainer, monkeypatch):
    """3DGS's NeRF-Synthetic recipe, with no flag: the photos' alpha kept, and training over the white
    they are scored on (lego, 30k steps: docs/benchmarks.md)."""
    photo = trainer.pipeline.datamanager.cached_train[0]["image"]
    assert photo.shape[-1] == 4  # the alpha is kept, not flattened onto the dataparser's white
    backgrounds, photos_seen = backgrounds_and_photos_seen(trainer, monkeypatch)
    assert torch.equal(backgrounds, torch.ones_like(backgrounds))
    assert_photos_composited_onto(backgrounds, photos_seen, photo)
    assert trainer.pipeline.model.strategy._fixed_background  # ADC's extra opacity reset follows


def test_a_random_background_is_one_flag_away(data, tmp_path, monkeypatch):
    trainer = blender_trainer(data, tmp_path, pipeline__model__background_color="random")
    photo = trainer.pipeline.datamanager.cached_train[0]["image"]
    backgrounds, photos_seen = backgrounds_and_photos_seen(trainer, monkeypatch)
    assert_photos_composited_onto(backgrounds, photos_seen, photo)
    assert (backgrounds.std(dim=0) > 0.01).all()  # a new random one each step
    assert not trainer.pipeline.model.strategy._fixed_background


def test_photos_without_alpha_train_over_a_random_background(tmp_path, monkeypatch):
    trainer = build_trainer(scene_dir(), tmp_path)
    assert trainer.pipeline.datamanager.cached_train[0]["image"].shape[-1] == 3
    backgrounds, _ = backgrounds_and_photos_seen(trainer, monkeypatch, steps=3)
    assert (backgrounds.std(dim=0) > 0.01).all()


def test_training_renders_are_not_clamped(trainer):
    """The loss sees a render brighter than 1, as 3DGS's does (a clamp gives such a pixel no gradient,
    and Gaussians brighter than the photo stay so); evaluation and the viewer clamp."""
    model = trainer.pipeline.model
    camera = trainer.pipeline.datamanager.train_dataset.cameras[0:1]
    colours = model.gauss_params["features_dc"].detach().clone()
    try:
        with torch.no_grad():
            model.gauss_params["features_dc"].fill_(10.0)  # SH DC of a colour of 3.3
        training = model.get_outputs(camera)["rgb"]
        model.eval()
        with torch.no_grad():
            shown = model.get_outputs(camera)["rgb"]
    finally:
        model.train()
        with torch.no_grad():
            model.gauss_params["features_dc"].copy_(colours)
    assert training.max() > 1.5
    training.sum().backward()  # a gradient reaches the colours of the too-bright pixels
    assert model.gauss_params["features_dc"].grad.abs().sum() > 0
    for param in model.gauss_params.values():
        param.grad = None
    assert 0 <= shown.min() and shown.max() <= 1


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


def test_normals_output_beside_depth(trainer):
    """What the viewer's output menu offers and `--points` exports: world-space unit normals of the
    rendered surface in 0..1, grey (0.5) where the render is transparent."""
    pipeline = trainer.pipeline
    pipeline.eval()
    try:
        camera = pipeline.datamanager.eval_dataset.cameras[0:1]
        with torch.no_grad():
            outputs = pipeline.model.get_outputs_for_camera(camera)
    finally:
        pipeline.train()
    normals, alpha = outputs["normals"], outputs["accumulation"][..., 0]
    assert normals.shape == (SIZE, SIZE, 3) and normals.min() >= 0 and normals.max() <= 1
    assert (normals[alpha < 0.5] == 0.5).all()
    defined = (normals != 0.5).any(-1)
    assert defined.sum() > SIZE * SIZE / 4
    lengths = (normals[defined] * 2 - 1).norm(dim=-1)
    assert torch.allclose(lengths, torch.ones_like(lengths), atol=1e-4)


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
