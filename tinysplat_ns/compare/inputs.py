"""What a user gives `tinysplat-compare`, checked before Nerfstudio, viser and the runs load (10 s and
more on two cores), so that a mistake is told in a few seconds: the number of sides and the
resolution (at once), then each run's files, the --data folder's layout and each splat file (read
whole, and handed on; torch's import, no more)."""

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

MIN_RESOLUTION, MAX_RESOLUTION = 32, 4096


@dataclass
class SplatFile:
    path: Path
    file_format: str  # as the page names it: ".ply", "compressed .ply", ".spz", "SOG"
    gaussians: dict  # core.ply.Gaussians, in the file's own coordinates


def check_arguments(configs: Sequence[Path], splats: Sequence[Path], max_resolution: int) -> None:
    count = len(configs) + len(splats)
    if not (count == 2 or (count == 1 and splats)):
        sys.exit(
            f"error: got {count} sides; pass two (--load-config RUN/config.yml or --load-splat FILE, "
            "twice or one of each) or one --load-splat FILE"
        )
    if not MIN_RESOLUTION <= max_resolution <= MAX_RESOLUTION:
        sys.exit(f"error: --max-resolution must be {MIN_RESOLUTION} to {MAX_RESOLUTION}, got {max_resolution}")


def checked_inputs(configs: Sequence[Path], splats: Sequence[Path], data: Optional[Path]) -> List[SplatFile]:
    """Every run's files and the dataset's layout checked, then the splat files read (the one slow step)."""
    from tinysplat_ns.compare.datasets import layout_of
    from tinysplat_ns.run_files import check_run

    for config in configs:
        check_run(config)
    if data is not None:
        layout_of(data)
    return [read_splat_file(path) for path in splats]


def read_splat_file(path: Path) -> SplatFile:
    """A one-line error for a file that is no splat, is damaged or holds none."""
    from tinysplat_ns.core.ply import SplatFileError
    from tinysplat_ns.core.splat_files import format_read, read_splats

    try:
        gaussians = read_splats(path)
    except SplatFileError as e:
        sys.exit(f"error: --load-splat {e}")
    except OSError as e:
        sys.exit(f"error: --load-splat {path}: {e.strerror or e}")
    if len(gaussians["means"]) == 0:
        sys.exit(f"error: --load-splat {path}: holds no Gaussians")
    fmt = format_read(path)
    return SplatFile(path, {"compressed-ply": "compressed .ply", "sog": "SOG"}.get(fmt, f".{fmt}"), gaussians)
