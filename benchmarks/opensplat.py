"""OpenSplat (C++ on libtorch, `--cpu`) beside `ns-train tinysplat-cpu` as whole trainers on the bundled
scene: the same 44 training photos at full resolution, the same number of steps (one photo each), wall
time of each, and both scored on the 4 held-out photos by the same code: Nerfstudio's
`get_average_eval_image_metrics` (what `ns-eval` runs) on our renderer, OpenSplat's `.ply` loaded as a
TinySplat model's Gaussians.

    bash ../shared/peers/build_opensplat.sh /tmp/opensplat     # once: its binary (never our dependency)
    .venv/bin/python benchmarks/opensplat.py --opensplat /tmp/opensplat/OpenSplat/build/opensplat [--steps 2000]
    .venv/bin/python benchmarks/opensplat.py --opensplat ... --val-image frame_00020.png   # the scoring checked
    .venv/bin/python benchmarks/opensplat.py --opensplat ... --val-image 0020.jpg --compare-side --steps 300

With `--compare-side`, OpenSplat trains on the scene's COLMAP model instead (`sparse/0`, all photos but
`--val-image`), so its `.ply` (`--keep-crs`) is in COLMAP's frame, the one `tinysplat-compare --load-splat
FILE --data SCENE` takes by default; the script loads it as the compare page does, in that frame and in
the other, and prints each test view's score beside OpenSplat's own render of the held-out photo.

With `--val-image` (one of the held-out photos) OpenSplat also renders that photo's view itself
(`--val-render`, every 10 steps, which slows it: no timing then) and the script prints the PSNR of its
last render and of ours of its `.ply` on that view, against the photo: how far our scoring of its
`.ply` is from its own picture.

What OpenSplat is given: a copy of the scene holding only the training frames, with the top-level
`camera_model` its reader needs. Its `.ply` (`--keep-crs`) is in transforms.json's frame, where the
poses and `sparse_pc.ply` are. That is not the frame TinySplat's `--pipeline.model.init-ply-frame data`
takes: Nerfstudio's dataparser_transform starts from the dataset's original frame (COLMAP's), before
transforms.json's `applied_transform`. So the `.ply` is first moved back by the inverse of
`applied_transform` (positions, orientations and SH; `core/frames.py`). Loaded without that step it
scored 10-12 dB on every view, its own training views included.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import psnr, scene_dir

from tinysplat_ns.core.frames import inverse, transform_gaussians
from tinysplat_ns.core.ply import write_ply
from tinysplat_ns.core.splat_files import read_splats

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from training import build_trainer  # noqa: E402

BIN = Path(sys.executable).parent


def training_frames(scene: Path):
    """The frames of Nerfstudio's train split of `scene` (its nerfstudio-data parser's own choice)."""
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    outputs = NerfstudioDataParserConfig(data=scene).setup().get_dataparser_outputs("train")
    return {Path(f).name for f in outputs.image_filenames}


def opensplat_scene(scene: Path, dst: Path, extra: str = None) -> Path:
    shutil.copytree(scene, dst)
    meta = json.loads((scene / "transforms.json").read_text())
    train = training_frames(scene) | ({extra} if extra else set())
    meta["frames"] = [f for f in meta["frames"] if Path(f["file_path"]).name in train]
    meta["camera_model"] = meta["frames"][0].get("camera_model", "OPENCV")
    (dst / "transforms.json").write_text(json.dumps(meta, indent=2))
    return dst


def in_dataset_frame(ply: Path, scene: Path, dst: Path) -> Path:
    """`ply`, in transforms.json's frame, moved into the dataset's original one."""
    applied = json.loads((scene / "transforms.json").read_text()).get("applied_transform")
    if applied is None:
        return ply
    gaussians = transform_gaussians(read_splats(ply), inverse((torch.tensor(applied, dtype=torch.float64), 1.0)))
    write_ply(dst, gaussians)
    return dst


def timed_run(cmd, log: Path) -> float:
    start = time.perf_counter()
    with open(log, "w") as out:
        subprocess.run([str(c) for c in cmd], check=True, stdout=out, stderr=subprocess.STDOUT)
    return time.perf_counter() - start


def pipeline_of_ply(ply: Path, out: Path):
    """A TinySplat pipeline, in eval mode, whose Gaussians are `ply`'s (in the data frame)."""
    trainer = build_trainer(
        scene_dir(), out, pipeline__model__init_ply=ply, pipeline__model__init_ply_frame="data",
        pipeline__model__num_downscales=0,
    )  # fmt: skip
    # the model renders SH up to min(step / interval, degree): all of the .ply's bands (OpenSplat's
    # unreached ones are zero)
    trainer.pipeline.model.step = 1 << 30
    trainer.pipeline.eval()
    return trainer.pipeline


