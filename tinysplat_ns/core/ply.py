"""The standard 3DGS `.ply` (the layout Inria's 3DGS and Nerfstudio write), written and read whole
with numpy structured arrays, and the 32-byte `.splat` web format.

Gaussians travel as a dict of float32 tensors under the model's parameter names: `means` [N, 3],
`scales` [N, 3] (log), `quats` [N, 4] (w x y z, as stored), `opacities` [N, 1] (logit), `features_dc`
[N, 3] and `features_rest` [N, K, 3] (SH coefficients, degree-major as the rasterizer takes them;
the file stores them channel-major).
"""

import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from tinysplat_ns.core.sh import SH_C0

Gaussians = Dict[str, Tensor]
# the Gaussians' parameters, under splatfacto's names (which Nerfstudio's viewer and exporter read)
PARAMETERS = ("means", "scales", "quats", "features_dc", "features_rest", "opacities")

_PLY_TYPES = {  # PLY scalar type names (both spellings) -> numpy
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip
_FLOAT_TYPES = {"f4", "f8"}
_MAX_HEADER = 1 << 16
_DEGREE_OF_REST = {0: 0, 3: 1, 8: 2, 15: 3}  # SH coefficients per channel beyond degree 0 -> degree


class SplatFileError(ValueError):
    """A file that is not a readable splat file of its format; the message is one line naming the
    file and the fix."""


def property_names(num_rest: int) -> List[str]:
    """The standard property order; `num_rest` SH coefficients per channel beyond degree 0."""
    return (
        ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
        + [f"f_rest_{i}" for i in range(3 * num_rest)]
        + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    )


def _as_numpy(value) -> np.ndarray:
    if isinstance(value, Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float32)


def as_tensors(arrays: Mapping[str, np.ndarray]) -> Gaussians:
    """Decoded arrays as the float32 tensors the model takes."""
    return {name: torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)) for name, value in arrays.items()}


def finite_rows(gaussians: Mapping[str, Tensor]) -> Tensor:
    """Rows whose every value is finite (a long run can leave a few NaN Gaussians behind)."""
    n = len(gaussians["means"])
    keep = torch.ones(n, dtype=torch.bool, device=gaussians["means"].device)
    for value in gaussians.values():
        # a row's float64 sum is finite exactly when all its float32 values are (no overflow)
        keep &= torch.isfinite(value.reshape(n, -1).sum(dim=1, dtype=torch.float64))
    return keep


def select(gaussians: Mapping[str, Tensor], keep: Tensor) -> Gaussians:
    if bool(keep.all()):
        return dict(gaussians)
    return {name: value[keep] for name, value in gaussians.items()}


def write_ply(path, gaussians: Mapping[str, Tensor]) -> int:
    """Write the Gaussians as a binary little-endian 3DGS `.ply`; returns the count written. The
    file appears whole or not at all (written beside it, then renamed)."""
    columns = {name: _as_numpy(value) for name, value in gaussians.items()}
    n = len(columns["means"])
    num_rest = columns["features_rest"].shape[1]
    _write_atomically(Path(path), _ply_header(n, num_rest), _ply_rows(columns, len(property_names(num_rest))))
    return n


def _ply_header(n: int, num_rest: int) -> bytes:
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {n}"]
    header += [f"property float {name}" for name in property_names(num_rest)] + ["end_header"]
    return ("\n".join(header) + "\n").encode("ascii")


def ply_size(n: int, num_rest: int) -> int:
    """Bytes of the 3DGS `.ply` of n Gaussians with num_rest SH coefficients a channel above degree 0."""
    return len(_ply_header(n, num_rest)) + 4 * n * len(property_names(num_rest))


def _ply_rows(columns: Mapping[str, np.ndarray], width: int, chunk: int = 16384) -> Iterator[np.ndarray]:
    """The file's rows, a cache-sized block at a time (filling one table of all rows column by
    column costs a pass over memory per column)."""
    n = len(columns["means"])
    num_rest = columns["features_rest"].shape[1]
    end = 9 + 3 * num_rest
    block = np.zeros((chunk, width), dtype="<f4")  # normals (3:6) stay 0: unused, but readers expect them
    rest = block[:, 9:end]
    rest.shape = (chunk, 3, num_rest)  # a view into the block (raises rather than copy)
    for start in range(0, n, chunk):
        rows = slice(start, min(start + chunk, n))
        count = rows.stop - start
        block[:count, 0:3] = columns["means"][rows]
        block[:count, 6:9] = columns["features_dc"][rows]
        rest[:count] = columns["features_rest"][rows].transpose(0, 2, 1)  # channel-major in the file
        block[:count, end] = columns["opacities"][rows, 0]
        block[:count, end + 1 : end + 4] = columns["scales"][rows]
        block[:count, end + 4 : end + 8] = columns["quats"][rows]
        yield block[:count]


