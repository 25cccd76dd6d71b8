"""`tinysplat-export` and `--pipeline.model.init-ply` on a short real-scene run: the same file as
Nerfstudio's `ns-export gaussian-splat`, read back by independent readers, and a round trip
train -> export -> import -> render that gives the same image."""

import copy
import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import splat_transform
import torch
from plyfile import PlyData, PlyElement
from scene import scene_dir
from training import TRAINED_STEPS
from training import build_trainer, run_command as run, train_steps

from tinysplat_ns.core.ply import read_ply

def vertex_table(path: Path) -> np.ndarray:
    return PlyData.read(str(path))["vertex"].data


def test_same_file_as_ns_export_read_by_plyfile(trained):
    work, config = trained
    out = run(["tinysplat-export", "--load-config", config, "--output", work / "ours" / "scene.ply"], work).stdout
    run(["ns-export", "gaussian-splat", "--load-config", config, "--output-dir", work / "theirs"], work)
    ours, theirs = vertex_table(work / "ours" / "scene.ply"), vertex_table(work / "theirs" / "splat.ply")
    assert ours.dtype == theirs.dtype and len(ours) == len(theirs) > 1000
    assert len(ours.dtype.names) == 62  # SH degree 3
    for name in ours.dtype.names:
        assert np.array_equal(ours[name], theirs[name]), name
    assert np.abs(ours["f_rest_44"]).max() > 1e-4  # the last band was trained, not zeros
    assert f"Wrote {len(ours):,} of" in out and f"(SH degree 3, step {TRAINED_STEPS - 1})" in out


def test_splat_transform_reads_the_exported_files(trained):
    work, config = trained
    run(["tinysplat-export", "--load-config", config, "--output", work / "st" / "scene.ply"], work)
    run(["tinysplat-export", "--load-config", config, "--output", work / "st" / "scene.splat"], work)
    reference = vertex_table(work / "st" / "scene.ply")
    from_ply = splat_transform.to_columns(work / "st" / "scene.ply", work / "st")
    from_splat = splat_transform.to_columns(work / "st" / "scene.splat", work / "st")
    assert len(from_ply["x"]) == len(from_splat["x"]) == len(reference)
    for name in ("x", "f_rest_44", "opacity", "rot_3"):
        np.testing.assert_allclose(from_ply[name], reference[name], rtol=1e-6, atol=0, err_msg=name)
    assert np.array_equal(np.sort(from_splat["x"]), np.sort(reference["x"]))


def test_filters_keep_exactly_the_selected_gaussians(trained):
    work, config = trained
    low, high = (-0.5, -0.5, -0.5), (0.5, 0.5, 0.5)
    out = run(
        ["tinysplat-export", "--load-config", config, "--output", work / "filtered.ply", "--min-opacity", 0.1,
         "--crop-min", *low, "--crop-max", *high],
        work,
    ).stdout  # fmt: skip
    run(["tinysplat-export", "--load-config", config, "--output", work / "all.ply", "--min-opacity", 0], work)
    everything = vertex_table(work / "all.ply")
    xyz = np.stack([everything["x"], everything["y"], everything["z"]], axis=1)
    expected = (1 / (1 + np.exp(-everything["opacity"].astype(np.float64))) >= 0.1) & np.all(
        (xyz >= low) & (xyz <= high), axis=1
    )
    kept = vertex_table(work / "filtered.ply")
    assert 0 < len(kept) == expected.sum() < len(everything)
    assert np.array_equal(kept["x"], everything["x"][expected])
    assert "below --min-opacity" in out and "outside the crop box" in out


def render_view(model, cameras, index=0):
    with torch.no_grad():
        return model.get_outputs_for_camera(cameras[index : index + 1])["rgb"]


@pytest.mark.parametrize("frame", ["run", "data"])
def test_round_trip_export_import_renders_the_same_image(trained, frame):
    """In the run's frame the image is bitwise the same; through the dataset's frame (there and
    back by a similarity transform in float32) within float32 round-off."""
    from nerfstudio.utils.eval_utils import eval_setup

    work, config = trained
    path = work / f"round_trip_{frame}.ply"
    run(["tinysplat-export", "--load-config", config, "--output", path, "--min-opacity", 0, "--frame", frame], work)
    run_config, pipeline, _, step = eval_setup(config, test_mode="inference")
    cameras = pipeline.datamanager.train_dataparser_outputs.cameras
    original = render_view(pipeline.model, cameras, 3)

    imported_config = copy.deepcopy(run_config)
    imported_config.pipeline.model.init_ply = path
    imported_config.pipeline.model.init_ply_frame = frame
    imported = imported_config.pipeline.setup(device="cpu", test_mode="val")  # as ns-train builds it
    imported.eval()
    imported.model.update_to_step(step)
    assert len(imported.model.means) == len(pipeline.model.means)
    again = render_view(imported.model, cameras, 3)
    assert original.std() > 0.05
    if frame == "run":
        assert torch.equal(again, original), float((again - original).abs().max())
    else:
        torch.testing.assert_close(imported.model.means, pipeline.model.means, rtol=0, atol=2e-6)
        # A pixel whose alpha sits on the 1/255 cut can change by up to that alpha's share, 1/255.
        # Measured: 1.08e-3 with the compiled rasterizer, 2.0e-4 with the PyTorch one (means within 4.8e-7)
        assert float((again - original).abs().max()) < 1 / 255


