"""PlayCanvas' SOG (version 2): Gaussians as lossless WebP images, one pixel a Gaussian in
Z-order, plus `meta.json`; bundled as a `.sog` (a zip of those files) or left in a folder.

- means_l / means_u: low and high bytes of 16-bit x y z of sign(v) log(|v| + 1), within ranges
  in meta.json;
- quats: "smallest three" in 8 bits each, the largest component's index + 252 in alpha;
- scales, sh0: per channel a byte indexing a 256-entry codebook (k-means of every log scale, of
  every f_dc); sh0's alpha is sigmoid(opacity) x 255;
- shN_centroids / shN_labels: a palette of up to 64k SH sets (k-means of the Gaussians' SH bands
  above 0; 64 sets a row, one pixel a coefficient, each byte indexing a 256-entry codebook) and
  each Gaussian's 16-bit palette index.
"""

import io
import json
import zipfile
from pathlib import Path
from typing import Dict, Mapping

import numpy as np
from PIL import Image
from torch import Tensor

from tinysplat_ns.core.packing import (
    SQRT_HALF,
    from_smallest_three,
    kmeans_1d,
    morton_order,
    opacity_logits,
    palette,
    smallest_three,
)
from tinysplat_ns.core.ply import Gaussians, SplatFileError, _as_numpy, as_tensors, atomic_write, sh_degree_of

VERSION = 2
META = "meta.json"
PALETTE_ITERATIONS = 10  # k-means passes over the SH sets (splat-transform's default too)


def palette_size(n: int) -> int:
    """SH sets to aim for: 1024 x the largest power of two up to n / 1024, 64k at most (the rule
    splat-transform uses), never more than there are Gaussians."""
    return max(1, min(n, 1024 * 2 ** int(np.clip(np.floor(np.log2(max(n, 1) / 1024)), -10, 6))))


