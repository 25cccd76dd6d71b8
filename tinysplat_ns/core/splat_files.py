"""Every splat file format TinySplat writes and reads, chosen by name or by the file's name."""

from pathlib import Path
from typing import Callable, Dict, Mapping, NamedTuple, Optional

from torch import Tensor

from tinysplat_ns.core import compressed_ply, ply, sog, spz
from tinysplat_ns.core.ply import Gaussians, SplatFileError


class Format(NamedTuple):
    write: Callable[[Path, Mapping[str, Tensor]], int]
    read: Optional[Callable[[Path], Gaussians]]
    keeps_sh: bool  # whether the SH bands above 0 are written


FORMATS: Dict[str, Format] = {
    "ply": Format(ply.write_ply, ply.read_ply, True),
    "compressed-ply": Format(compressed_ply.write_compressed_ply, compressed_ply.read_compressed_ply, True),
    "spz": Format(spz.write_spz, spz.read_spz, True),
    "sog": Format(sog.write_sog, sog.read_sog, True),
    "splat": Format(ply.write_splat, None, False),  # the 32-byte .splat: colour only
}


def format_of(path: Path) -> Optional[str]:
    """The format a file's name asks for: .ply, .compressed.ply, .spz, .sog, .splat; meta.json, or
    a name with no suffix (a folder), for SOG's loose files. None for anything else."""
    name = path.name.lower()
    if name.endswith(".compressed.ply"):
        return "compressed-ply"
    if name == sog.META or path.suffix == "" or path.is_dir():
        return "sog"
    return {".ply": "ply", ".spz": "spz", ".sog": "sog", ".splat": "splat"}.get(path.suffix.lower())


def _starts_as_ply(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) in (b"ply\n", b"ply\r")
    except OSError:  # a folder, a missing file: its name decides
        return False


def format_read(path: Path) -> Optional[str]:
    """The format `read_splats` reads a file as: a PLY (plain or compressed, told apart by its header)
    whatever its name (scene.ply, foo.bin), anything else by its name."""
    fmt = format_of(path)
    if fmt in ("ply", "compressed-ply") or _starts_as_ply(path):
        _, _, _, elements = ply.read_header(path)
        fmt = "compressed-ply" if ply.is_compressed_ply(elements) else "ply"
    return fmt


def read_splats(path) -> Gaussians:
    """Gaussians from any format that can be read (`format_read`); a one-line SplatFileError otherwise."""
    path = Path(path)
    fmt = format_read(path)
    if fmt == "sog" and path.is_dir() and not (path / sog.META).is_file():
        raise SplatFileError(f"{path}: a folder without {sog.META}; give a splat file or a SOG folder")
    if fmt is None or FORMATS[fmt].read is None:
        readable = ", ".join(name for name, f in FORMATS.items() if f.read is not None)
        raise SplatFileError(f"{path}: not a splat file TinySplat reads ({readable}); convert it with splat-transform")
    return FORMATS[fmt].read(path)


def size_on_disk(path: Path) -> int:
    """Bytes of a written splat file; a SOG folder's meta.json and images together."""
    if path.is_dir() or path.name == sog.META:
        return sum(f.stat().st_size for f in sog.loose_files(path if path.is_dir() else path.parent))
    return path.stat().st_size
