"""The web viewers' formats (SuperSplat's compressed .ply, Niantic's .spz, PlayCanvas' SOG) from a
short real-scene run through `tinysplat-export`: read back by splat-transform (its SPZ reader is
Niantic's own library, built to WebAssembly) and by gsply, each value within its format's
quantisation step of the trained one; those formats as splat-transform writes them read by
TinySplat; the test views rendered from each file as training starts from it; damaged files of
each (through ns-train: tests/test_export.py)."""

import copy
import gzip
import json
import re
import shutil
import struct
import zipfile
from pathlib import Path

import gsply
import numpy as np
import pytest
import splat_transform
import torch
from plyfile import PlyData
from training import run_command

from tinysplat_ns.core.frames import transform_gaussians
from tinysplat_ns.core.packing import morton_order
from tinysplat_ns.core.ply import SplatFileError
from tinysplat_ns.core.sh import SH_C0
from tinysplat_ns.core.splat_files import read_splats
from tinysplat_ns.core.spz import FLIP_Y_Z

NAMES = {"compressed-ply": "scene.compressed.ply", "spz": "scene.spz", "sog": "scene.sog"}
HALF_BYTE = 0.5 / 255


@pytest.fixture(scope="module")
def exported(trained):
    """Every format (and the plain .ply) of the run, all Gaussians kept: (folder, summary lines)."""
    work, config = trained
    folder = work / "formats"
    lines = {}
    for fmt, name in {"ply": "scene.ply", **NAMES}.items():
        out = run_command(
            ["tinysplat-export", "--load-config", config, "--output", folder / name, "--min-opacity", 0], work
        ).stdout
        lines[fmt] = out.strip().splitlines()[-1]
    return folder, lines


def reference(folder: Path) -> dict:
    """The trained values, from the plain .ply read by plyfile, in float64 and our layout."""
    table = PlyData.read(str(folder / "scene.ply"))["vertex"].data
    return columns_of({name: table[name].astype(np.float64) for name in table.dtype.names})


def columns_of(table: dict) -> dict:
    """A 3DGS table of columns (x, f_rest_*, ...: a .ply's or splat-transform's CSV) in our layout."""
    n = len(table["x"])
    rest = np.stack([table[f"f_rest_{i}"] for i in range(45)], axis=1).reshape(n, 3, 15).transpose(0, 2, 1)
    quats = np.stack([table[f"rot_{i}"] for i in range(4)], axis=1)
    return {
        "means": np.stack([table[a] for a in "xyz"], axis=1),
        "scales": np.stack([table[f"scale_{i}"] for i in range(3)], axis=1),
        "quats": quats / np.linalg.norm(quats, axis=1, keepdims=True),
        "alpha": 1 / (1 + np.exp(-table["opacity"])),  # splat-transform reads bytes 0 and 255 as -inf, inf
        "features_dc": np.stack([table[f"f_dc_{i}"] for i in range(3)], axis=1),
        "features_rest": rest,
    }


def ours(path: Path) -> dict:
    g = {name: value.double().numpy() for name, value in read_splats(path).items()}
    return {**g, "alpha": 1 / (1 + np.exp(-g.pop("opacities")[:, 0]))}


def rotation_error(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """How far apart the axes of two orientations (unit quaternions w x y z) are, an axis and its
    opposite being the same: an ellipsoid turned a half turn about one of its own axes is the same
    ellipsoid, and Niantic's library reads an .spz's rotations so."""

    def axes(q):
        w, x, y, z = q.T
        return np.stack([
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y + w * z), 2 * (x * z - w * y)], -1),
            np.stack([2 * (x * y - w * z), 1 - 2 * (x * x + z * z), 2 * (y * z + w * x)], -1),
            np.stack([2 * (x * z + w * y), 2 * (y * z - w * x), 1 - 2 * (x * x + y * y)], -1),
        ], 1)  # fmt: skip

    difference, total = axes(a) - axes(b), axes(a) + axes(b)
    return np.minimum(np.linalg.norm(difference, axis=2), np.linalg.norm(total, axis=2)).max(axis=1)


def assert_within(name: str, error: np.ndarray, bound) -> None:
    excess = error - bound
    assert (excess <= 1e-6).all(), f"{name}: error {float(error.max()):.3g}, worst excess {float(excess.max()):.3g}"