def _webp(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    # exact: keep the colour of fully transparent pixels (sh0's alpha is opacity). Effort 25 / method
    # 1: files within 2 % of the smallest (100 / 6) at 1/10 to 1/100 of the time (measured)
    Image.fromarray(pixels, "RGBA").save(out, "WEBP", lossless=True, quality=25, method=1, exact=True)
    return out.getvalue()


def _image(values: np.ndarray, width: int, height: int) -> np.ndarray:
    """[N, <=4] bytes -> an RGBA image of width x height (alpha 255 where not given)."""
    pixels = np.zeros((width * height, 4), dtype=np.uint8)
    pixels[:, 3] = 255
    pixels[: len(values), : values.shape[1]] = values
    return pixels.reshape(height, width, 4)


def encode_sog(gaussians: Mapping[str, Tensor], iterations: int = PALETTE_ITERATIONS) -> Dict[str, bytes]:
    """The SOG files (name -> bytes, meta.json included) of the Gaussians."""
    columns = {name: _as_numpy(value).astype(np.float64) for name, value in gaussians.items()}
    n = len(columns["means"])
    if n == 0:
        raise ValueError("no Gaussians to write: SOG images need at least one")
    order = morton_order(columns["means"])
    columns = {name: value[order] for name, value in columns.items()}
    width = int(np.ceil(np.sqrt(n) / 4) * 4)
    height = int(np.ceil(n / width / 4) * 4)
    files = {}

    logs = np.sign(columns["means"]) * np.log1p(np.abs(columns["means"]))
    low, high = logs.min(axis=0), logs.max(axis=0)
    words = np.round((logs - low) / np.where(high > low, high - low, 1.0) * 65535).astype(np.uint16)
    files["means_l.webp"] = _webp(_image((words & 0xFF).astype(np.uint8), width, height))
    files["means_u.webp"] = _webp(_image((words >> 8).astype(np.uint8), width, height))

    largest, others = smallest_three(columns["quats"])
    quats = np.round((others / SQRT_HALF * 0.5 + 0.5) * 255)
    files["quats.webp"] = _webp(_image(np.concatenate([quats, 252 + largest[:, None]], axis=1), width, height))

    scale_book, scale_labels = kmeans_1d(columns["scales"])
    files["scales.webp"] = _webp(_image(scale_labels, width, height))
    colour_book, colour_labels = kmeans_1d(columns["features_dc"])
    alpha = np.round(255 / (1 + np.exp(-columns["opacities"])))
    files["sh0.webp"] = _webp(_image(np.concatenate([colour_labels, alpha], axis=1), width, height))

    meta = {
        "version": VERSION,
        "asset": {"generator": "TinySplat"},
        "count": n,
        "means": {"mins": low.tolist(), "maxs": high.tolist(), "files": ["means_l.webp", "means_u.webp"]},
        "scales": {"codebook": scale_book.tolist(), "files": ["scales.webp"]},
        "quats": {"files": ["quats.webp"]},
        "sh0": {"codebook": colour_book.tolist(), "files": ["sh0.webp"]},
    }
    rest = columns["features_rest"]
    if rest.shape[1]:
        coefficients = rest.shape[1]
        # a set is channel-major (r of every coefficient, then g, then b), as the files' SH columns
        centroids, labels = palette(rest.transpose(0, 2, 1).reshape(n, -1), palette_size(n), iterations)
        book, centroid_bytes = kmeans_1d(centroids)
        sets = len(centroids)
        rows = -(-sets // 64)
        texels = np.zeros((rows * 64, coefficients, 4), dtype=np.uint8)
        texels[:, :, 3] = 255
        texels[:sets, :, :3] = centroid_bytes.reshape(sets, 3, coefficients).transpose(0, 2, 1)
        files["shN_centroids.webp"] = _webp(texels.reshape(rows, 64 * coefficients, 4))
        label_bytes = np.stack([labels & 0xFF, labels >> 8], axis=1).astype(np.uint8)
        files["shN_labels.webp"] = _webp(_image(label_bytes, width, height))
        meta["shN"] = {
            "count": sets,
            "bands": sh_degree_of(gaussians),
            "codebook": book.tolist(),
            "files": ["shN_centroids.webp", "shN_labels.webp"],
        }
    files[META] = json.dumps(meta).encode()
    return files


def write_sog(path, gaussians: Mapping[str, Tensor], iterations: int = PALETTE_ITERATIONS) -> int:
    """Write a `.sog` bundle, or, when `path` is a folder or a meta.json, the loose files (meta.json
    last, so a reader never finds it before its images); returns the count written."""
    path = Path(path)
    files = encode_sog(gaussians, iterations)
    if path.suffix.lower() == ".sog":
        with atomic_write(path) as temp, zipfile.ZipFile(temp, "w", zipfile.ZIP_STORED) as bundle:
            for name, data in files.items():
                bundle.writestr(name, data)
    else:
        folder = path.parent if path.name == META else path
        folder.mkdir(parents=True, exist_ok=True)
        for name in sorted(files, key=lambda name: name == META):
            with atomic_write(folder / name) as temp:
                temp.write_bytes(files[name])
    return len(gaussians["means"])


def loose_files(folder: Path) -> list:
    """meta.json and the images it names, in a folder SOG was written to."""
    meta = json.loads((folder / META).read_bytes())
    names = [name for part in meta.values() if isinstance(part, dict) for name in part.get("files", [])]
    return [folder / META] + [folder / name for name in names]


class _Files:
    """The files of a SOG, bundled or loose, read by name with one-line errors."""

    def __init__(self, path: Path):
        self.path = path
        self.bundle = None
        if path.is_dir():
            self.folder = path
        elif path.name == META:
            self.folder = path.parent
        else:
            try:
                self.bundle = zipfile.ZipFile(path)
            except FileNotFoundError:
                raise SplatFileError(f"{path}: no such file; check the path") from None
            except (zipfile.BadZipFile, OSError) as e:
                raise SplatFileError(f"{path}: not a readable zip ({e}); a .sog is a zip of meta.json and WebP images") from None

    def read(self, name: str) -> bytes:
        try:
            if self.bundle is not None:
                return self.bundle.read(name)
            return (self.folder / name).read_bytes()
        except KeyError:
            raise SplatFileError(f"{self.path}: has no {name}; the SOG is incomplete, export it again") from None
        except (OSError, zipfile.BadZipFile, EOFError) as e:
            raise SplatFileError(f"{self.path}: {name} cannot be read ({e}); export it again") from None

    def image(self, name: str, count: int) -> np.ndarray:
        """The RGBA pixels of a WebP file, [width * height, 4], at least `count` of them."""
        try:
            with Image.open(io.BytesIO(self.read(name))) as image:
                pixels = np.asarray(image.convert("RGBA"))
        except (OSError, ValueError) as e:
            raise SplatFileError(f"{self.path}: {name} is not a readable WebP image ({e}); export it again") from None
        if pixels.shape[0] * pixels.shape[1] < count:
            raise SplatFileError(f"{self.path}: {name} has {pixels.shape[0] * pixels.shape[1]} pixels for {count} Gaussians")
        return pixels.reshape(-1, 4)


def _numbers(path: Path, meta: dict, *keys, length: int) -> np.ndarray:
    value = meta
    try:
        for key in keys:
            value = value[key]
        value = np.asarray(value, dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        raise SplatFileError(f"{path}: meta.json has no list of numbers at {'.'.join(keys)}; export it again") from None
    if value.shape != (length,) or not np.isfinite(value).all():
        raise SplatFileError(f"{path}: meta.json's {'.'.join(keys)} is not {length} finite numbers; export it again")
    return value


def read_sog(path) -> Gaussians:
    """Read a SOG (a `.sog`, its meta.json, or the folder holding it) of version 2 into float32
    tensors; anything else raises a one-line SplatFileError."""
    path = Path(path)
    files = _Files(path)
    try:
        meta = json.loads(files.read(META))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SplatFileError(f"{path}: meta.json is not JSON ({e}); export it again") from None
    if not isinstance(meta, dict):
        raise SplatFileError(f"{path}: meta.json is not a JSON object; export it again")
    if meta.get("version") != VERSION:
        version = meta.get("version", "1 (no version field)")
        raise SplatFileError(f"{path}: SOG version {version}; TinySplat reads version 2 (re-save it with splat-transform)")
    n = meta.get("count")
    if not isinstance(n, int) or n < 0:
        raise SplatFileError(f"{path}: meta.json's count is {n!r}, not a number of Gaussians")
    low, high = (_numbers(path, meta, "means", key, length=3) for key in ("mins", "maxs"))
    low_bytes, high_bytes = (files.image(name, n)[:n, :3] for name in ("means_l.webp", "means_u.webp"))
    words = low_bytes.astype(np.float64) + 256.0 * high_bytes
    logs = low + np.where(high > low, high - low, 1.0) * words / 65535
    quats = files.image("quats.webp", n)[:n]
    tag = quats[:, 3].astype(np.int64) - 252
    valid = (tag >= 0) & (tag <= 3)
    rotations = from_smallest_three(np.where(valid, tag, 0), (quats[:, :3] / 255 * 2 - 1) * SQRT_HALF)
    rotations[~valid] = (1, 0, 0, 0)  # an unknown tag: no rotation, as splat-transform reads it
    scale_book = _numbers(path, meta, "scales", "codebook", length=256)
    colour_book = _numbers(path, meta, "sh0", "codebook", length=256)
    sh0 = files.image("sh0.webp", n)[:n]
    gaussians = {
        "means": np.sign(logs) * np.expm1(np.abs(logs)),
        "scales": scale_book[files.image("scales.webp", n)[:n, :3]],
        "quats": rotations,
        "opacities": opacity_logits(sh0[:, 3] / 255),
        "features_dc": colour_book[sh0[:, :3]],
        "features_rest": np.zeros((n, 0, 3)),
    }
    if "shN" in meta:
        gaussians["features_rest"] = _read_palette(path, files, meta["shN"], n)
    return as_tensors(gaussians)


def _read_palette(path: Path, files: _Files, shn: dict, n: int) -> np.ndarray:
    bands, sets = shn.get("bands"), shn.get("count")
    if bands not in (1, 2, 3) or not isinstance(sets, int) or not 0 < sets <= 65536:
        raise SplatFileError(f"{path}: meta.json's shN has bands {bands!r} and count {sets!r}; export it again")
    coefficients = (bands + 1) ** 2 - 1
    book = _numbers(path, {"shN": shn}, "shN", "codebook", length=256)
    labels = files.image("shN_labels.webp", n)[:n]
    labels = labels[:, 0].astype(np.int64) | labels[:, 1].astype(np.int64) << 8
    if (labels >= sets).any():
        raise SplatFileError(f"{path}: shN labels point past the palette of {sets}; the file is damaged")
    rows = -(-sets // 64)
    texels = files.image("shN_centroids.webp", rows * 64 * coefficients)
    if len(texels) != rows * 64 * coefficients:
        raise SplatFileError(f"{path}: shN_centroids.webp is not {64 * coefficients} x {rows} pixels; export it again")
    centroids = book[texels[:, :3].reshape(rows * 64, coefficients, 3)]  # [palette, coefficient, rgb]
    return centroids[labels]