def test_data_frame_is_the_datasets_own(trained):
    """Exported in the dataset's frame, the Gaussians (the shared run's 300 steps from the SfM points,
    none pruned: densification starts at 500) sit on the dataset's sparse points in its original
    coordinates: sparse_pc.ply is stored in transforms.json's frame, `applied_transform` away from the
    original (COLMAP's)."""
    work, config = trained
    path = work / "data_frame.ply"
    run(["tinysplat-export", "--load-config", config, "--output", path, "--min-opacity", 0, "--frame", "data"], work)
    means = read_ply(path)["means"].double()
    saved = torch.tensor(np.stack([vertex_table(scene_dir() / "sparse_pc.ply")[a] for a in "xyz"], 1)).double()
    applied = torch.tensor(json.loads((scene_dir() / "transforms.json").read_text())["applied_transform"])
    original = (saved - applied[:, 3].double()) @ applied[:, :3].double()  # R^T (x - t)
    assert means.shape == original.shape
    distance = (means - original).norm(dim=1)
    extent = (original.quantile(0.95, dim=0) - original.quantile(0.05, dim=0)).norm()
    # measured: median 0.046, max 0.26 after the shared run's 300 steps (0.022, 0.060 after 60),
    # against an extent of 8.6 (in the run's frame, scaled by 0.19 and turned, they would be metres away)
    assert distance.median() < 0.01 * extent, (float(distance.median()), float(extent))


def test_training_starts_from_a_ply(trained, tmp_path):
    """From the exported Gaussians, the first training step already fits the photos far better
    than from the SfM points, and all of them are there."""
    work, config = trained
    path = work / "start.ply"
    run(["tinysplat-export", "--load-config", config, "--output", path], work)
    losses = {}
    for start, overrides in (("sfm", {}), ("ply", {"pipeline__model__init_ply": path})):
        trainer = build_trainer(scene_dir(), tmp_path / start, **overrides)
        if start == "ply":
            assert torch.equal(trainer.pipeline.model.means.detach(), read_ply(path)["means"])
        seen = []
        train_steps(trainer, range(3), each=lambda step, loss: seen.append(loss))
        losses[start] = np.mean(seen)
    # measured (mean of the first 3 steps): 0.091 from the ply vs 0.162 from the SfM points, ratio 0.56
    assert losses["ply"] < 0.75 * losses["sfm"], losses


def test_moved_run_folder_exports_the_same_file(trained):
    """The checkpoints are looked up beside the config first, so a run folder moved elsewhere (its
    config.yml still names the old place) exports as before."""
    work, config = trained
    run(["tinysplat-export", "--load-config", config, "--output", work / "before.ply"], work)
    moved = config.parent.with_name("moved")
    config.parent.rename(moved)
    try:
        run(["tinysplat-export", "--load-config", moved / "config.yml", "--output", work / "after.ply"], work)
    finally:
        moved.rename(config.parent)
    assert (work / "before.ply").read_bytes() == (work / "after.ply").read_bytes()


def test_a_run_started_from_a_ply_loads_without_it(trained, tmp_path):
    """ns-viewer, ns-eval and ns-export rebuild the model before loading its checkpoint; the .ply
    it started from may be gone by then."""
    from nerfstudio.utils.eval_utils import eval_setup

    work, config = trained
    path = tmp_path / "start.ply"
    run(["tinysplat-export", "--load-config", config, "--output", path], work)
    run(
        ["ns-train", "tinysplat-cpu", "--data", scene_dir(), "--output-dir", tmp_path / "out", "--vis", "tensorboard",
         "--max-num-iterations", 3, "--pipeline.model.init-ply", path],
        tmp_path,
    )  # fmt: skip
    count = len(vertex_table(path))  # tinysplat-cpu densifies from step 500: 3 steps keep them all
    path.unlink()
    _, pipeline, _, step = eval_setup(next((tmp_path / "out").rglob("config.yml")), test_mode="inference")
    assert step == 2 and len(pipeline.model.means) == count