def chunk_half_steps(values: np.ndarray, bits) -> np.ndarray:
    """Half a quantisation step of each value within its chunk of 256 (compressed .ply)."""
    n = len(values)
    padded = np.concatenate([values, np.repeat(values[-1:], -n % 256, axis=0)]).reshape(-1, 256, values.shape[1])
    extent = padded.max(axis=1) - padded.min(axis=1)
    return np.repeat(extent / (2 * (2.0 ** np.array(bits) - 1)), 256, axis=0)[:n]


def check_compressed_ply(decoded: dict, trained: dict, _path: Path) -> None:
    for name, bits in (("means", (11, 10, 11)), ("scales", (11, 10, 11))):
        assert_within(name, np.abs(decoded[name] - trained[name]), chunk_half_steps(trained[name], bits))
    colour = trained["features_dc"] * SH_C0 + 0.5
    assert_within("colour", np.abs(decoded["features_dc"] - trained["features_dc"]) * SH_C0,
                  chunk_half_steps(colour, (8, 8, 8)))  # fmt: skip
    assert_within("opacity", np.abs(decoded["alpha"] - trained["alpha"]), HALF_BYTE)
    # three components within half a 10-bit step of [-1/sqrt 2, 1/sqrt 2], the fourth rebuilt from
    # them: the quaternion within 0.0031, an axis within twice that (measured on 5000 random: 0.0031)
    assert_within("rotation", rotation_error(decoded["quats"], trained["quats"]), 0.0065)
    assert_within("SH", np.abs(decoded["features_rest"] - trained["features_rest"]), 4 / 256)


def check_spz(decoded: dict, trained: dict, _path: Path) -> None:
    assert_within("means", np.abs(decoded["means"] - trained["means"]), 0.5 / 4096)
    assert_within("scales", np.abs(decoded["scales"] - trained["scales"]), 0.5 / 16)
    assert_within("colour", np.abs(decoded["features_dc"] - trained["features_dc"]), 0.5 / (0.15 * 255))
    assert_within("opacity", np.abs(decoded["alpha"] - trained["alpha"]), HALF_BYTE)
    assert_within("rotation", rotation_error(decoded["quats"], trained["quats"]), 0.0065)  # 9 bits and a sign
    # Niantic's buckets: degree 1 in steps of 8/128, higher degrees 16/128 (plus the byte's rounding)
    error = np.abs(decoded["features_rest"] - trained["features_rest"])
    assert_within("SH degree 1", error[:, :3], 4.5 / 128)
    assert_within("SH degree 2-3", error[:, 3:], 8.5 / 128)


def check_sog(decoded: dict, trained: dict, path: Path) -> None:
    meta = json.loads(zipfile.ZipFile(path).read("meta.json"))
    low, high = np.array(meta["means"]["mins"]), np.array(meta["means"]["maxs"])

    def log(v):
        return np.sign(v) * np.log1p(np.abs(v))

    assert_within("means (log)", np.abs(log(decoded["means"]) - log(trained["means"])), (high - low) / (2 * 65535))
    for name, key in (("scales", "scales"), ("features_dc", "sh0")):
        book = np.array(meta[key]["codebook"], dtype=np.float32).astype(np.float64)
        nearest = np.abs(trained[name][..., None] - book).min(axis=-1)
        assert_within(f"{name}: the nearest codebook entry", np.abs(decoded[name] - trained[name]), nearest)
    assert_within("opacity", np.abs(decoded["alpha"] - trained["alpha"]), HALF_BYTE)
    assert_within("rotation", rotation_error(decoded["quats"], trained["quats"]), 0.025)  # 8 bits: 4 x the 10-bit bound
    # a palette of SH sets: no bound per value; measured RMS error 0.011 against an RMS of 0.047
    error = decoded["features_rest"] - trained["features_rest"]
    assert np.sqrt((error**2).mean()) < 0.4 * np.sqrt((trained["features_rest"] ** 2).mean())


CHECKS = {"compressed-ply": check_compressed_ply, "spz": check_spz, "sog": check_sog}


def in_file_order(trained: dict, fmt: str) -> dict:
    """Compressed .ply and SOG store the Gaussians along a Z-order curve of their centres; .spz
    keeps their order."""
    order = morton_order(trained["means"]) if fmt != "spz" else np.arange(len(trained["means"]))
    return {name: value[order] for name, value in trained.items()}


