"""Niantic's `.spz`: fixed-point Gaussians, gzip'd (versions 1-3) or in zstd streams (version 4).

After a 16-byte header (magic "NGSP", version, count, SH degree, fractional bits, flags), the
attributes follow one after another for all Gaussians: positions as 24-bit signed fixed point
(float16 in version 1), opacity as sigmoid x 255, colour as f_dc x 0.15 x 255 + 127.5, log scales
as (s + 10) x 16, rotations as x y z of a quaternion with w >= 0 (versions 1-2) or "smallest three"
(2-bit index, 3 x (sign + 9 bits), version 3+), SH bands above 0 as x 128 + 128 bytes, coefficient
by coefficient, r g b. The file's axes are right-up-back; a 3DGS `.ply`'s (and ours) are right-down-
forward, so y and z turn over on the way in and out. We write version 3, what every SPZ reader loads.
"""

import gzip
import struct
import zlib
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from torch import Tensor

from tinysplat_ns.core.frames import transform_gaussians
from tinysplat_ns.core.packing import SQRT_HALF, from_smallest_three, opacity_logits, smallest_three
from tinysplat_ns.core.ply import Gaussians, SplatFileError, _as_numpy, as_tensors, atomic_write, sh_degree_of

MAGIC = 0x5053474E  # "NGSP"
HEADER = struct.Struct("<IIIBBBB")
HEADER_V4 = struct.Struct("<IIIBBBBI12x")  # ... flags, stream count, table-of-contents offset
VERSION = 3
FRACTIONAL_BITS = 12  # positions in steps of 1/4096, within +-2048
COLOUR_SCALE = 0.15
SH_BUCKETS = (8, 16)  # Niantic's quantisation: degree-1 SH to 5 bits, higher degrees to 4
# right-down-forward <-> right-up-back: a half turn about x (its own inverse)
FLIP_Y_Z = (torch.tensor([[1, 0, 0, 0], [0, -1, 0, 0], [0, 0, -1, 0]], dtype=torch.float64), 1.0)