def scores_of_ply(pipeline):
    """PSNR and SSIM on the held-out photos of TinySplat's renders of `pipeline_of_ply`'s Gaussians."""
    with torch.no_grad():
        metrics = pipeline.get_average_eval_image_metrics()
    return metrics["psnr"], metrics["ssim"], len(pipeline.model.means)


def scores_by_its_rasterizer(pipeline, ply: Path, scene: Path):
    """PSNR and SSIM on `pipeline`'s held-out photos, by its metrics as above, of `ply` (--keep-crs, which
    `scene` trained) drawn as OpenSplat's CPU rasterizer draws it (opensplat_conventions.py: its
    compositing order)."""
    from opensplat_conventions import its_scale, render_frame

    model, dataset = pipeline.model, pipeline.datamanager.eval_dataset
    frames = {Path(f["file_path"]).name: f for f in json.loads((scene_dir() / "transforms.json").read_text())["frames"]}
    scale = its_scale(json.loads((scene / "transforms.json").read_text())["frames"])
    gaussians = read_splats(ply)
    scores = []
    for index, filename in enumerate(dataset.image_filenames):
        image = render_frame(gaussians, frames[Path(filename).name], scale)
        outputs = {"rgb": image.clamp(max=1.0), "background": model.background_color}
        scores.append(model.get_image_metrics_and_images(outputs, dataset[index])[0])
    return sum(s["psnr"] for s in scores) / len(scores), sum(s["ssim"] for s in scores) / len(scores)


def trained_with_val_render(args, scene: Path, tmp: Path):
    """OpenSplat trained on `scene` (`--keep-crs`), `args.val_image` held out and rendered by it: its `.ply`,
    the step of its last render, that render and the photo ([H, W, 3] in 0..1)."""
    import imageio.v3 as iio

    ply, renders = tmp / "opensplat.ply", tmp / "renders"
    timed_run(
        [args.opensplat, scene, "--cpu", "-n", args.steps, "--num-downscales", "0", "--keep-crs", "-o", ply,
         "--val", "--val-image", args.val_image, "--val-render", renders],
        tmp / "opensplat.log",
    )  # fmt: skip
    last = max(renders.glob("*.png"), key=lambda f: int(f.stem))
    photo = torch.from_numpy(iio.imread(scene_dir() / "images" / args.val_image)[..., :3]).float() / 255
    own = torch.from_numpy(iio.imread(last)[..., :3]).float() / 255
    return ply, last.stem, own, photo


def check_one_view(args, tmp: Path):
    """OpenSplat's own render of the held-out `args.val_image` against ours of its `.ply` and against its
    `.ply` drawn by its CPU rasterizer's rules (opensplat_conventions.py)."""
    from opensplat_conventions import its_scale, render_frame

    scene = opensplat_scene(scene_dir(), tmp / "scene", extra=args.val_image)
    ply, step, own, photo = trained_with_val_render(args, scene, tmp)
    pipeline = pipeline_of_ply(in_dataset_frame(ply, scene, tmp / "data.ply"), tmp / "score")
    dataset = pipeline.datamanager.eval_dataset
    index = [Path(f).name for f in dataset.image_filenames].index(args.val_image)
    with torch.no_grad():
        ours = pipeline.model.get_outputs_for_camera(dataset.cameras[index : index + 1])["rgb"]
    frames = json.loads((scene / "transforms.json").read_text())["frames"]
    frame = next(f for f in frames if Path(f["file_path"]).name == args.val_image)
    drawn = render_frame(read_splats(ply), frame, its_scale(frames))
    print(f"held-out {args.val_image} after {args.steps} steps: OpenSplat's own render (step {step}) "
          f"{psnr(own, photo):.2f} dB, ours of its .ply {psnr(ours, photo):.2f} dB ({psnr(ours, own):.2f} dB from "
          f"its render), its .ply by its rules {psnr(drawn, photo):.2f} dB "
          f"({psnr(drawn, own):.2f} dB from it)")  # fmt: skip