@pytest.mark.parametrize("fmt", list(NAMES))
def test_splat_transform_reads_each_format_within_its_step(exported, fmt):
    folder, _ = exported
    path = folder / NAMES[fmt]
    theirs = columns_of(splat_transform.to_columns(path, folder))
    trained = in_file_order(reference(folder), fmt)
    assert len(theirs["means"]) == len(trained["means"]) > 1000
    CHECKS[fmt](theirs, trained, path)
    # ours reads the same numbers as splat-transform (float32 round-off; opacity bytes 0 and 255 aside)
    mine = ours(path)
    for name in ("means", "scales", "features_dc", "features_rest"):
        np.testing.assert_allclose(mine[name], theirs[name], rtol=0, atol=2e-5, err_msg=name)
    assert_within("opacity", np.abs(mine["alpha"] - theirs["alpha"]), HALF_BYTE)
    assert rotation_error(mine["quats"], theirs["quats"]).max() < 1e-5


def test_gsply_reads_our_compressed_ply_and_spz(exported):
    """gsply reads the same values as splat-transform; from an .spz it keeps the file's right-up-back
    axes (it does not turn them to a .ply's, as Niantic's library does)."""
    folder, _ = exported
    for fmt, data in (("compressed-ply", gsply.plyread(folder / NAMES["compressed-ply"])),
                      ("spz", gsply.read_spz(folder / NAMES["spz"]))):  # fmt: skip
        theirs = columns_of(splat_transform.to_columns(folder / NAMES[fmt], folder))
        if fmt == "spz":
            keys = ("means", "scales", "quats", "features_dc", "features_rest")
            moved = transform_gaussians({k: torch.from_numpy(theirs[k]) for k in keys}, FLIP_Y_Z)
            theirs.update({k: v.numpy() for k, v in moved.items()})
        assert len(data.means) == len(theirs["means"])
        read = {"means": data.means, "scales": data.scales, "features_dc": data.sh0, "features_rest": data.shN}
        for name, value in read.items():
            np.testing.assert_allclose(value, theirs[name], rtol=0, atol=2e-5, err_msg=f"{fmt} {name}")
        quats = data.quats / np.linalg.norm(data.quats, axis=1, keepdims=True)
        assert rotation_error(quats, theirs["quats"]).max() < 1e-5, fmt
        alpha = 1 / (1 + np.exp(-data.opacities.astype(np.float64).reshape(-1)))
        assert_within(f"{fmt} opacity", np.abs(alpha - theirs["alpha"]), HALF_BYTE)


@pytest.mark.parametrize(
    "name, options", [("st.compressed.ply", []), ("st.spz", []), ("st3.spz", ["--spz-version", "3"]),
                      ("st.sog", []), ("st_sog/meta.json", [])],
)  # fmt: skip
def test_reads_what_splat_transform_writes(exported, name, options):
    """Files someone else made: splat-transform's own conversions of the plain .ply (its .spz is
    version 4, zstd streams, unless asked for 3) read by TinySplat as splat-transform reads them."""
    folder, _ = exported
    target = folder / name
    target.parent.mkdir(exist_ok=True)
    # -g cpu: its SOG writer's k-means wants a WebGPU adapter otherwise
    run_command([splat_transform.executable(), "-w", "-q", "-g", "cpu", folder / "scene.ply", *options, target], folder)
    theirs = columns_of(splat_transform.to_columns(target, folder / "csv"))
    mine = ours(target.parent if name.endswith("meta.json") else target)
    assert len(mine["means"]) == len(reference(folder)["means"])
    for key in ("means", "scales", "features_dc", "features_rest"):
        np.testing.assert_allclose(mine[key], theirs[key], rtol=0, atol=2e-5, err_msg=key)
    assert rotation_error(mine["quats"], theirs["quats"]).max() < 1e-5
    assert_within("opacity", np.abs(mine["alpha"] - theirs["alpha"]), HALF_BYTE)


