"""The 3DGS `.ply` and `.splat` files (tinysplat_ns/core/ply.py, torch and numpy only): values read
back by independent readers (plyfile; PlayCanvas' splat-transform, outside Python), malformed files
rejected in one line, and a fuzz run of corrupted files."""

import faulthandler
import math

import numpy as np
import pytest
import splat_transform
import torch
from plyfile import PlyData, PlyElement

from tinysplat_ns.core.ply import (
    SplatFileError,
    finite_rows,
    property_names,
    read_ply,
    sh_degree_of,
    with_sh_degree,
    write_ply,
    write_splat,
)
from tinysplat_ns.core.sh import SH_C0


def random_gaussians(n: int, degree: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return {
        "means": torch.randn(n, 3, generator=gen),
        "scales": torch.randn(n, 3, generator=gen) - 3,
        "quats": torch.randn(n, 4, generator=gen),
        "opacities": torch.randn(n, 1, generator=gen),
        "features_dc": torch.randn(n, 3, generator=gen),
        "features_rest": torch.randn(n, (degree + 1) ** 2 - 1, 3, generator=gen),
    }


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_round_trip_is_exact_and_plyfile_reads_the_standard_layout(tmp_path, degree):
    gaussians = random_gaussians(500, degree)
    path = tmp_path / "scene.ply"
    assert write_ply(path, gaussians) == 500
    back = read_ply(path)
    for name, value in gaussians.items():
        assert torch.equal(back[name], value), name

    vertex = PlyData.read(str(path))["vertex"]
    rest = 3 * ((degree + 1) ** 2 - 1)
    assert [p.name for p in vertex.properties] == property_names(rest // 3)
    assert all(p.val_dtype == "f4" for p in vertex.properties)
    assert PlyData.read(str(path)).byte_order == "<"
    # independent of our reader: f_rest is channel-major (all red coefficients, then green, blue)
    for k in range(rest // 3):
        for channel in range(3):
            column = vertex[f"f_rest_{channel * (rest // 3) + k}"]
            assert np.array_equal(column, gaussians["features_rest"][:, k, channel].numpy())
    assert np.array_equal(vertex["opacity"], gaussians["opacities"][:, 0].numpy())
    assert np.array_equal(vertex["rot_0"], gaussians["quats"][:, 0].numpy())  # w first


def test_finite_rows_finds_every_non_finite_value():
    gaussians = random_gaussians(6, 2)
    gaussians["means"][1, 2] = math.nan
    gaussians["features_rest"][2, 7, 1] = math.inf
    gaussians["opacities"][3, 0] = -math.inf
    gaussians["scales"][4] = torch.tensor([3e38, 3e38, -3e38])  # large, finite: kept
    assert finite_rows(gaussians).tolist() == [True, False, False, False, True, True]


def test_sh_degree_is_adapted_to_the_model():
    three = random_gaussians(20, 3)
    one = with_sh_degree(three, 1)
    assert sh_degree_of(one) == 1 and torch.equal(one["features_rest"], three["features_rest"][:, :3])
    back = with_sh_degree(one, 3)
    assert torch.equal(back["features_rest"][:, :3], one["features_rest"])
    assert back["features_rest"].shape == (20, 15, 3) and not back["features_rest"][:, 3:].any()
    assert torch.equal(with_sh_degree(three, 0)["features_rest"], torch.zeros(20, 0, 3))


def test_reads_other_writers_files(tmp_path):
    """Another writer's choices: big-endian doubles, extra properties, properties in another order,
    no normals, a trailing element."""
    gaussians = random_gaussians(50, 1, seed=1)
    names = property_names(3)
    names.remove("nx"), names.remove("ny"), names.remove("nz")
    columns = {
        "x": gaussians["means"][:, 0], "y": gaussians["means"][:, 1], "z": gaussians["means"][:, 2],
        "opacity": gaussians["opacities"][:, 0],
    }  # fmt: skip
    for i in range(3):
        columns[f"f_dc_{i}"] = gaussians["features_dc"][:, i]
        columns[f"scale_{i}"] = gaussians["scales"][:, i]
        for k in range(3):
            columns[f"f_rest_{i * 3 + k}"] = gaussians["features_rest"][:, k, i]
    for i in range(4):
        columns[f"rot_{i}"] = gaussians["quats"][:, i]
    order = list(reversed(names)) + ["confidence"]
    table = np.empty(50, dtype=[(name, ">f8") for name in order[:-1]] + [("confidence", ">u1")])
    for name in order[:-1]:
        table[name] = columns[name].double().numpy()
    table["confidence"] = 7
    faces = np.empty(0, dtype=[("vertex_indices", "i4", (3,))])
    PlyData([PlyElement.describe(table, "vertex"), PlyElement.describe(faces, "face")], byte_order=">").write(
        str(tmp_path / "other.ply")
    )
    back = read_ply(tmp_path / "other.ply")
    for name, value in gaussians.items():
        assert torch.equal(back[name], value), name


def test_splat_transform_reads_our_ply_to_the_same_values(tmp_path):
    gaussians = random_gaussians(300, 3, seed=2)
    write_ply(tmp_path / "scene.ply", gaussians)
    columns = splat_transform.to_columns(tmp_path / "scene.ply", tmp_path)
    expected = {name: PlyData.read(str(tmp_path / "scene.ply"))["vertex"][name] for name in property_names(15)}
    assert set(columns) == set(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(columns[name], value, rtol=1e-6, atol=0, err_msg=name)


def test_splat_file_holds_the_gaussians_as_splat_transform_reads_them(tmp_path):
    gaussians = random_gaussians(400, 2, seed=3)
    gaussians["features_dc"] = (torch.rand(400, 3) - 0.5) / SH_C0  # colours inside [0, 1]
    assert write_splat(tmp_path / "scene.splat", gaussians) == 400
    assert (tmp_path / "scene.splat").stat().st_size == 32 * 400
    columns = splat_transform.to_columns(tmp_path / "scene.splat", tmp_path)
    # match rows by position (the file is sorted by size x opacity, largest first)
    volume = (gaussians["scales"].sum(1) + torch.nn.functional.logsigmoid(gaussians["opacities"][:, 0])).numpy()
    order = [int(np.argmin(np.abs(gaussians["means"][:, 0].numpy() - x))) for x in columns["x"]]
    assert sorted(order) == list(range(400))
    assert np.all(np.diff(volume[order]) <= 1e-5), "largest and most opaque first"
    g = {name: value[order].double().numpy() for name, value in gaussians.items()}
    for i, axis in enumerate("xyz"):
        np.testing.assert_array_equal(columns[axis], g["means"][:, i].astype(np.float32))
    np.testing.assert_allclose(columns["scale_0"], g["scales"][:, 0], atol=1e-6)
    # bytes: colour and opacity within half a step of 1/255, rotation within one step of 1/128
    rgb = 0.5 + SH_C0 * g["features_dc"]
    rgb_back = 0.5 + SH_C0 * np.stack([columns[f"f_dc_{i}"] for i in range(3)], axis=1)
    assert np.abs(rgb_back - rgb).max() <= 0.5 / 255 + 1e-6
    opacity = 1 / (1 + np.exp(-g["opacities"][:, 0]))
    assert np.abs(1 / (1 + np.exp(-columns["opacity"])) - opacity).max() <= 0.5 / 255 + 1e-6
    quats = g["quats"] / np.linalg.norm(g["quats"], axis=1, keepdims=True)
    quats_back = np.stack([columns[f"rot_{i}"] for i in range(4)], axis=1)
    sign = np.sign((quats * quats_back).sum(1, keepdims=True))
    assert np.abs(quats_back * sign - quats).max() < 2 / 128


def write_table(path, header_lines, body: bytes):
    path.write_bytes(("\n".join(["ply", *header_lines, "end_header"]) + "\n").encode() + body)
    return path


STANDARD = ["format binary_little_endian 1.0", "element vertex 2"] + [f"property float {n}" for n in property_names(0)]


@pytest.mark.parametrize(
    "header, body, message",
    [
        (STANDARD, bytes(2 * 17 * 4 - 1), "truncated: 2 vertices need 136 bytes after the header, the file has 135"),
        (["format ascii 1.0"] + STANDARD[1:], b"", "PLY format ascii is not supported"),
        ([line for line in STANDARD if "opacity" not in line], bytes(2 * 16 * 4), "missing properties opacity"),
        ([line.replace("float scale_1", "int scale_1") for line in STANDARD], bytes(136), "scale_1 (i4) are not float"),
        (STANDARD + ["property float f_rest_0"], bytes(2 * 18 * 4), "1 f_rest_* properties; a 3DGS .ply"),
        (STANDARD + ["property list uchar int idx"], bytes(200), "list properties have no place"),
        (STANDARD + ["property float x"], bytes(2 * 18 * 4), "properties declared twice: x"),
        (["format binary_little_endian 1.0", "element chunk 1", "property float min_x", "element vertex 2"]
         + STANDARD[2:], bytes(140), "first element is 'chunk', not 'vertex'"),
        (STANDARD[:1] + ["element vertex -2"] + STANDARD[2:], b"", "is not 'element <name> <count>'"),
        (STANDARD[1:2] + STANDARD[2:], b"", "header has no format line"),
        (STANDARD[:1] + ["propertty float x"], b"", "is not PLY"),
    ],
)  # fmt: skip
def test_malformed_files_fail_in_one_line_naming_the_file(tmp_path, header, body, message):
    path = write_table(tmp_path / "bad.ply", header, body)
    with pytest.raises(SplatFileError) as error:
        read_ply(path)
    text = str(error.value)
    assert text.startswith(f"{path}: ") and "\n" not in text
    assert message in text


@pytest.mark.parametrize("value, column", [(math.nan, "opacity"), (math.inf, "scale_2"), (-math.inf, "x")])
def test_non_finite_values_are_rejected_by_vertex(tmp_path, value, column):
    gaussians = random_gaussians(10, 1)
    write_ply(tmp_path / "scene.ply", gaussians)
    data = PlyData.read(str(tmp_path / "scene.ply"))
    data["vertex"][column][7] = value
    data.write(str(tmp_path / "broken.ply"))
    with pytest.raises(SplatFileError, match=r"1 vertices \(first: 7\) have NaN or inf in"):
        read_ply(tmp_path / "broken.ply")


def test_missing_empty_and_foreign_files(tmp_path):
    with pytest.raises(SplatFileError, match=r"absent.ply: cannot be read \(No such file or directory\)"):
        read_ply(tmp_path / "absent.ply")
    (tmp_path / "empty.ply").write_bytes(b"")
    (tmp_path / "photo.ply").write_bytes(b"\x89PNG\r\n" + bytes(100))
    for name in ("empty.ply", "photo.ply"):
        with pytest.raises(SplatFileError, match="has no PLY header; give a binary 3DGS .ply"):
            read_ply(tmp_path / name)


def test_fuzz_corrupted_files_end_in_a_clear_error_or_a_valid_read(tmp_path):
    """400 corruptions of a real file (truncations, flipped bytes in the header and the body,
    header lines dropped, doubled or swapped): each either reads into finite arrays of consistent
    shapes or raises SplatFileError with one line; nothing else escapes and nothing hangs."""
    write_ply(tmp_path / "good.ply", random_gaussians(64, 3, seed=4))
    good = (tmp_path / "good.ply").read_bytes()
    header_end = good.index(b"end_header") + len(b"end_header\n")
    rng = np.random.default_rng(0)
    faulthandler.dump_traceback_later(240, exit=True)  # a hang fails the run instead of stalling CI
    outcomes = {"error": 0, "read": 0}
    try:
        for trial in range(400):
            data = bytearray(good)
            kind = trial % 5
            if kind == 0:
                data = data[: int(rng.integers(0, len(data)))]
            elif kind in (1, 2):
                span = header_end if kind == 1 else len(data)
                for _ in range(int(rng.integers(1, 8))):
                    data[int(rng.integers(0, span))] = int(rng.integers(0, 256))
            else:
                lines = bytes(data[:header_end]).split(b"\n")
                i, j = (int(v) for v in rng.integers(1, len(lines) - 2, size=2))
                if kind == 3:
                    del lines[i]
                else:
                    lines.insert(i, lines[j]) if rng.random() < 0.5 else lines.__setitem__(slice(i, i + 1), [lines[j]])
                data = bytearray(b"\n".join(lines)) + data[header_end:]
            path = tmp_path / f"fuzz{trial}.ply"
            path.write_bytes(bytes(data))
            try:
                back = read_ply(path)
            except SplatFileError as e:
                assert "\n" not in str(e) and str(e).startswith(str(path))
                outcomes["error"] += 1
            else:
                n = len(back["means"])
                assert all(len(v) == n and torch.isfinite(v).all() for v in back.values())
                assert back["features_rest"].shape[1:] in ((0, 3), (3, 3), (8, 3), (15, 3))
                outcomes["read"] += 1
            path.unlink()
    finally:
        faulthandler.cancel_dump_traceback_later()
    # both outcomes happen (body flips that stay finite read fine): the fuzz reaches both paths
    assert outcomes["error"] > 200 and outcomes["read"] > 20, outcomes
