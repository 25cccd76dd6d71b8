"""Point clouds and meshes of a trained run (`tinysplat-export --points`, `--mesh tsdf`, `--mesh
poisson`): time and size of each, and each mesh judged by open3d's ray caster from the run's
held-out cameras, beside what the splat renders there and, where the photos carry alpha (Blender
scenes such as lego), beside the photos' silhouettes.

    .venv/bin/python benchmarks/surfaces.py --load-config outputs/.../config.yml [--keep exports/]
        [--exports points tsdf poisson] [-- tinysplat-export options]

Per mesh: IoU of its silhouette with the photos' alpha (> 0.5), mean and worst view; IoU with the
splat's own opacity (> 0.5); the median |depth difference| / depth where mesh and splat both see a
surface; and whether it closes around the scene's centre (the point nearest every training
camera's optical axis, where the cameras look): the share of training cameras whose pixel on the
centre sees the mesh, and the median |depth difference| / depth there. It also measures the two candidates for the model's `normals` output against the TSDF
mesh's normals (fused from every training view, so a reference no single view's render makes,
smooth-shaded): the rendered depth's differences (what the model outputs) and each Gaussian's
shortest axis turned to the camera and composited as colour is.
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from mesh_referee import angle_degrees, iou, raycast, read_mesh  # noqa: E402

from tinysplat_ns.compare.runs import load_run  # noqa: E402
from tinysplat_ns.core.projection import camera_centers, quat_to_rotmat  # noqa: E402
from tinysplat_ns.core.rasterization import rasterization  # noqa: E402
from tinysplat_ns.tinysplat_model import viewmats_from_c2w  # noqa: E402

BIN = Path(sys.executable).parent
FLAGS = {"points": ["--points"], "tsdf": ["--mesh", "tsdf"], "poisson": ["--mesh", "poisson"]}


def axis_normals(model, viewmat: torch.Tensor, K: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """The other candidate: each Gaussian's shortest axis, turned to face the camera, composited as
    colour and normalised; world space [H, W, 3]."""
    params = model.gauss_params
    rotations = quat_to_rotmat(params["quats"])
    shortest = params["scales"].argmin(dim=-1)
    axes = rotations.gather(2, shortest[:, None, None].expand(-1, 3, 1))[..., 0]
    towards_camera = camera_centers(viewmat[None])[0] - params["means"]
    axes = axes * torch.where((axes * towards_camera).sum(-1, keepdim=True) < 0, -1.0, 1.0)
    render, _, _ = rasterization(
        params["means"], params["quats"], torch.exp(params["scales"]),
        torch.sigmoid(params["opacities"]).squeeze(-1), axes, viewmat[None], K[None], width, height,
    )  # fmt: skip
    return F.normalize(render[0], dim=-1)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--load-config", type=Path, required=True)
    parser.add_argument("--exports", nargs="+", default=list(FLAGS), choices=list(FLAGS))
    parser.add_argument("--keep", type=Path, help="write the files here (default: a temporary folder)")
    parser.add_argument("--max-views", type=int, default=0, help="judge on at most this many held-out views (0: all)")
    parser.add_argument("--min-iou", type=float, default=0.95, help="fail (exit 1) where a mesh's mean IoU with the photos' alpha is below this")
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="after --: options for every tinysplat-export")
    args = parser.parse_args()
    extra = args.extra[1:] if args.extra[:1] == ["--"] else args.extra

    with tempfile.TemporaryDirectory() as temp:
        folder = args.keep or Path(temp)
        files = {}
        print(f"{'export':<8} {'seconds':>8} {'MB':>7}  what")
        for kind in args.exports:
            files[kind] = folder / f"{kind}.ply"
            command = [str(BIN / "tinysplat-export"), "--load-config", str(args.load_config), "--output", str(files[kind])]
            start = time.perf_counter()
            result = subprocess.run(command + FLAGS[kind] + extra, capture_output=True, text=True)
            seconds = time.perf_counter() - start
            if result.returncode != 0:
                raise SystemExit(f"error: tinysplat-export {' '.join(FLAGS[kind])} failed:\n{result.stderr[-2000:]}")
            what = result.stdout.strip().splitlines()[-1].split(" to ")[0].removeprefix("Wrote ")
            print(f"{kind:<8} {seconds:8.1f} {files[kind].stat().st_size / 1e6:7.2f}  {what}", flush=True)
        meshes = {kind: read_mesh(path) for kind, path in files.items() if kind != "points"}
        scores = judge(args.load_config, meshes, args.max_views)
    short = [kind for kind, iou_mean in scores.items() if iou_mean is not None and iou_mean < args.min_iou]
    if short:
        raise SystemExit(f"error: the mean silhouette IoU of {', '.join(short)} is below --min-iou {args.min_iou}")


def judge(config: Path, meshes, max_views: int):
    """Prints the tables; returns each mesh's mean IoU with the photos' alpha (None without alpha)."""
    pipeline, _, _ = load_run(config)
    model, datamanager = pipeline.model, pipeline.datamanager
    cameras = datamanager.eval_dataset.cameras
    count = len(cameras) if max_views <= 0 else min(max_views, len(cameras))
    scores = {kind: {"photo": [], "splat": [], "depth": []} for kind in meshes}
    normal_errors = {"depth gradient": [], "shortest axis": []}
    splat_scores = []
    for i in range(count):
        camera = cameras[i : i + 1]
        with torch.no_grad():
            out = model.get_outputs_for_camera(camera)
        K, viewmat = camera.get_intrinsics_matrices()[0], viewmats_from_c2w(camera.camera_to_worlds)[0]
        height, width = out["accumulation"].shape[:2]
        splat = out["accumulation"][..., 0] > 0.5
        photo = datamanager.cached_eval[i]["image"]
        photo_solid = None
        if photo.shape[-1] == 4:
            photo_solid = photo[..., 3] > (127 if photo.dtype == torch.uint8 else 0.5)
            splat_scores.append(iou(splat, photo_solid))
        for kind, mesh in meshes.items():
            hit, depth, normals = raycast(mesh, K, viewmat, width, height)
            if photo_solid is not None:
                scores[kind]["photo"].append(iou(hit, photo_solid))
            scores[kind]["splat"].append(iou(hit, splat))
            both = hit & splat
            relative = (depth[both] - out["depth"][..., 0][both]).abs() / depth[both]
            scores[kind]["depth"].append(float(relative.median()) if both.any() else float("nan"))
            if kind == "tsdf":
                outputs = {"depth gradient": out["normals"] * 2 - 1}
                with torch.no_grad():
                    outputs["shortest axis"] = axis_normals(model, viewmat, K, width, height)
                defined = both & (outputs["depth gradient"].abs().sum(-1) > 0)
                for name, estimate in outputs.items():
                    normal_errors[name].append(angle_degrees(estimate[defined], normals[defined]))
    centre = looked_at(datamanager.train_dataset.cameras.camera_to_worlds)
    around = {kind: centre_rays(model, datamanager.train_dataset.cameras, mesh, centre) for kind, mesh in meshes.items()}
    print(f"\n{count} held-out views of {config}")
    print(f"{'mesh':<8} {'IoU photo':>10} {'worst':>6} {'IoU splat':>10} {'depth diff':>10} {'centre seen':>11} {'its depth':>9}")
    if splat_scores:
        print(f"{'(splat)':<8} {sum(splat_scores) / len(splat_scores):10.4f} {min(splat_scores):6.3f}")
    for kind, s in scores.items():
        photo = f"{sum(s['photo']) / len(s['photo']):10.4f} {min(s['photo']):6.3f}" if s["photo"] else f"{'-':>10} {'-':>6}"
        depth = torch.tensor(s["depth"]).nanmedian()
        seen, centre_depth = around[kind]
        print(
            f"{kind:<8} {photo} {sum(s['splat']) / len(s['splat']):10.4f} {100 * float(depth):9.2f}% "
            f"{100 * seen:10.1f}% {100 * centre_depth:8.2f}%"
        )
    if normal_errors["depth gradient"]:
        print("\nnormals against the TSDF mesh's (degrees, over pixels both see)")
        for name, errors in normal_errors.items():
            errors = torch.cat(errors)
            print(f"{name:<15} median {float(errors.median()):5.1f}  mean {float(errors.mean()):5.1f}  "
                  f"within 15: {100 * float((errors < 15).float().mean()):5.1f}%")  # fmt: skip
    return {kind: sum(s["photo"]) / len(s["photo"]) if s["photo"] else None for kind, s in scores.items()}


def looked_at(camera_to_worlds: torch.Tensor) -> torch.Tensor:
    """The point nearest every camera's optical axis (least squares): what the cameras look at."""
    origins, axes = camera_to_worlds[:, :3, 3].double(), -F.normalize(camera_to_worlds[:, :3, 2].double(), dim=-1)
    across = torch.eye(3, dtype=torch.float64) - axes[:, :, None] * axes[:, None, :]  # [N, 3, 3]
    return torch.linalg.solve(across.sum(0), (across @ origins[..., None]).sum(0))[:, 0].float()