def test_init_ply_of_another_sh_degree_warns_and_fits_the_model(trained, tmp_path, capsys):
    """README: of a file's SH bands, "higher bands than the model's are dropped, missing ones start at
    zero", each with the warning --pipeline.model.init-ply prints: degree 3 into
    --pipeline.model.sh-degree 1, and degree 1 into the default 3."""
    import yaml

    work, config = trained
    three, one = tmp_path / "degree3.ply", tmp_path / "degree1.ply"
    run(["tinysplat-export", "--load-config", config, "--output", three, "--min-opacity", 0], work)
    table = vertex_table(three)
    # f_rest is channel-major: coefficient k of channel c in f_rest_{c * 15 + k}
    rest = np.stack([np.stack([table[f"f_rest_{c * 15 + k}"] for c in range(3)], axis=1) for k in range(15)], axis=1)
    others = [name for name in table.dtype.names if not name.startswith("f_rest_")]
    after_dc = others.index("f_dc_2") + 1
    layout = others[:after_dc] + [f"f_rest_{i}" for i in range(9)] + others[after_dc:]
    degree_one = np.empty(len(table), [(name, "<f4") for name in layout])
    for name in others:
        degree_one[name] = table[name]
    for c in range(3):
        for k in range(3):
            degree_one[f"f_rest_{c * 3 + k}"] = table[f"f_rest_{c * 15 + k}"]
    PlyData([PlyElement.describe(degree_one, "vertex")]).write(str(one))

    run_config = yaml.load(config.read_text(), Loader=yaml.Loader)
    for path, degree, line in (
        (three, 1, f"Warning: {three} has SH degree 3, the model 1: dropping the higher bands"),
        (one, 3, f"Warning: {one} has SH degree 1, the model 3: new bands start at zero"),
    ):
        started = copy.deepcopy(run_config)
        started.pipeline.model.init_ply = path
        started.pipeline.model.sh_degree = degree
        capsys.readouterr()
        model = started.pipeline.setup(device="cpu", test_mode="val").model  # as ns-train builds it
        assert line in capsys.readouterr().out.splitlines()
        features = model.gauss_params["features_rest"].detach().numpy()
        assert features.shape == (len(table), (degree + 1) ** 2 - 1, 3)
        assert np.array_equal(features[:, :3], rest[:, :3]) and np.abs(rest[:, :3]).max() > 1e-3
        assert not features[:, 3:].any()


def test_bad_input_ends_in_one_line(trained, tmp_path):
    work, config = trained
    garbage = tmp_path / "garbage.yml"
    garbage.write_text("{ this is: [not a run")
    no_gaussians = tmp_path / "nerfacto" / "config.yml"  # a run of a method without Gaussians
    (no_gaussians.parent / "nerfstudio_models").mkdir(parents=True)
    no_gaussians.write_text(config.read_text().replace("method_name: tinysplat-cpu", "method_name: nerfacto"))
    torch.save(
        {"step": 5, "pipeline": {"_model.field.weight": torch.zeros(3)}},
        no_gaussians.parent / "nerfstudio_models" / "step-000000005.ckpt",
    )
    broken = tmp_path / "broken.spz"  # damaged files of every format: tests/test_ply.py, test_splat_formats.py
    broken.write_bytes(gzip.compress(bytes(100)))  # gzip'd, but no SPZ header
    cases = [
        (["tinysplat-export", "--load-config", tmp_path / "none.yml", "--output", tmp_path / "a.ply"], "no such file"),
        (["tinysplat-export", "--load-config", garbage, "--output", tmp_path / "a.ply"], "not a Nerfstudio run config"),
        (["tinysplat-export", "--load-config", config, "--output", tmp_path / "a.obj"], "unknown format; end it in"),
        (["tinysplat-export", "--load-config", no_gaussians, "--output", tmp_path / "a.ply"],
         "a nerfacto run has no Gaussians"),
        (["tinysplat-export", "--load-config", config, "--output", tmp_path / "a.ply", "--min-opacity", 1],
         "--min-opacity must be"),
        (["ns-train", "tinysplat-cpu", "--data", scene_dir(), "--output-dir", tmp_path / "train",
          "--vis", "tensorboard",
          "--pipeline.model.init-ply", broken], f"--pipeline.model.init-ply: {broken}: magic 0x00000000, not 0x5053474e (NGSP)"),
    ]  # fmt: skip
    for cmd, message in cases:
        result = run(cmd, tmp_path, check=False)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert lines[-1].startswith("error: ") and message in lines[-1], lines[-1]
    assert not list(tmp_path.glob("a.*")) and not list(tmp_path.glob("train/**/*.ckpt"))
