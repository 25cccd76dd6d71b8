"""Exporting a trained run.

`ply` (default): to a 3DGS .ply, `tinysplat-export` against Nerfstudio's `ns-export gaussian-splat`
on the same checkpoint (whole commands, as a user runs them), and the writers alone on the same
arrays: ours, Nerfstudio 1.1.5's, and the `gsply` package's (a test dependency). The checkpoints are
a 1-step run of the real scene with its Gaussians replaced by N random ones of SH degree 3 (what
is timed does not depend on their values).

`formats`: size, write time and the 4 test views' PSNR of each web format (compressed .ply,
.spz, SOG) written by TinySplat and by splat-transform (its own conversion of the same .ply),
against the plain .ply. The scenes: a 300-step tinysplat-cpu run of the real scene (SH degree 3,
every band trained), each Gaussian split into N / n smaller ones scattered within it, so the
values are a trained scene's and the pictures close to it.

    .venv/bin/python benchmarks/export.py [ply|formats] [--counts 100000 1000000]
"""

import argparse
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import yaml
from common import scene_dir

from tinysplat_ns.core.ply import property_names, write_ply
from tinysplat_ns.core.splat_files import FORMATS, read_splats, size_on_disk

BIN = Path(sys.executable).parent
# per Gaussian, SH degree 3
SHAPES = {
    "means": (3,),
    "scales": (3,),
    "quats": (4,),
    "features_dc": (3,),
    "features_rest": (15, 3),
    "opacities": (1,),
}


def base_run(work: Path, steps: int = 1, *options: str) -> Path:
    subprocess.run(
        [str(BIN / "ns-train"), "tinysplat-cpu", "--data", str(scene_dir()), "--output-dir", str(work),
         "--max-num-iterations", str(steps), "--vis", "tensorboard", "--steps-per-eval-all-images", "0", *options],
        check=True, capture_output=True,
    )  # fmt: skip
    return next(work.rglob("config.yml"))


def run_with_gaussians(base_config: Path, n: int) -> Path:
    """A copy of the run whose checkpoint holds `n` random Gaussians."""
    config = yaml.load(base_config.read_text(), Loader=yaml.Loader)
    checkpoint = torch.load(next(base_config.parent.glob("nerfstudio_models/*.ckpt")), weights_only=False)
    gen = torch.Generator().manual_seed(0)
    for name, shape in SHAPES.items():
        checkpoint["pipeline"][f"_model.gauss_params.{name}"] = torch.randn((n, *shape), generator=gen)
    config.timestamp = f"n{n}"
    models = config.get_checkpoint_dir()
    models.mkdir(parents=True)
    torch.save(checkpoint, models / "step-000000000.ckpt")
    path = models.parent / "config.yml"
    path.write_text(yaml.dump(config))
    return path


def command_seconds(cmd) -> float:
    start = time.perf_counter()
    subprocess.run([str(BIN / cmd[0]), *map(str, cmd[1:])], check=True, capture_output=True)
    return time.perf_counter() - start


def nerfstudio_columns(gaussians):
    """The arrays ns-export hands its writer (its own ordered dict of columns)."""
    n = len(gaussians["means"])
    columns = OrderedDict()
    table = np.concatenate(
        [gaussians["means"], np.zeros((n, 3), np.float32), gaussians["features_dc"],
         gaussians["features_rest"].transpose(0, 2, 1).reshape(n, -1), gaussians["opacities"],
         gaussians["scales"], gaussians["quats"]], axis=1,
    )  # fmt: skip
    for i, name in enumerate(property_names(15)):
        columns[name] = table[:, i : i + 1]
    return columns


def best_of_2(write, path: Path) -> float:
    """Best of two writes of a new file (replacing one would time freeing its cached pages too)."""
    times = []
    for _ in range(2):
        path.unlink(missing_ok=True)
        start = time.perf_counter()
        write()
        times.append(time.perf_counter() - start)
    path.unlink()
    return min(times)


