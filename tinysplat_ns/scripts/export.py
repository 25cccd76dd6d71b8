"""`tinysplat-export`: a trained run's Gaussians as a standard 3DGS `.ply` or in a web viewer's
format (compressed `.ply`, `.spz`, SOG, `.splat`), written whole with numpy, with optional filters;
or, with `--points` / `--mesh tsdf|poisson`, the surface its training views render (what
`ns-export pointcloud|tsdf|poisson` make of a NeRF)."""

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional, Tuple

import tyro
from typing_extensions import Annotated

from tinysplat_ns.child_processes import stop_children_at_exit
from tinysplat_ns.core.ply import finite_rows, in_box, ply_size, select, sh_degree_of
from tinysplat_ns.core.splat_files import FORMATS, format_of, size_on_disk

Vector3 = Tuple[float, float, float]


@dataclass
class ExportSplats:
    """Write the Gaussians of a TinySplat (or splatfacto) run as a 3DGS .ply, a compressed .ply, an
    .spz, a SOG (.sog, or a folder) or a .splat; or with --points / --mesh, a TinySplat run's surface
    as a coloured point cloud with normals, or a TSDF or Poisson mesh (.ply, .obj or .glb)."""

    load_config: Path
    """The run's config.yml (as for ns-viewer and ns-export)."""
    output: Path
    """The file to write, e.g. export/scene.ply, scene.compressed.ply, scene.spz, scene.sog, or a
    folder (or .../meta.json) for SOG's loose files."""
    format: Optional[Literal["ply", "compressed-ply", "spz", "sog", "splat"]] = None
    """ply: the standard 3DGS file; compressed-ply: SuperSplat's (16 bytes a Gaussian + SH);
    spz: Niantic's (version 3); sog: PlayCanvas' WebP images + meta.json; splat: the 32-byte web
    format (colour only). All but splat keep every SH band. Default: from the output's name."""
    frame: Literal["run", "data"] = "run"
    """Coordinates to write in: "run": the run's own (as ns-export writes); "data": the dataset's
    original ones, e.g. COLMAP's (as Inria's 3DGS writes), via the run's dataparser_transforms.json."""
    min_opacity: float = 1 / 255
    """Drop Gaussians whose opacity is below this (the default drops those the rasterizers skip, as
    ns-export does; 0 keeps all)."""
    crop_min: Optional[Vector3] = None
    """Keep only Gaussians whose centre is at or above this corner (x y z, in the run's frame)."""
    crop_max: Optional[Vector3] = None
    """Keep only Gaussians whose centre is at or below this corner."""
    points: bool = False
    """Write a point cloud instead: the opaque pixels of the training views' renders, back-projected
    by their depth, with colours and normals."""
    mesh: Optional[Literal["tsdf", "poisson"]] = None
    """Write a mesh instead: "tsdf": the training views' depth fused in a TSDF (open3d), with
    colours; "poisson": a Poisson surface (open3d) fitted to the point cloud of --points."""
    num_points: int = 1_000_000
    """--points, --mesh poisson: how many points to draw from the views (evenly), before outliers go."""
    resolution: int = 384
    """--mesh tsdf: voxels along the longest side of the TSDF's cube, which spans the crop box (both
    corners given) or else the dataset's scene box (2.7 GB of memory at 384, 0.8 GB at 256)."""
    poisson_depth: int = 9
    """--mesh poisson: the octree depth (detail doubles with each level)."""
    downscale: float = 1.0
    """--points, --mesh: render the training views at 1/downscale of their photos' resolution."""

    def main(self) -> None:
        if self.points or self.mesh:
            self.export_surface()
            return
        fmt = self.format or format_of(self.output)
        if fmt is None:
            sys.exit(
                f"error: {self.output}: unknown format; end it in .ply, .compressed.ply, .spz, .sog or .splat "
                "(a folder for SOG's loose files), or pass --format"
            )
        if not 0 <= self.min_opacity < 1:
            sys.exit(f"error: --min-opacity must be at least 0 and below 1, got {self.min_opacity}")
        if not self.load_config.is_file():
            sys.exit(f"error: {self.load_config}: no such file; pass the config.yml of a run (outputs/.../config.yml)")

        from tinysplat_ns.core.frames import inverse, transform_gaussians
        from tinysplat_ns.run_files import dataparser_transform, load_gaussians

        start = time.perf_counter()
        gaussians, step = load_gaussians(self.load_config)
        total = len(gaussians["means"])
        keep = finite_rows(gaussians)
        dropped = {"not finite": int((~keep).sum())}
        if self.min_opacity > 0:
            # compared as logits, as ns-export does, so the two drop the same Gaussians
            opaque = gaussians["opacities"].squeeze(-1) >= math.log(self.min_opacity / (1 - self.min_opacity))
            dropped["below --min-opacity"] = int((keep & ~opaque).sum())
            keep &= opaque
        if self.crop_min is not None or self.crop_max is not None:
            inside = in_box(gaussians["means"], self.crop_min, self.crop_max)
            dropped["outside the crop box"] = int((keep & ~inside).sum())
            keep &= inside
        gaussians = select(gaussians, keep)
        if self.frame == "data":
            gaussians = transform_gaussians(gaussians, inverse(dataparser_transform(self.load_config)))
        if fmt == "sog" and not len(gaussians["means"]):
            sys.exit(f"error: {self.output}: no Gaussians left to write, and SOG images cannot be empty; relax the filters")
        self.output.parent.mkdir(parents=True, exist_ok=True)
        count = FORMATS[fmt].write(self.output, gaussians)
        seconds = time.perf_counter() - start
        dropped_text = ", ".join(f"{n:,} {why}" for why, n in dropped.items() if n)
        degree = sh_degree_of(gaussians) if FORMATS[fmt].keeps_sh else 0
        size, plain = size_on_disk(self.output), ply_size(count, gaussians["features_rest"].shape[1])
        print(
            f"Wrote {count:,} of {total:,} Gaussians (SH degree {degree}, step {step}) to {self.output} "
            f"in {seconds:.2f} s: {size / 1e6:.2f} MB"
            + (f", {size / plain:.3f} x the plain .ply's {plain / 1e6:.2f} MB" if fmt != "ply" else "")
            + (f"; dropped {dropped_text}" if dropped_text else "")
        )

    def export_surface(self) -> None:
        from tinysplat_ns import meshing
        from tinysplat_ns.core.frames import inverse
        from tinysplat_ns.run_files import dataparser_transform, read_config

        kind = "points" if self.points else self.mesh
        suffixes = (".ply", ".pcd") if self.points else (".ply", ".obj", ".glb")
        if self.points and self.mesh:
            sys.exit("error: --points and --mesh write different files; pass one of them")
        if self.output.suffix.lower() not in suffixes:
            sys.exit(f"error: {self.output}: a {kind} file ends in {' or '.join(suffixes)}; rename it")
        for name, value in (("num-points", self.num_points), ("resolution", self.resolution), ("downscale", self.downscale)):
            if value is not None and value <= 0:
                sys.exit(f"error: --{name} must be above 0, got {value}")
        method = read_config(self.load_config).get("method_name")
        if not str(method).startswith("tinysplat"):
            sys.exit(
                f"error: {self.load_config}: a {method} run; --points and --mesh render TinySplat runs "
                "(a NeRF's surface: ns-export pointcloud|tsdf|poisson)"
            )
        from tinysplat_ns.compare.runs import load_run

        start = time.perf_counter()
        pipeline, _, step = load_run(self.load_config)
        cameras = pipeline.datamanager.train_dataset.cameras
        surface, detail = meshing.surface_of_run(
            pipeline, kind, num_points=self.num_points, resolution=self.resolution,
            poisson_depth=self.poisson_depth, downscale=self.downscale, crop_min=self.crop_min, crop_max=self.crop_max,
        )  # fmt: skip
        if surface is None:
            where = (
                "inside the crop box (widen --crop-min/--crop-max)" if self.crop_min is not None or self.crop_max is not None
                else "opaque in the training views (train the run longer)"
            )  # fmt: skip
            sys.exit(f"error: {self.load_config}: no surface {where}; nothing written to {self.output}")
        if self.frame == "data":
            meshing.move_to_frame(surface, inverse(dataparser_transform(self.load_config)))
        self.output.parent.mkdir(parents=True, exist_ok=True)
        meshing.write(surface, self.output)
        size = size_on_disk(self.output)
        counts = (
            f"{len(surface.points):,} points" if self.points
            else f"{len(surface.vertices):,} vertices, {len(surface.triangles):,} triangles"
        )  # fmt: skip
        width, height = int(cameras.width[0] / self.downscale), int(cameras.height[0] / self.downscale)
        print(
            f"Wrote {'a point cloud' if self.points else f'a {self.mesh.upper()} mesh'} of {counts} ({detail}; step {step}, "
            f"{len(cameras)} training views at about {width}x{height}) to {self.output} in "
            f"{time.perf_counter() - start:.1f} s: {size / 1e6:.2f} MB"
        )


def entrypoint() -> None:
    stop_children_at_exit()
    tyro.cli(Annotated[ExportSplats, tyro.conf.FlagCreatePairsOff]).main()


if __name__ == "__main__":
    entrypoint()