def centre_rays(model, cameras, mesh, centre: torch.Tensor):
    """(share of the cameras whose pixel on `centre` sees the mesh, median |mesh - splat| / splat
    depth at those pixels)."""
    seen, differences = [], []
    for i in range(len(cameras)):
        camera = cameras[i : i + 1]
        K, viewmat = camera.get_intrinsics_matrices()[0], viewmats_from_c2w(camera.camera_to_worlds)[0]
        x, y, z = viewmat[:3, :3] @ centre + viewmat[:3, 3]
        width, height = int(camera.width), int(camera.height)
        u, v = int(K[0, 0] * x / z + K[0, 2]), int(K[1, 1] * y / z + K[1, 2])
        if z <= 0 or not (0 <= u < width and 0 <= v < height):
            continue
        one_pixel = K.clone()  # a 1x1 image whose pixel is (u, v) of this one
        one_pixel[0, 2] -= u
        one_pixel[1, 2] -= v
        hit, depth, _ = raycast(mesh, one_pixel, viewmat, 1, 1)
        seen.append(bool(hit[0, 0]))
        if hit[0, 0]:
            with torch.no_grad():
                splat = float(model.get_outputs_for_camera(camera)["depth"][v, u, 0])
            differences.append(abs(float(depth[0, 0]) - splat) / splat)
    return sum(seen) / max(len(seen), 1), float(torch.tensor(differences).median()) if differences else float("nan")


if __name__ == "__main__":
    main()
