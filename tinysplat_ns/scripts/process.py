"""`tinysplat-process`: from a folder of photos to a scene `ns-train tinysplat` reads, with COLMAP's
structure-from-motion run through pycolmap's wheels (no COLMAP program to install): SIFT features,
matching, incremental mapping; then Nerfstudio's own writer for transforms.json and sparse_pc.ply."""

import hashlib
import json
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Literal

import tyro
from typing_extensions import Annotated

from tinysplat_ns.child_processes import stop_children_at_exit

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"}
# up to this many photos every pair is matched; beyond it they are taken as video frames in order
EXHAUSTIVE_LIMIT = 200


@dataclass
class ProcessPhotos:
    """Photos -> poses and sparse points (pycolmap), in the Nerfstudio-data layout."""

    images: Path
    """The folder of photos."""
    output: Path
    """The scene folder to write: images/, transforms.json, sparse_pc.ply, sparse/0/."""
    matcher: Literal["auto", "exhaustive", "sequential"] = "auto"
    """Which photo pairs to match: "exhaustive" all pairs, "sequential" each with its next ones in
    name order (video frames); "auto": exhaustive up to 200 photos, sequential beyond."""
    camera_model: Literal["SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV"] = "SIMPLE_RADIAL"
    """COLMAP camera model (lens distortion: RADIAL, OPENCV)."""
    single_camera: bool = True
    """All photos come from one camera with one zoom setting (shared intrinsics); False: per photo."""
    max_image_size: int = 3200
    """Photos are scaled down to this longest side for feature extraction."""
    sift_peak_threshold: float = 0.003
    """SIFT's contrast threshold. COLMAP's default, 0.0067, found too few features to register 13 of
    the 48 small (300x400) photos of the bundled scene; 0.003 registers all of them."""
    num_downscales: int = 0
    """Also write images_2, images_4, ... (halved each time), for --downscale-factor in ns-train."""

    def main(self) -> None:
        import pycolmap

        pycolmap.logging.minloglevel = 2  # errors only: the stages report progress here
        photos = check_photos(self.images)
        self.output.mkdir(parents=True, exist_ok=True)
        image_dir = self.output / "images"
        image_dir.mkdir(exist_ok=True)
        for photo in photos:
            target = image_dir / photo.name
            if not target.exists() or size_and_time(target) != size_and_time(photo):
                shutil.copy2(photo, target)  # (keeps the time stamp)
        matcher = self.matcher
        if matcher == "auto":
            matcher = "exhaustive" if len(photos) <= EXHAUSTIVE_LIMIT else "sequential"

        times: Dict[str, float] = {}
        database = self.output / "database.db"
        fingerprint = self._fingerprint(photos, matcher)
        stamp = self.output / "database.json"
        if database.exists() and stamp.exists() and json.loads(stamp.read_text()) == fingerprint:
            print(f"Features and matches: reusing {database} (same photos and options)")
        else:
            database.unlink(missing_ok=True)
            stamp.unlink(missing_ok=True)
            with stage("Extracting SIFT features", times, "features"):
                reader = pycolmap.ImageReaderOptions()
                reader.camera_model = self.camera_model
                extraction = pycolmap.FeatureExtractionOptions()
                extraction.max_image_size = self.max_image_size
                extraction.sift.peak_threshold = self.sift_peak_threshold
                mode = pycolmap.CameraMode.SINGLE if self.single_camera else pycolmap.CameraMode.PER_IMAGE
                pycolmap.extract_features(
                    database, image_dir, image_names=[p.name for p in photos], camera_mode=mode,
                    reader_options=reader, extraction_options=extraction, device=pycolmap.Device.cpu,
                )  # fmt: skip
            with stage(f"Matching ({matcher})", times, "matching"):
                if matcher == "exhaustive":
                    pycolmap.match_exhaustive(database, device=pycolmap.Device.cpu)
                else:
                    pycolmap.match_sequential(database, device=pycolmap.Device.cpu)
            stamp.write_text(json.dumps(fingerprint))

        reconstruction = self._map(database, image_dir, len(photos), times)
        registered = {image.name for image in reconstruction.images.values() if image.has_pose}
        missing = [p.name for p in photos if p.name not in registered]
        if len(registered) < 3:
            sys.exit(
                f"error: {self.images}: only {len(registered)} of {len(photos)} photos could be placed; "
                "take more photos with overlapping views (or lower --sift-peak-threshold)"
            )

        with stage("Writing transforms.json and sparse_pc.ply", times, "writing"):
            from nerfstudio.process_data.colmap_utils import colmap_to_json
            from nerfstudio.process_data.process_data_utils import downscale_images

            model_dir = self.output / "sparse" / "0"
            model_dir.mkdir(parents=True, exist_ok=True)
            reconstruction.write(model_dir)
            colmap_to_json(recon_dir=model_dir, output_dir=self.output)
            for name in missing:  # not in the scene: ns-train's colmap parser would look for them
                (image_dir / name).unlink()
            if self.num_downscales > 0:
                downscale_images(image_dir, self.num_downscales, folder_name="images")

        print(
            f"\nPlaced {len(registered)} of {len(photos)} photos, {reconstruction.num_points3D():,} points, mean "
            f"reprojection error {reconstruction.compute_mean_reprojection_error():.2f} px"
        )
        if missing:
            print(f"Not placed (left out of the scene): {', '.join(missing)}")
        print("Stage times: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in times.items()))
        print(f"Next: ns-train tinysplat --data {self.output}")

    def _fingerprint(self, photos: List[Path], matcher: str) -> dict:
        """What the features and matches depend on: the photos and the options."""
        digest = hashlib.sha256()
        for photo in photos:
            digest.update(f"{photo.name}:{size_and_time(photo)}\n".encode())
        options = {k: v for k, v in asdict(self).items() if k not in ("images", "output", "num_downscales")}
        return {"photos": digest.hexdigest(), "matcher": matcher, **{k: str(v) for k, v in options.items()}}

    def _map(self, database: Path, image_dir: Path, count: int, times: Dict[str, float]):
        """Incremental mapping; the largest model (most photos placed) wins."""
        import pycolmap
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        options = pycolmap.IncrementalPipelineOptions()
        options.random_seed = 0  # the same photos give the same poses
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as models, Progress(
            TextColumn("Mapping: photos placed"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
        ) as progress:  # fmt: skip
            task = progress.add_task("map", total=count)
            results = pycolmap.incremental_mapping(
                database, image_dir, models, options=options,
                initial_image_pair_callback=lambda: progress.advance(task, 2),
                next_image_callback=lambda: progress.advance(task, 1),
            )  # fmt: skip
        times["mapping"] = time.perf_counter() - start
        if not results:
            sys.exit(
                f"error: {self.images}: no two photos could be matched into a model; take more photos with "
                "overlapping views (or lower --sift-peak-threshold)"
            )
        return max(results.values(), key=lambda model: model.num_reg_images())


@contextmanager
def stage(title: str, times: Dict[str, float], key: str):
    """A named stage shown with a spinner, its time recorded under `key`."""
    from nerfstudio.utils.rich_utils import CONSOLE

    start = time.perf_counter()
    with CONSOLE.status(f"[bold]{title}..."):
        yield
    times[key] = time.perf_counter() - start
    print(f"{title}: done in {times[key]:.1f} s")


def size_and_time(path: Path):
    status = path.stat()
    return status.st_size, int(status.st_mtime)


def check_photos(folder: Path) -> List[Path]:
    """The photos in `folder`, each one decodable; else one line naming what is wrong."""
    from PIL import Image

    if not folder.is_dir():
        sys.exit(f"error: {folder}: no such folder; pass --images <folder of photos>")
    photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not photos:
        sys.exit(f"error: {folder}: no photos ({', '.join(sorted(IMAGE_SUFFIXES))}); pass the folder that holds them")
    broken = []
    for photo in photos:
        try:
            with Image.open(photo) as image:
                image.load()
        except Exception:  # PIL raises many types for a broken file
            broken.append(photo.name)
    if broken:
        sys.exit(f"error: {folder}: cannot decode {', '.join(broken)}; replace or remove them")
    return photos


def entrypoint() -> None:
    stop_children_at_exit()
    tyro.cli(Annotated[ProcessPhotos, tyro.conf.FlagConversionOff]).main()


if __name__ == "__main__":
    entrypoint()