def write_splat(path, gaussians: Mapping[str, Tensor]) -> int:
    """Write the 32-byte-per-splat web format (antimatter15's `.splat`): position and linear scale
    as float32, RGBA and the normalised rotation as bytes, most prominent splats first. Degree-0
    colour only."""
    columns = {name: _as_numpy(value) for name, value in gaussians.items()}
    n = len(columns["means"])
    scales = np.exp(columns["scales"])
    opacity = 1.0 / (1.0 + np.exp(-columns["opacities"].reshape(n)))
    order = np.argsort(-(scales.prod(axis=1) * opacity), kind="stable")
    record = np.dtype([("position", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rotation", "u1", 4)])
    table = np.empty(n, dtype=record)
    table["position"] = columns["means"][order]
    table["scale"] = scales[order]
    rgba = np.concatenate([0.5 + SH_C0 * columns["features_dc"], opacity[:, None]], axis=1)
    table["rgba"] = np.clip(np.round(rgba[order] * 255), 0, 255)
    quats = columns["quats"][order]
    quats = quats / np.linalg.norm(quats, axis=1, keepdims=True)
    table["rotation"] = np.clip(np.round(quats * 128 + 128), 0, 255)
    _write_atomically(Path(path), b"", [table])
    return n


def _write_atomically(path: Path, header: bytes, tables: Iterable[np.ndarray]) -> None:
    with atomic_write(path) as temp, open(temp, "wb") as f:
        f.write(header)
        for table in tables:
            f.write(memoryview(np.ascontiguousarray(table)).cast("B"))


@contextmanager
def atomic_write(path: Path) -> Iterator[Path]:
    """A temporary name beside `path` to write to; renamed to `path` when the block ends well, so
    readers (and a kill mid-write) never see a partial file."""
    path = Path(path)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield temp
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


Element = Tuple[str, int, List[Tuple[str, str]]]  # (name, count, [(property, numpy type or "list")])


def read_header(path: Path) -> Tuple[int, int, str, List[Element]]:
    """-> (file size, header length in bytes, byte order, elements) of a binary PLY file."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(_MAX_HEADER)
    except OSError as e:
        raise SplatFileError(f"{path}: cannot be read ({e.strerror}); check the path") from None
    return (size, *_parse_header(path, head))


def _parse_header(path: Path, head: bytes) -> Tuple[int, str, List[Element]]:
    end = head.find(b"end_header")
    if not head.startswith(b"ply") or end < 0:
        what = "has no PLY header" if not head.startswith(b"ply") else "has no end_header in its first 64 KiB"
        raise SplatFileError(f"{path}: {what}; give a binary 3DGS .ply (as ns-export gaussian-splat writes)")
    length = end + len(b"end_header")
    for newline in (b"\r\n", b"\n"):
        if head[length : length + len(newline)] == newline:
            length += len(newline)
            break
    else:
        raise SplatFileError(f"{path}: end_header is not followed by a newline; the header is damaged, export it again")
    try:
        lines = head[:end].decode("ascii").splitlines()[1:]
    except UnicodeDecodeError:
        raise SplatFileError(f"{path}: the PLY header is not ASCII; the file is damaged, export it again") from None
    order, elements = None, []
    for number, line in enumerate(lines, start=2):
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format":
            formats = {"binary_little_endian": "<", "binary_big_endian": ">"}
            if len(words) != 3 or words[1] not in formats:
                raise SplatFileError(
                    f"{path}: PLY format {' '.join(words[1:2]) or '(none)'} is not supported; "
                    "save it as binary_little_endian (e.g. with splat-transform or plyfile)"
                )
            order = formats[words[1]]
        elif words[0] == "element":
            if len(words) != 3 or not re.fullmatch(r"\d{1,12}", words[2]):
                raise SplatFileError(f"{path}: header line {number} ({line.strip()!r}) is not 'element <name> <count>'")
            elements.append((words[1], int(words[2]), []))
        elif words[0] == "property":
            if not elements:
                raise SplatFileError(f"{path}: header line {number} declares a property before any element")
            if len(words) == 3 and words[1] in _PLY_TYPES:
                elements[-1][2].append((words[2], _PLY_TYPES[words[1]]))
            elif elements[-1][0] == "vertex":
                raise SplatFileError(
                    f"{path}: vertex property on header line {number} ({line.strip()!r}) is not "
                    "'property <scalar type> <name>' (list properties have no place in a 3DGS .ply)"
                )
            else:
                elements[-1][2].append((words[-1], "list"))
        else:
            raise SplatFileError(f"{path}: header line {number} ({line.strip()!r}) is not PLY; the header is damaged")
    if order is None or not any(name == "vertex" for name, _, _ in elements):
        raise SplatFileError(f"{path}: the header has no {'format' if order is None else 'vertex element'} line")
    return length, order, elements


def is_compressed_ply(elements: Sequence[Element]) -> bool:
    """SuperSplat's compressed layout: a `chunk` element before the vertices."""
    return len(elements) > 1 and elements[0][0] == "chunk"


def read_ply(path) -> Gaussians:
    """Read a 3DGS `.ply` of SH degree 0-3 (extra properties are ignored) into float32 tensors;
    anything else raises a one-line SplatFileError."""
    path = Path(path)
    size, length, order, elements = read_header(path)
    if elements[0][0] != "vertex":
        raise SplatFileError(
            f"{path}: its first element is {elements[0][0]!r}, not 'vertex' (a compressed or non-3DGS .ply?); "
            "convert it to an uncompressed 3DGS .ply, e.g. with splat-transform"
        )
    _, count, props = elements[0]
    names = [name for name, _ in props]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise SplatFileError(f"{path}: properties declared twice: {', '.join(duplicated)}; the header is damaged")
    types = dict(props)
    num_rest = sum(1 for name in names if name.startswith("f_rest_"))
    if num_rest % 3 or num_rest // 3 not in _DEGREE_OF_REST:
        raise SplatFileError(f"{path}: {num_rest} f_rest_* properties; a 3DGS .ply of SH degree 1, 2 or 3 has 9, 24 or 45")
    wanted = [name for name in property_names(num_rest // 3) if name not in ("nx", "ny", "nz")]
    missing = [name for name in wanted if name not in types]
    if missing:
        raise SplatFileError(
            f"{path}: missing properties {', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}; "
            "a 3DGS .ply needs x y z f_dc_0..2 [f_rest_*] opacity scale_0..2 rot_0..3"
        )
    not_float = [f"{name} ({types[name]})" for name in wanted if types[name] not in _FLOAT_TYPES]
    if not_float:
        raise SplatFileError(f"{path}: properties {', '.join(not_float[:4])} are not float or double; export it again")
    record = np.dtype([(name, order + kind) for name, kind in props])
    needed = count * record.itemsize
    if size - length < needed:
        raise SplatFileError(
            f"{path}: truncated: {count} vertices need {needed} bytes after the header, the file has "
            f"{size - length}; export it again"
        )
    table = np.fromfile(path, dtype=record, count=count, offset=length)

    def stack(columns: Sequence[str]) -> np.ndarray:
        out = np.empty((count, len(columns)), dtype=np.float32)
        for i, name in enumerate(columns):
            out[:, i] = table[name]
        return out

    rest = stack([f"f_rest_{i}" for i in range(num_rest)]).reshape(count, 3, num_rest // 3)
    gaussians = {
        "means": stack(["x", "y", "z"]),
        "scales": stack(["scale_0", "scale_1", "scale_2"]),
        "quats": stack(["rot_0", "rot_1", "rot_2", "rot_3"]),
        "opacities": stack(["opacity"]),
        "features_dc": stack(["f_dc_0", "f_dc_1", "f_dc_2"]),
        "features_rest": np.ascontiguousarray(rest.transpose(0, 2, 1)),
    }
    for name, value in gaussians.items():
        bad = ~np.isfinite(value.reshape(count, -1)).all(axis=1)
        if bad.any():
            raise SplatFileError(
                f"{path}: {int(bad.sum())} vertices (first: {int(np.argmax(bad))}) have NaN or inf in {name}; "
                "drop them (splat-transform --filter-nan) or export again"
            )
    return {name: torch.from_numpy(value) for name, value in gaussians.items()}


def sh_degree_of(gaussians: Mapping[str, Tensor]) -> int:
    return _DEGREE_OF_REST[gaussians["features_rest"].shape[1]]


def with_sh_degree(gaussians: Mapping[str, Tensor], degree: int) -> Gaussians:
    """The same Gaussians with `degree` SH bands: higher bands dropped, or added as zeros."""
    rest = gaussians["features_rest"]
    bases = (degree + 1) ** 2 - 1
    if rest.shape[1] >= bases:
        rest = rest[:, :bases]
    else:
        rest = torch.cat([rest, rest.new_zeros(len(rest), bases - rest.shape[1], 3)], dim=1)
    return {**gaussians, "features_rest": rest.contiguous()}


def in_box(means: Tensor, low: Optional[Sequence[float]], high: Optional[Sequence[float]]) -> Tensor:
    """Rows inside the axis-aligned box [low, high] (either side may be open)."""
    keep = torch.ones(len(means), dtype=torch.bool, device=means.device)
    if low is not None:
        keep &= (means >= means.new_tensor(low)).all(dim=1)
    if high is not None:
        keep &= (means <= means.new_tensor(high)).all(dim=1)
    return keep