@pytest.fixture(scope="module")
def exported_in_data_frame(trained):
    """The plain .ply and every format of the run written with --frame data, all Gaussians kept."""
    work, config = trained
    folder = work / "formats_data_frame"
    for name in ("scene.ply", *NAMES.values()):
        run_command(["tinysplat-export", "--load-config", config, "--output", folder / name, "--min-opacity", 0,
                     "--frame", "data"], work)  # fmt: skip
    return folder


def centre_errors(fmt: str, decoded: np.ndarray, trained: np.ndarray, path: Path) -> tuple:
    """(error, half a quantisation step) of each centre in `fmt`'s own terms (see the CHECKS)."""
    if fmt == "compressed-ply":
        return np.abs(decoded - trained), chunk_half_steps(trained, (11, 10, 11))
    if fmt == "spz":
        return np.abs(decoded - trained), 0.5 / 4096
    meta = json.loads(zipfile.ZipFile(path).read("meta.json"))
    low, high = np.array(meta["means"]["mins"]), np.array(meta["means"]["maxs"])

    def log(v):
        return np.sign(v) * np.log1p(np.abs(v))

    return np.abs(log(decoded) - log(trained)), (high - low) / (2 * 65535)


@pytest.mark.parametrize("fmt", list(NAMES))
def test_data_frame_in_each_format_holds_the_data_frame_centres(exported, exported_in_data_frame, fmt):
    """README: `--frame data` writes in the dataset's own coordinates, in every format: read back by
    TinySplat, splat-transform and (compressed .ply, .spz) gsply, the centres are those of the
    `--frame data` .ply (tests/test_export.py: the dataset's own) within half the format's step,
    and far from the run's frame the same Gaussians are exported in without it."""
    folder = exported_in_data_frame
    path = folder / NAMES[fmt]
    order = np.arange(len(reference(folder)["means"])) if fmt == "spz" else morton_order(reference(folder)["means"])
    expected = reference(folder)["means"][order]
    readers = {
        "TinySplat": ours(path)["means"],
        "splat-transform": columns_of(splat_transform.to_columns(path, folder))["means"],
    }
    if fmt == "compressed-ply":
        readers["gsply"] = gsply.plyread(path).means
    if fmt == "spz":
        readers["gsply"] = gsply.read_spz(path).means * [1, -1, -1]  # it keeps the file's right-up-back axes
    for reader, means in readers.items():
        assert means.shape == expected.shape, reader
        assert_within(f"{fmt} read by {reader}", *centre_errors(fmt, np.asarray(means, np.float64), expected, path))
    # the same Gaussians in the run's frame (the dataparser's scale 0.19 and turn away): measured
    # median distance 5.6, against half steps of at most 0.0095 (the compressed .ply's)
    in_run_frame = reference(exported[0])["means"][order]
    assert np.median(np.linalg.norm(readers["TinySplat"] - in_run_frame, axis=1)) > 1