def writer_seconds(n: int, out: Path) -> dict:
    gen = torch.Generator().manual_seed(1)
    gaussians = {name: torch.randn((n, *shape), generator=gen).numpy() for name, shape in SHAPES.items()}
    times = {"ours": best_of_2(lambda: write_ply(out / "ours.ply", gaussians), out / "ours.ply")}
    try:
        import gsply
    except ImportError:
        times["gsply"] = None
    else:
        times["gsply"] = best_of_2(
            lambda: gsply.plywrite(
                out / "gsply.ply", gaussians["means"], gaussians["scales"], gaussians["quats"],
                gaussians["opacities"][:, 0], gaussians["features_dc"], gaussians["features_rest"],
            ),
            out / "gsply.ply",
        )  # fmt: skip
    from nerfstudio.scripts.exporter import ExportGaussianSplat

    columns = nerfstudio_columns(gaussians)
    start = time.perf_counter()
    ExportGaussianSplat.write_ply(str(out / "nerfstudio.ply"), n, columns)
    times["nerfstudio"] = time.perf_counter() - start
    return times


def ply_benchmark(counts, work: Path) -> None:
    base = base_run(work / "base")
    print("whole commands (load the checkpoint, write the .ply), seconds:")
    print(f"{'gaussians':>9} {'tinysplat-export':>16} {'ns-export':>9} {'speed-up':>8}")
    for n in counts:
        config = run_with_gaussians(base, n)
        ours = command_seconds(["tinysplat-export", "--load-config", config, "--output", work / f"ours{n}.ply"])
        theirs = command_seconds(["ns-export", "gaussian-splat", "--load-config", config, "--output-dir", work / f"ns{n}"])
        print(f"{n:>9} {ours:>16.2f} {theirs:>9.2f} {theirs / ours:>7.1f}x", flush=True)
        for path in (work / f"ours{n}.ply", work / f"ns{n}" / "splat.ply"):
            path.unlink()
    print("writers alone on the same arrays, seconds:")
    print(f"{'gaussians':>9} {'ours':>7} {'gsply':>7} {'nerfstudio':>10} {'vs gsply':>8} {'vs nerfstudio':>13}")
    for n in counts:
        t = writer_seconds(n, work)
        if t["gsply"] is None:
            gsply_time, vs_gsply = "-", "(no gsply)"
        else:
            gsply_time, vs_gsply = f"{t['gsply']:.3f}", f"{t['gsply'] / t['ours']:.1f}x"
        vs_nerfstudio = f"{t['nerfstudio'] / t['ours']:.0f}x"
        ours, nerfstudio = t["ours"], t["nerfstudio"]
        print(f"{n:>9} {ours:>7.3f} {gsply_time:>7} {nerfstudio:>10.2f} {vs_gsply:>8} {vs_nerfstudio:>13}")


SUFFIXES = {"compressed-ply": ".compressed.ply", "spz": ".spz", "sog": ".sog"}
SPLAT_TRANSFORM_TIMEOUT_S = 600


def split_gaussians(gaussians: dict, n: int, seed: int = 0) -> dict:
    """n Gaussians from a trained set: each split into about n / len children, scattered within it
    (its own axes and sizes), each 1 / children of its volume; opacity and colour kept."""
    gen = torch.Generator().manual_seed(seed)
    parents = torch.arange(n) % len(gaussians["means"])
    children = n / len(gaussians["means"])
    quats = torch.nn.functional.normalize(gaussians["quats"][parents], dim=1)
    w, x, y, z = quats.unbind(1)
    rotation = torch.stack([
        torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        torch.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ], 1)  # fmt: skip
    offset = torch.randn(n, 3, generator=gen) * 0.5 * gaussians["scales"][parents].exp()
    return {
        "means": gaussians["means"][parents] + (rotation @ offset[:, :, None])[:, :, 0],
        "scales": gaussians["scales"][parents] - np.log(children) / 3,
        "quats": quats,
        "opacities": gaussians["opacities"][parents],
        "features_dc": gaussians["features_dc"][parents],
        "features_rest": gaussians["features_rest"][parents],
    }


