"""Copies of the real scene whose training photos were changed in known ways: camera poses moved (for
camera pose optimisation) or colours changed per photo (for the bilateral grid). The test photos and
their poses are the scene's own, so a run is scored against the truth. And what a run made of them:
its cameras' pose errors, its grids' colour gains, its test PSNR."""

import json
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scene import scene_dir
from training import build_trainer, train_steps

from tinysplat_ns.compare.frames import dataset_transform
from tinysplat_ns.core.frames import compose, inverse, transform_cameras


def rotation_about(axis: np.ndarray, degrees: float) -> np.ndarray:
    x, y, z = axis / np.linalg.norm(axis)
    k = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    angle = math.radians(degrees)
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k


def perturbed_scene(dst: Path, degrees=0.0, shift=0.0, stops=0.0, white_balance=0.0, undone=False, seed=0) -> Path:
    """The scene with each training photo (Nerfstudio's default split: 44 of 48) changed:
    - its camera turned by `degrees` about a random axis through its centre, and its centre moved by
      `shift` times the cameras' largest distance from their mean in a random direction (the form of
      Nerfstudio's SO3xR3 correction, so an exact correction exists);
    - its exposure changed by up to `stops` either way and each channel by a further factor of up to
      1 +- `white_balance`, clipped to 8 bits as a camera stores them, saved as PNG. The gains' geometric
      mean over the photos is 1 in each channel: photos fix each one's look only relative to the others.
    `undone`: each stored photo then divided by its gain again, an exact correction that the best
    per-photo correction could reach (what was clipped stays clipped).
    What was done to each photo is in `perturbations.json` beside them (Nerfstudio ignores it)."""
    from nerfstudio.data.utils.dataparsers_utils import get_train_eval_split_fraction

    src = scene_dir()
    meta = json.loads((src / "transforms.json").read_text())
    frames = sorted(meta["frames"], key=lambda frame: frame["file_path"])  # the parser's order
    train, _ = get_train_eval_split_fraction([f["file_path"] for f in frames], 0.9)
    centres = np.array([f["transform_matrix"] for f in frames])[:, :3, 3]
    size = np.linalg.norm(centres - centres.mean(0), axis=1).max()
    gen = np.random.default_rng(seed)
    (dst / "images").mkdir(parents=True)
    (dst / "sparse_pc.ply").symlink_to(src / "sparse_pc.ply")
    gains = {}
    for i, frame in enumerate(frames):
        if i not in train:
            (dst / frame["file_path"]).symlink_to(src / frame["file_path"])
            continue
        pose = np.array(frame["transform_matrix"])
        pose[:3, :3] = rotation_about(gen.normal(size=3), degrees) @ pose[:3, :3]
        direction = gen.normal(size=3)
        pose[:3, 3] += shift * size * direction / np.linalg.norm(direction)
        frame["transform_matrix"] = pose.tolist()
        gains[i] = 2.0 ** gen.uniform(-stops, stops) * gen.uniform(1 - white_balance, 1 + white_balance, size=3)
    common = np.exp(np.mean(np.log(list(gains.values())), axis=0))
    done = {}
    for i, gain in gains.items():
        gain = gain / common
        photo = np.asarray(Image.open(src / frames[i]["file_path"]).convert("RGB"), dtype=np.float64)
        frames[i]["file_path"] = str(Path(frames[i]["file_path"]).with_suffix(".png"))
        done[frames[i]["file_path"]] = {"gain": gain.tolist()}
        stored = np.clip(np.round(photo * gain), 0, 255)
        if undone:
            stored = np.clip(np.round(stored / gain), 0, 255)
        Image.fromarray(stored.astype(np.uint8)).save(dst / frames[i]["file_path"])
    (dst / "transforms.json").write_text(json.dumps({**meta, "frames": frames}, indent=1))
    (dst / "perturbations.json").write_text(json.dumps(done, indent=1))
    return dst


def trained(data, out, steps: int, each=None, **options):
    """`tinysplat-cpu` on `data` for `steps` steps, seeded as `ns-train` seeds a run (its default 42);
    `each(step, loss)` after every step."""
    from nerfstudio.scripts.train import _set_random_seed

    _set_random_seed(42)
    trainer = build_trainer(data, out, **options)
    train_steps(trainer, range(steps), each)
    return trainer


def held_out_psnr(trainer) -> float:
    return trainer.pipeline.get_average_eval_image_metrics()["psnr"]


def pose_errors(trainer, data):
    """Each training camera's pose error against the scene's true one, in degrees and in the run's
    units: [2, cameras]. The pose is the one training left it at (Nerfstudio's correction applied)."""
    datamanager, model = trainer.pipeline.datamanager, trainer.pipeline.model
    cameras = datamanager.train_dataset.cameras
    optimised = []
    for i in range(len(cameras)):
        camera = cameras[i : i + 1]
        camera.metadata = {"cam_idx": i}
        optimised.append(model.camera_optimizer.apply_to_camera(camera).detach()[0])
    optimised = torch.stack(optimised).double()
    truth_meta = json.loads((scene_dir() / "transforms.json").read_text())
    truth = {f["file_path"]: f["transform_matrix"] for f in truth_meta["frames"]}
    names = [str(p.relative_to(data).with_suffix(".jpg")) for p in datamanager.train_dataset.image_filenames]
    true = torch.tensor([truth[name] for name in names], dtype=torch.float64)[:, :3]
    # the run's frame from transforms.json's (Nerfstudio's transform starts from COLMAP's: applied_transform)
    applied = torch.tensor(truth_meta["applied_transform"], dtype=torch.float64)
    true = transform_cameras(true, compose(dataset_transform(datamanager), inverse((applied, 1.0))))
    turn = optimised[:, :3, :3] @ true[:, :3, :3].transpose(1, 2)
    degrees = torch.rad2deg(torch.arccos(((turn.diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2).clamp(-1, 1)))
    return torch.stack([degrees, (optimised[:, :3, 3] - true[:, :3, 3]).norm(dim=-1)])


def grid_gains(trainer, data):
    """Each training photo's bilateral grid as a colour gain per channel: what it makes of grey pixels
    (levels 0.2-0.8, all over the photo) divided by them, averaged; and the gain made to the photo:
    two [photos, 3]. (A grid's cells hold an affine map each, so a gain can show as an offset in a cell
    of one brightness: only the grid's output says what it does.)"""
    from nerfstudio.model_components.lib_bilagrid import slice as slice_grid

    grids = trainer.pipeline.model.bil_grids
    side = torch.linspace(0, 1, 16)
    xy = torch.stack(torch.meshgrid(side, side, indexing="xy"), dim=-1).reshape(-1, 2)
    learned = []
    with torch.no_grad():
        for i in range(grids.grids.shape[0]):
            gains = [
                slice_grid(grids, xy, torch.full((len(xy), 3), level), torch.full((len(xy), 1), i))["rgb"] / level
                for level in (0.2, 0.35, 0.5, 0.65, 0.8)
            ]  # fmt: skip
            learned.append(torch.cat(gains).mean(0))
    made = json.loads((data / "perturbations.json").read_text())
    names = [str(p.relative_to(data)) for p in trainer.pipeline.datamanager.train_dataset.image_filenames]
    return torch.stack(learned), torch.tensor([made[name]["gain"] for name in names])