def _quantize_sh(rest: np.ndarray) -> np.ndarray:
    level = np.round(rest * 128) + 128
    bucket = np.full(rest.shape[1], SH_BUCKETS[1])
    bucket[:3] = SH_BUCKETS[0]
    level = np.floor((level + bucket[None, :, None] // 2) / bucket[None, :, None]) * bucket[None, :, None]
    return np.clip(level, 0, 255).astype(np.uint8)


def write_spz(path, gaussians: Mapping[str, Tensor]) -> int:
    """Write the Gaussians as a version-3 `.spz` (all SH bands); returns the count written."""
    flipped = transform_gaussians({k: torch.as_tensor(v) for k, v in gaussians.items()}, FLIP_Y_Z)
    columns = {name: _as_numpy(value).astype(np.float64) for name, value in flipped.items()}
    n = len(columns["means"])
    num_rest = columns["features_rest"].shape[1]
    degree = sh_degree_of(flipped)
    fixed = np.clip(np.round(columns["means"] * (1 << FRACTIONAL_BITS)), -(1 << 23), (1 << 23) - 1).astype(np.int64)
    positions = np.stack([(fixed >> shift) & 0xFF for shift in (0, 8, 16)], axis=-1).astype(np.uint8)
    alphas = np.round(255 / (1 + np.exp(-columns["opacities"][:, 0])))
    colours = np.round(columns["features_dc"] * (COLOUR_SCALE * 255) + 127.5)
    scales = np.round((columns["scales"] + 10) * 16)
    largest, others = smallest_three(np.roll(columns["quats"], -1, axis=1))  # w x y z -> x y z w
    magnitude = np.clip(np.round(np.abs(others) / SQRT_HALF * 511), 0, 511).astype(np.uint32)
    word = largest.astype(np.uint32)
    for i in range(3):
        word = word << 10 | (others[:, i] < 0).astype(np.uint32) << 9 | magnitude[:, i]
    sections = [
        positions,
        np.clip(alphas, 0, 255).astype(np.uint8),
        np.clip(colours, 0, 255).astype(np.uint8),
        np.clip(scales, 0, 255).astype(np.uint8),
        word.astype("<u4").view(np.uint8),
        _quantize_sh(columns["features_rest"]) if num_rest else np.zeros(0, np.uint8),
    ]
    body = HEADER.pack(MAGIC, VERSION, n, degree, FRACTIONAL_BITS, 0, 0) + b"".join(s.tobytes() for s in sections)
    with atomic_write(Path(path)) as temp:
        temp.write_bytes(gzip.compress(body, compresslevel=6, mtime=0))
    return n


def _payload(path: Path, data: bytes):
    """-> (version, count, SH degree, fractional bits, the attribute bytes in order)."""
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise SplatFileError(f"{path}: its gzip stream is damaged ({e}); export it again") from None
        if len(data) < HEADER.size:
            raise SplatFileError(f"{path}: {len(data)} bytes after gunzip, shorter than an SPZ header")
        magic, version, n, degree, bits, _, _ = HEADER.unpack_from(data)
        if magic == MAGIC and version >= 4:
            raise SplatFileError(f"{path}: gzip'd SPZ of version {version}; only versions 1-3 are gzip'd")
        body = data[HEADER.size :]
    elif len(data) >= HEADER_V4.size and struct.unpack_from("<I", data)[0] == MAGIC:
        magic, version, n, degree, bits, _, streams, toc = HEADER_V4.unpack_from(data)
        if version < 4:
            raise SplatFileError(f"{path}: SPZ version {version} without gzip; the file is damaged")
        body = None
    else:
        raise SplatFileError(f"{path}: neither gzip'd nor an NGSP header; not an .spz file")
    if magic != MAGIC:
        raise SplatFileError(f"{path}: magic 0x{magic:08x}, not 0x{MAGIC:08x} (NGSP); not an .spz file")
    if version not in (1, 2, 3, 4):
        raise SplatFileError(f"{path}: SPZ version {version}; TinySplat reads versions 1-4 (re-save it with splat-transform)")
    if degree > 3:
        raise SplatFileError(f"{path}: SH degree {degree}; SPZ files hold degree 0-3")
    if version >= 2 and not 0 < bits <= 24:  # version 1's float16 positions have no use for them
        raise SplatFileError(f"{path}: {bits} fractional bits for positions; the header is damaged")
    if body is None:
        body = _zstd_streams(path, data, toc, streams)
    return version, n, degree, bits, body


def _zstd_streams(path: Path, data: bytes, toc: int, streams: int) -> bytes:
    """Version 4: a table of (compressed, uncompressed) sizes at `toc`, then one zstd stream per attribute."""
    import zstandard

    if toc < HEADER_V4.size or toc + 16 * streams > len(data):
        raise SplatFileError(f"{path}: its stream table lies outside the file; the file is truncated or damaged")
    offset, parts = toc + 16 * streams, []
    for i in range(streams):
        packed, size = struct.unpack_from("<QQ", data, toc + 16 * i)
        if offset + packed > len(data):
            raise SplatFileError(f"{path}: stream {i} runs past the end of the file; the file is truncated")
        try:
            parts.append(zstandard.ZstdDecompressor().decompress(data[offset : offset + packed], max_output_size=size))
        except zstandard.ZstdError as e:
            raise SplatFileError(f"{path}: stream {i} is damaged ({e}); export it again") from None
        offset += packed
    return b"".join(parts)


def read_spz(path) -> Gaussians:
    """Read an `.spz` of version 1-4 into float32 tensors (in a 3DGS `.ply`'s axes); anything else
    raises a one-line SplatFileError."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SplatFileError(f"{path}: cannot be read ({e.strerror}); check the path") from None
    version, n, degree, bits, body = _payload(path, data)
    num_rest = (degree + 1) ** 2 - 1
    rotation_bytes = 4 if version >= 3 else 3
    position_bytes = 6 if version == 1 else 9
    sizes = [position_bytes, 1, 3, 3, rotation_bytes, 3 * num_rest]
    if len(body) < n * sum(sizes):
        raise SplatFileError(
            f"{path}: truncated: {n} Gaussians need {n * sum(sizes)} bytes of attributes, it has {len(body)}"
        )
    raw = np.frombuffer(body, dtype=np.uint8, count=n * sum(sizes))
    parts, start = [], 0
    for size in sizes:
        parts.append(raw[start : start + n * size].reshape(n, size))
        start += n * size
    positions, alphas, colours, scales, rotations, rest = parts
    if version == 1:
        means = positions.copy().view("<f2").astype(np.float64)
    else:
        fixed = positions.astype(np.int64)
        fixed = fixed.reshape(n, 3, 3) @ np.array([1, 1 << 8, 1 << 16])
        means = np.where(fixed >= 1 << 23, fixed - (1 << 24), fixed) / (1 << bits)
    if version >= 3:
        word = rotations.copy().view("<u4")[:, 0]
        others = np.empty((n, 3))
        for i in (2, 1, 0):
            others[:, i] = (word & 511) / 511 * SQRT_HALF * np.where(word & 512, -1.0, 1.0)
            word = word >> 10
        xyzw = from_smallest_three(word.astype(np.int64), others)
    else:
        xyz = rotations / 127.5 - 1
        xyzw = np.concatenate([xyz, np.sqrt(np.maximum(0.0, 1 - (xyz * xyz).sum(1, keepdims=True)))], axis=1)
    gaussians = {
        "means": means,
        "scales": scales / 16 - 10,
        "quats": np.roll(xyzw, 1, axis=1),
        "opacities": opacity_logits(alphas[:, 0] / 255),
        "features_dc": (colours / 255 - 0.5) / COLOUR_SCALE,
        "features_rest": (rest.reshape(n, num_rest, 3) - 128.0) / 128,
    }
    if not np.isfinite(means).all():
        raise SplatFileError(f"{path}: positions hold NaN or inf; the file is damaged, export it again")
    return {name: value.float().contiguous() for name, value in transform_gaussians(as_tensors(gaussians), FLIP_Y_Z).items()}