def test_format_option_writes_that_format_whatever_the_name(trained, exported, tmp_path):
    """README: the format comes from `--format ply|compressed-ply|spz|sog|splat` as well as from the
    name: under a name of no such suffix each is the file (headers, bytes) its own name gives."""
    _, config = trained
    folder, _ = exported
    import tyro
    from typing_extensions import Annotated

    from tinysplat_ns.scripts.export import ExportSplats

    written = {}
    for fmt in ("ply", "compressed-ply", "spz", "sog", "splat"):
        written[fmt] = tmp_path / f"scene-{fmt}.bin"
        # tinysplat-export's own command line, parsed in this process (five exports' start-ups cost 15 s)
        args = ["--load-config", str(config), "--output", str(written[fmt]), "--format", fmt, "--min-opacity", "0"]
        tyro.cli(Annotated[ExportSplats, tyro.conf.FlagCreatePairsOff], args=args).main()
    plain = PlyData.read(str(written["ply"]))
    n = plain["vertex"].count
    assert [e.name for e in plain.elements] == ["vertex"] and len(plain["vertex"].properties) == 62
    assert written["ply"].read_bytes() == (folder / "scene.ply").read_bytes()

    compressed = PlyData.read(str(written["compressed-ply"]))
    assert [(e.name, e.count) for e in compressed.elements] == [("chunk", -(-n // 256)), ("vertex", n), ("sh", n)]
    assert written["compressed-ply"].read_bytes() == (folder / NAMES["compressed-ply"]).read_bytes()

    spz = written["spz"].read_bytes()
    assert spz[:2] == b"\x1f\x8b" and struct.unpack_from("<IIIB", gzip.decompress(spz)) == (0x5053474E, 3, n, 3)
    assert len(gsply.read_spz(written["spz"]).means) == n
    assert spz == (folder / NAMES["spz"]).read_bytes()

    # SOG, under a name without .sog: its loose files, in a folder of that name
    bundle = zipfile.ZipFile(folder / NAMES["sog"])
    assert written["sog"].is_dir() and sorted(p.name for p in written["sog"].iterdir()) == sorted(bundle.namelist())
    meta = json.loads((written["sog"] / "meta.json").read_text())
    assert meta["version"] == 2 and meta["count"] == n
    for image in written["sog"].glob("*.webp"):
        data = image.read_bytes()
        assert data[:4] == b"RIFF" and data[8:12] == b"WEBP" and data == bundle.read(image.name), image.name
    assert len(splat_transform.to_columns(written["sog"] / "meta.json", tmp_path)["x"]) == n

    record = np.dtype([("position", "<f4", 3), ("scale", "<f4", 3), ("rgba_rotation", "u1", 8)])
    records = np.frombuffer(written["splat"].read_bytes(), dtype=record)
    assert len(records) == n  # 32 bytes each, no header
    xyz = np.stack([plain["vertex"][a] for a in "xyz"], axis=1)
    assert np.array_equal(np.unique(records["position"], axis=0), np.unique(xyz, axis=0))


def test_a_compressed_ply_is_read_as_one_whatever_its_name(trained, exported, tmp_path):
    """README: a compressed .ply is "told apart by its header, whatever its name": saved as scene.ply
    or foo.bin, read_splats and --pipeline.model.init-ply read the same Gaussians as under its
    .compressed.ply name."""
    import yaml

    work, config = trained
    folder, _ = exported
    original = read_splats(folder / NAMES["compressed-ply"])
    run_config = yaml.load(config.read_text(), Loader=yaml.Loader)
    for name in ("scene.ply", "foo.bin"):
        path = tmp_path / name
        shutil.copyfile(folder / NAMES["compressed-ply"], path)
        again = read_splats(path)
        assert all(torch.equal(again[k], original[k]) for k in original), name
        started = copy.deepcopy(run_config)
        started.pipeline.model.init_ply = path
        model = started.pipeline.setup(device="cpu", test_mode="val").model  # as ns-train builds it
        for k in ("means", "scales", "quats", "opacities", "features_dc", "features_rest"):
            assert torch.equal(model.gauss_params[k].detach(), original[k]), (name, k)


def sh_signs_of_a_half_turn_about_x() -> np.ndarray:
    """[15] the sign each real SH basis function of degree 1-3 (3DGS' order: m = -l..l) takes under
    (x, y, z) -> (x, -y, -z): P_l^|m|(-z) = (-1)^(l + |m|) P_l^|m|(z), and the azimuth turns over,
    which changes the sign of the sin(|m| phi) ones (m < 0)."""
    return np.array([(-1) ** (l + abs(m)) * (-1 if m < 0 else 1) for l in (1, 2, 3) for m in range(-l, l + 1)])


def legacy_spz(path: Path, g: dict, version: int, fractional_bits: int) -> None:
    """An .spz of version 1 or 2 as Niantic's library wrote and reads them (load-spz.cc, 2024),
    written here from the specification: a gzip'd 16-byte header, then positions (version 1:
    float16; 2: 24-bit signed fixed point with `fractional_bits`), alphas, colours, scales, rotations
    (3 bytes: x y z of the unit quaternion turned to w >= 0, x 127.5 + 127.5; w is rebuilt), SH
    (x 128 + 128, coefficient by coefficient, r g b), in right-up-back axes (a .ply's turned a half
    turn about x)."""
    n, rest = len(g["means"]), g["features_rest"]
    flip = np.array([1.0, -1.0, -1.0])
    means = g["means"] * flip
    if version == 1:
        positions = means.astype("<f2").tobytes()
    else:
        fixed = np.round(means * 2.0**fractional_bits).astype(np.int64) & 0xFFFFFF
        positions = np.stack([fixed & 0xFF, fixed >> 8 & 0xFF, fixed >> 16], axis=-1).astype(np.uint8).tobytes()

    def byte(values):
        return np.clip(np.round(values), 0, 255).astype(np.uint8).tobytes()

    xyzw = np.concatenate([g["quats"][:, 1:] * flip, g["quats"][:, :1]], axis=1)
    xyzw /= np.linalg.norm(xyzw, axis=1, keepdims=True)
    xyzw *= np.where(xyzw[:, 3:] < 0, -1.0, 1.0)
    sh = rest * sh_signs_of_a_half_turn_about_x()[: rest.shape[1], None]
    degree = {0: 0, 3: 1, 8: 2, 15: 3}[rest.shape[1]]
    body = b"".join([
        struct.pack("<IIIBBBB", 0x5053474E, version, n, degree, fractional_bits, 0, 0),
        positions,
        byte(g["alpha"] * 255),
        byte(g["features_dc"] * 0.15 * 255 + 127.5),
        byte((g["scales"] + 10) * 16),
        byte(xyzw[:, :3] * 127.5 + 127.5),
        byte(sh.reshape(n, -1) * 128 + 128),
    ])  # fmt: skip
    path.write_bytes(gzip.compress(body))


@pytest.mark.parametrize("version, fractional_bits", [(1, 0), (2, 12), (2, 16)])
def test_reads_spz_versions_1_and_2(tmp_path, version, fractional_bits):
    """README: "an .spz of version 1-4". Versions 1 and 2 (float16 or fixed-point positions, 3-byte
    rotations; version 1 has no use for its fractional bits, Niantic's reader ignores them) written
    from the specification: each value read back within half a step of what was written, as
    Niantic's library (in splat-transform) and gsply (version 2: it reads version 1's positions as
    fixed point) read them."""
    rng = np.random.default_rng(version * 100 + fractional_bits)
    n = 400
    quats = rng.normal(size=(n, 4))
    written = {
        "means": rng.uniform(-3, 3, size=(n, 3)),
        "scales": rng.uniform(-8, 2, size=(n, 3)),
        "quats": quats / np.linalg.norm(quats, axis=1, keepdims=True),
        "alpha": rng.uniform(0.02, 0.98, size=n),
        "features_dc": rng.uniform(-1.5, 1.5, size=(n, 3)),
        "features_rest": rng.uniform(-0.9, 0.9, size=(n, 15, 3)),
    }
    path = tmp_path / f"v{version}.spz"
    legacy_spz(path, written, version, fractional_bits)
    mine = ours(path)
    # float16: 10 bits after the leading 1, half a step at most |x| / 2^11
    half_step = np.abs(written["means"]) * 2.0**-11 if version == 1 else 0.5 / 2**fractional_bits
    assert_within("means", np.abs(mine["means"] - written["means"]), half_step)
    assert_within("scales", np.abs(mine["scales"] - written["scales"]), 0.5 / 16)
    assert_within("opacity", np.abs(mine["alpha"] - written["alpha"]), HALF_BYTE)
    assert_within("colour", np.abs(mine["features_dc"] - written["features_dc"]), 0.5 / (0.15 * 255))
    assert_within("SH", np.abs(mine["features_rest"] - written["features_rest"]), 0.5 / 128)
    # the rotation as its 3 bytes give it (w rebuilt from x y z, so no bound per value holds where w
    # is near 0, what version 3's smallest three mends), turned back to a .ply's axes
    stored = np.frombuffer(gzip.decompress(path.read_bytes()), np.uint8)[-n * (3 + 45) : -n * 45].reshape(n, 3)
    xyz = stored / 127.5 - 1
    decoded = np.concatenate([np.sqrt(np.maximum(0, 1 - (xyz**2).sum(1, keepdims=True))), xyz * [1, -1, -1]], axis=1)

    def unit(q):  # x y z a byte off can pass a norm of 1 (w then 0), as Niantic's reader leaves them
        return q / np.linalg.norm(q, axis=1, keepdims=True)

    # the writer's own check, the same rotations: measured 0.17 at most (a w near 0), 1.4 had it not turned them
    assert rotation_error(unit(decoded), written["quats"]).max() < 0.3
    assert rotation_error(unit(mine["quats"]), unit(decoded)).max() < 1e-5

    theirs = {"Niantic's library": columns_of(splat_transform.to_columns(path, tmp_path))}
    if version == 2:
        data = gsply.read_spz(path)  # in the file's right-up-back axes: turned back here
        theirs["gsply"] = {
            "means": data.means * [1, -1, -1],
            "scales": data.scales,
            "quats": data.quats * [1, 1, -1, -1],  # w x y z
            "features_dc": data.sh0,
            "features_rest": data.shN * sh_signs_of_a_half_turn_about_x()[:, None],
            "alpha": 1 / (1 + np.exp(-np.asarray(data.opacities, np.float64).reshape(-1))),
        }
    for reader, values in theirs.items():
        for key in ("means", "scales", "features_dc", "features_rest"):
            np.testing.assert_allclose(mine[key], values[key], rtol=0, atol=2e-5, err_msg=f"{reader}: {key}")
        assert rotation_error(unit(mine["quats"]), unit(values["quats"])).max() < 1e-5, reader
        assert_within(f"{reader}: opacity", np.abs(mine["alpha"] - values["alpha"]), 1e-5)


def test_summary_gives_the_size_and_the_ratio_to_the_plain_ply(exported):
    folder, lines = exported
    plain = (folder / "scene.ply").stat().st_size
    for fmt, name in NAMES.items():
        size = (folder / name).stat().st_size
        match = re.search(r": ([\d.]+) MB, ([\d.]+) x the plain \.ply's ([\d.]+) MB", lines[fmt])
        assert match, lines[fmt]
        assert float(match[1]) == pytest.approx(size / 1e6, abs=0.006)
        assert float(match[2]) == pytest.approx(size / plain, abs=0.0006)
        assert float(match[3]) == pytest.approx(plain / 1e6, abs=0.006)
        assert size < 0.3 * plain, (fmt, size / plain)


def test_sog_folder_and_filters_in_every_format(trained, exported, tmp_path):
    """SOG's loose files hold the same Gaussians as the bundle; --min-opacity and the crop box drop
    the same Gaussians in every format as in the plain .ply."""
    work, config = trained
    folder, _ = exported
    run_command(["tinysplat-export", "--load-config", config, "--output", tmp_path / "loose", "--min-opacity", 0], work)
    assert sorted(p.name for p in (tmp_path / "loose").iterdir()) == sorted(zipfile.ZipFile(folder / "scene.sog").namelist())
    loose, bundled = read_splats(tmp_path / "loose"), read_splats(folder / "scene.sog")
    assert all(torch.equal(loose[k], bundled[k]) for k in loose)
    filters = ["--min-opacity", 0.1, "--crop-min", -0.5, -0.5, -0.5, "--crop-max", 0.5, 0.5, 0.5]
    counts = {}
    for name in ("kept.ply", "kept.compressed.ply", "kept.spz", "kept.sog"):
        run_command(["tinysplat-export", "--load-config", config, "--output", tmp_path / name, *filters], work)
        counts[name] = len(read_splats(tmp_path / name)["means"])
    assert 0 < counts["kept.ply"] < len(bundled["means"])
    assert len(set(counts.values())) == 1, counts


def test_init_from_each_format_renders_the_test_views(trained, exported):
    """Each file loaded as a user starts from it (--pipeline.model.init-ply) renders the 4 test views;
    its PSNR against the photos drops from the uncompressed scene's by the measured amount."""
    from nerfstudio.utils.eval_utils import eval_setup

    work, config = trained
    folder, _ = exported
    run_config, pipeline, _, step = eval_setup(config, test_mode="val")
    dataset = pipeline.datamanager.eval_dataset
    cameras = dataset.cameras

    def psnr(model) -> float:
        scores = []
        for i in range(len(dataset)):
            with torch.no_grad():
                outputs = model.get_outputs_for_camera(cameras[i : i + 1])
            scores.append(model.get_image_metrics_and_images(outputs, dataset[i])[0]["psnr"])
        return float(np.mean(scores))

    assert len(dataset) == 4
    scores = {}
    for fmt, name in {"ply": "scene.ply", **NAMES}.items():
        imported = copy.deepcopy(run_config)
        imported.pipeline.model.init_ply = folder / name
        loaded = imported.pipeline.setup(device="cpu", test_mode="val")
        loaded.eval()
        loaded.model.update_to_step(step)
        scores[fmt] = psnr(loaded.model)
    # measured (the shared 300-step run, 18.35 dB from the plain .ply): compressed .ply -0.14 dB (a
    # gain: its SH bytes have no level at 0, so near-zero bands read as +1/64 each), .spz +0.38 dB
    # (Niantic's 4-5 bit SH, on bands trained from step 30), SOG -0.03 dB
    drops = {fmt: scores["ply"] - scores[fmt] for fmt in NAMES}
    assert scores["ply"] > 16.5, scores
    assert drops["compressed-ply"] < 0.1 and drops["spz"] < 0.5 and drops["sog"] < 0.2, (scores["ply"], drops)


def damaged_files(folder: Path, tmp_path: Path):
    """(file, what its one-line error says) for each format: truncated, wrong magic, wrong version, NaN."""
    compressed = (folder / NAMES["compressed-ply"]).read_bytes()
    spz = gzip.decompress((folder / NAMES["spz"]).read_bytes())
    bundle = zipfile.ZipFile(folder / NAMES["sog"])
    meta = json.loads(bundle.read("meta.json"))
    header_end = compressed.index(b"end_header\n") + len(b"end_header\n")

    def sog_with(name: str, **replace) -> Path:
        path = tmp_path / name
        with zipfile.ZipFile(path, "w") as out:
            for member in bundle.namelist():
                out.writestr(member, replace.get(member.replace(".", "_"), bundle.read(member)))
        return path

    def write(name: str, data: bytes) -> Path:
        (tmp_path / name).write_bytes(data)
        return tmp_path / name

    nan_chunk = bytearray(compressed)
    nan_chunk[header_end : header_end + 4] = struct.pack("<f", float("nan"))
    v1 = struct.pack("<IIIBBBB", 0x5053474E, 1, 1, 0, 12, 0, 0) + struct.pack("<3e", np.nan, 0, 0) + bytes(1 + 3 + 3 + 3)
    yield write("cut.compressed.ply", compressed[: len(compressed) // 2]), "truncated"
    yield write("magic.compressed.ply", b"plx" + compressed[3:]), "has no PLY header"
    yield write("layout.compressed.ply", compressed.replace(b"packed_scale", b"packed_scalx", 1)), "not a compressed .ply"
    yield write("nan.compressed.ply", bytes(nan_chunk)), "NaN or inf"
    yield write("cut.spz", (folder / NAMES["spz"]).read_bytes()[:5000]), "gzip stream is damaged"
    yield write("magic.spz", gzip.compress(b"XGSP" + spz[4:])), "not 0x5053474e (NGSP)"
    yield write("version.spz", gzip.compress(spz[:4] + struct.pack("<I", 9) + spz[8:])), "of version 9"
    yield write("short.spz", gzip.compress(spz[: len(spz) // 2])), "truncated"
    yield write("nan.spz", gzip.compress(v1)), "positions hold NaN"
    yield write("cut.sog", (folder / NAMES["sog"]).read_bytes()[:-300]), "not a readable zip"
    yield sog_with("magic.sog", quats_webp=b"RIFX" + bundle.read("quats.webp")[4:]), "quats.webp is not a readable WebP"
    yield sog_with("version.sog", meta_json=json.dumps({**meta, "version": 3})), "SOG version 3"
    nan_meta = {**meta, "scales": {**meta["scales"], "codebook": [float("nan")] * 256}}
    yield sog_with("nan.sog", meta_json=json.dumps(nan_meta)), "scales.codebook is not 256 finite numbers"


def test_damaged_files_end_in_one_line(exported, tmp_path):
    folder, _ = exported
    for path, message in damaged_files(folder, tmp_path):
        with pytest.raises(SplatFileError) as error:
            read_splats(path)
        text = str(error.value)
        assert "\n" not in text and text.startswith(str(path)) and message in text, (path.name, text)


def test_cut_anywhere_each_format_fails_cleanly(exported, tmp_path):
    """Every prefix tried of each file either reads or raises SplatFileError: nothing else escapes."""
    folder, _ = exported
    for name in NAMES.values():
        data = (folder / name).read_bytes()
        for cut in np.linspace(0, len(data) - 1, 25).astype(int):
            path = tmp_path / f"cut{cut}{name[5:]}"
            path.write_bytes(data[:cut])
            with pytest.raises(SplatFileError):
                read_splats(path)