def check_compare_side(args, tmp: Path):
    """OpenSplat's `.ply` from the COLMAP model, scored as a `tinysplat-compare` side (`--data` the scene)
    in the data frame and in the run frame, beside its own render of the held-out `args.val_image`."""
    from tinysplat_ns.compare.scoring import image_metrics
    from tinysplat_ns.compare.sides import load_sides

    scene = tmp / "colmap_scene"
    scene.mkdir()
    for part in ("images", "sparse"):
        (scene / part).symlink_to(scene_dir() / part)
    ply, step, own, photo = trained_with_val_render(args, scene, tmp)
    print(f"OpenSplat, {args.steps} steps on the COLMAP model without {args.val_image}: its own render of it "
          f"(step {step}) {psnr(own, photo):.2f} dB")
    for frame in ("data", "run"):
        sides, views, warnings = load_sides([], [ply], scene_dir(), frame)
        scores = [f"{view.name} {image_metrics(sides[0].render(view.camera), view.photo)['psnr']:.2f}" for view in views]
        print(f"  its .ply as a compare side, --splat-frame {frame}: {', '.join(scores)} dB; warnings: {warnings or 'none'}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--opensplat", type=Path, required=True, help="OpenSplat's binary")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--val-image", help="a held-out photo: check the scoring on it instead of timing")
    parser.add_argument("--compare-side", action="store_true", help="with --val-image: its .ply as a compare side")
    args = parser.parse_args()
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.val_image:
            return (check_compare_side if args.compare_side else check_one_view)(args, tmp)
        scene = opensplat_scene(scene_dir(), tmp / "scene")
        ply = tmp / "opensplat.ply"
        os_seconds = timed_run(  # its default threads: libtorch's, one per core
            [args.opensplat, scene, "--cpu", "-n", args.steps, "--num-downscales", "0", "--keep-crs", "-o", ply],
            tmp / "opensplat.log",
        )
        pipeline = pipeline_of_ply(in_dataset_frame(ply, scene, tmp / "data.ply"), tmp / "score")
        os_psnr, os_ssim, os_count = scores_of_ply(pipeline)
        own_psnr, own_ssim = scores_by_its_rasterizer(pipeline, ply, scene)

        ts_seconds = timed_run(
            [BIN / "ns-train", "tinysplat-cpu", "--data", scene_dir(), "--output-dir", tmp / "ts", "--vis",
             "tensorboard", "--max-num-iterations", args.steps, "--steps-per-eval-all-images", "0"],
            tmp / "tinysplat.log",
        )  # fmt: skip
        config = next((tmp / "ts").rglob("config.yml"))
        subprocess.run(
            [str(BIN / "ns-eval"), "--load-config", str(config), "--output-path", str(tmp / "eval.json")],
            check=True, capture_output=True,
        )  # fmt: skip
        results = json.loads((tmp / "eval.json").read_text())["results"]
        checkpoint = sorted(config.parent.glob("nerfstudio_models/*.ckpt"))[-1]
        ts_count = len(torch.load(checkpoint, map_location="cpu")["pipeline"]["_model.gauss_params.means"])

    print(f"{args.steps} steps on the 44 training photos at 300x400, {threads} threads ({os.cpu_count()} cores)")
    print(f"{'trainer':>22} {'wall s':>7} {'test PSNR':>9} {'SSIM':>6} {'Gaussians':>9}")
    print(f"{'OpenSplat --cpu':>22} {os_seconds:>7.0f} {os_psnr:>9.2f} {os_ssim:>6.3f} {os_count:>9}")
    print(f"{'  drawn by its own':>22} {'':>7} {own_psnr:>9.2f} {own_ssim:>6.3f}")
    print(f"{'tinysplat-cpu':>22} {ts_seconds:>7.0f} {results['psnr']:>9.2f} {results['ssim']:>6.3f} {ts_count:>9}")
    print(f"OpenSplat's wall time / tinysplat-cpu's: {os_seconds / ts_seconds:.1f}x; tinysplat-cpu's PSNR - "
          f"OpenSplat's: {results['psnr'] - os_psnr:+.2f} dB ({results['psnr'] - own_psnr:+.2f} dB against its "
          "own rasterizer's pictures)")  # fmt: skip


if __name__ == "__main__":
    main()