def test_view_psnr(pipeline, gaussians: dict) -> float:
    """ns-eval's PSNR on the 4 test views with these Gaussians in the run's model."""
    model, dataset = pipeline.model, pipeline.datamanager.eval_dataset
    model.load_state_dict({f"gauss_params.{k}": v for k, v in gaussians.items()}, strict=False)
    scores = []
    for i in range(len(dataset)):
        with torch.no_grad():
            outputs = model.get_outputs_for_camera(dataset.cameras[i : i + 1])
        scores.append(float(model.get_image_metrics_and_images(outputs, dataset[i])[0]["psnr"]))
    return float(np.mean(scores))


def splat_transform_seconds(source: Path, target: Path):
    """splat-transform's own conversion (the whole process, on the CPU); None past the timeout."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import splat_transform

    start = time.perf_counter()
    try:
        subprocess.run([str(splat_transform.executable()), "-w", "-q", "-g", "cpu", str(source), str(target)],
                       check=True, capture_output=True, timeout=SPLAT_TRANSFORM_TIMEOUT_S)  # fmt: skip
    except subprocess.TimeoutExpired:
        return None
    return time.perf_counter() - start


def formats_benchmark(counts, work: Path) -> None:
    from nerfstudio.utils.eval_utils import eval_setup

    config = base_run(work / "trained", 300, "--pipeline.model.sh-degree-interval", "50")
    _, pipeline, _, step = eval_setup(config, test_mode="val")
    pipeline.model.update_to_step(step)
    trained = {k: v.detach().clone() for k, v in pipeline.model.gauss_params.items()}
    print(f"{len(trained['means']):,} trained Gaussians, split into each count; PSNR on the 4 test views")
    print(f"{'gaussians':>9} {'format':>15} {'writer':>12} {'MB':>8} {'x .ply':>7} {'write s':>8} {'PSNR':>7} {'drop':>6}")
    too_slow = set()  # splat-transform's conversions past the timeout: not tried at larger counts
    for n in counts:
        gaussians = split_gaussians(trained, n)
        plain = work / f"{n}.ply"
        write_seconds = best_of_2(lambda: write_ply(plain, gaussians), plain)
        write_ply(plain, gaussians)
        reference = test_view_psnr(pipeline, read_splats(plain))
        rows = [("ply", "tinysplat", write_seconds, plain.stat().st_size, reference)]
        for fmt, suffix in SUFFIXES.items():
            ours = work / f"{n}.ours{suffix}"
            start = time.perf_counter()
            FORMATS[fmt].write(ours, gaussians)
            rows.append((fmt, "tinysplat", time.perf_counter() - start, size_on_disk(ours),
                         test_view_psnr(pipeline, read_splats(ours))))  # fmt: skip
            theirs = work / f"{n}.theirs{suffix}"
            seconds = None if fmt in too_slow else splat_transform_seconds(plain, theirs)
            if seconds is None:
                too_slow.add(fmt)
                rows.append((fmt, "splat-transform", None, None, None))
            else:
                rows.append((fmt, "splat-transform", seconds, size_on_disk(theirs),
                             test_view_psnr(pipeline, read_splats(theirs))))  # fmt: skip
        for fmt, writer, seconds, size, psnr in rows:
            if seconds is None:
                print(f"{n:>9} {fmt:>15} {writer:>12}  (not done in {SPLAT_TRANSFORM_TIMEOUT_S} s here or at fewer)", flush=True)
                continue
            ratio = size / plain.stat().st_size
            print(f"{n:>9} {fmt:>15} {writer:>12} {size / 1e6:>8.2f} {ratio:>7.3f} {seconds:>8.2f} {psnr:>7.2f} "
                  f"{reference - psnr:>6.3f}", flush=True)  # fmt: skip


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("what", nargs="?", choices=["ply", "formats"], default="ply")
    parser.add_argument("--counts", type=int, nargs="+", default=[100_000, 1_000_000])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        (ply_benchmark if args.what == "ply" else formats_benchmark)(args.counts, Path(tmp))


if __name__ == "__main__":
    main()
