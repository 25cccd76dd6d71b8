"""`tinysplat-compare`: two real trained runs in one viser page, looked at in Debian's Chromium
through Playwright, used as a user would (the panel's controls), its scores checked against
`ns-eval`, its counts against the checkpoints, its photo side against the photo file."""

import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from browser import CHROMIUM, CHROMIUM_ARGS, free_port, wait_for_port
from PIL import Image
from scene import scene_dir
from training import ns_train

from tinysplat_ns.compare.picture import LETTERBOX_RGB

BIN = Path(sys.executable).parent
SCORE = re.compile(r"(\d+) test views: PSNR ([\d.]+) dB, SSIM ([\d.]+)")


@pytest.fixture(scope="module")
def runs(trained, tmp_path_factory):
    """A: tinysplat-cpu (the suite's shared run, conftest's `trained`); B: a shorter tinysplat-cpu-mcmc
    run on the same photos, whose dataparser keeps the dataset's own orientation, centre and scale, so
    B's coordinates differ from A's."""
    _, a = trained
    b = ns_train(
        "tinysplat-cpu-mcmc", tmp_path_factory.mktemp("b"), "--max-num-iterations", "60",
        "nerfstudio-data", "--orientation-method", "none", "--center-method", "none", "--auto-scale-poses", "False",
    )  # fmt: skip
    return a, b


def test_mcmc_run_logs_its_penalties_by_name(runs):
    """README ("Loss"): the MCMC strategy's penalties are logged as `Train Loss Dict/mcmc_opacity_reg` and
    `.../mcmc_scale_reg` beside the configured terms (B's run, read back from its tensorboard file)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next(runs[1].parent.rglob("events.out.tfevents.*"))))
    events.Reload()
    logged = {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    for name in ("l1", "dssim", "mcmc_opacity_reg", "mcmc_scale_reg"):
        values = logged[f"Train Loss Dict/{name}"]
        assert len(values) >= 5 and all(v > 0 for v in values), (name, values)
    assert all(v < 0.01 for v in logged["Train Loss Dict/mcmc_opacity_reg"])  # 0.01 x a mean opacity


def start_compare(configs, tmp_path: Path, *extra: str):
    port = free_port()
    log = tmp_path / f"compare-{port}.log"
    command = [str(BIN / "tinysplat-compare"), "--port", str(port), "--host", "127.0.0.1", *extra]
    for config in configs:
        command += ["--load-config", str(config)]
    proc = subprocess.Popen(command, cwd=tmp_path, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    wait_for_port(port, proc)
    # the page is up (its server listens before the page is built; a Ctrl-C until then stops "while loading")
    wait_for_log(log, r"tinysplat-compare: open http://")
    return proc, port, log


def interrupt(proc: subprocess.Popen, log: Path) -> None:
    """Ctrl-C: the server stops at once, exit status 0, no traceback."""
    proc.send_signal(signal.SIGINT)
    try:
        assert proc.wait(timeout=60) == 0, log.read_text()[-2000:]
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("tinysplat-compare did not stop on Ctrl-C within 60 s") from None
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
    assert text.rstrip().endswith("tinysplat-compare: stopped")


def wait_for(read, pattern: str, count: int, timeout: float, what: str) -> list:
    """The matches of `pattern` in the text `read()` gives, once there are `count` of them."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = re.findall(pattern, read())
        if len(found) >= count:
            return found
        time.sleep(1)
    raise AssertionError(f"{what} never showed {pattern!r} {count} times; it shows:\n{read()[-3000:]}")


class Page:
    """The compare page in a headless Chromium, driven through its panel."""

    def __init__(self, playwright, port: int):
        if not Path(CHROMIUM).exists():
            pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium package")
        self.browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        self.page = self.browser.new_page(viewport={"width": 1200, "height": 800})
        self.page.goto(f"http://127.0.0.1:{port}")

    def text(self) -> str:
        return self.page.inner_text("body")

    def wait_for_text(self, pattern: str, count: int = 1, timeout: float = 240) -> list:
        return wait_for(self.text, pattern, count, timeout, "the page")

    def _input(self, label: str):
        """The panel's input that `label` names."""
        target = self.page.locator(f"xpath=//label[normalize-space()='{label}']").get_attribute("for")
        return self.page.locator(f"[id='{target}']")

    def choose(self, label: str, option: str) -> None:
        self._input(label).click()
        self.page.get_by_role("option").filter(has_text=option).first.click()

    def value(self, label: str) -> str:
        return self._input(label).input_value()

    def set_number(self, label: str, value: float) -> None:
        number_input = "input[contains(@class,'NumberInput-input')]"
        box = self.page.locator(
            f"xpath=//label[normalize-space()='{label}']/ancestor::*[.//{number_input}][1]//{number_input}"
        )
        box.fill(str(value))
        box.press("Enter")

    def picture(self, path: Path, settle: float = 4, timeout: float = 120) -> np.ndarray:
        """The 3D view's pixels (the panel sits beside it), once the full-resolution frame is in: after
        `settle` seconds, the first of two screenshots a second apart that agree (a slow machine, or
        one under load, may still be drawing the low-resolution frame viser shows first)."""
        time.sleep(settle)
        previous, deadline = None, time.monotonic() + timeout
        while True:
            self.page.screenshot(path=str(path))
            # the 3D view's canvas is the one beside the panel (the other spans the whole page)
            box = min((c.bounding_box() for c in self.page.locator("canvas").all()), key=lambda b: b["width"])
            image = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
            view = image[int(box["y"]) : int(box["y"] + box["height"]), int(box["x"]) : int(box["x"] + box["width"])]
            if previous is not None and previous.shape == view.shape and np.abs(view - previous).mean() < 0.5:
                return view
            if time.monotonic() > deadline:
                raise AssertionError(f"the 3D view kept changing for {timeout:.0f} s: {path}")
            previous = view
            time.sleep(1)

    def close(self) -> None:
        self.browser.close()


def strips(picture: np.ndarray):
    """Pixels left and right of the middle divider, below the labels and clear of the line's JPEG
    ringing: each side's render."""
    height, width = picture.shape[:2]
    rows, middle, margin, strip = slice(int(0.25 * height), int(0.95 * height)), width // 2, width // 40, width // 6
    return picture[rows, middle - strip : middle - margin], picture[rows, middle + margin : middle + strip]


def assert_rendered(pixels: np.ndarray) -> None:
    """A photo-like render: strong variation and many colours, unlike an empty or flat side."""
    assert pixels.std() > 15
    # measured 1,898 colours on a side of the shared 300-step run (2026-12-06); an empty or flat side
    # has one to a few dozen
    assert len(np.unique(pixels.astype(np.uint8).reshape(-1, 3), axis=0)) > 1000


def gaussians_in_checkpoint(config: Path) -> int:
    checkpoint = max((config.parent / "nerfstudio_models").glob("step-*.ckpt"))
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    return state["pipeline"]["_model.gauss_params.means"].shape[0]


@pytest.fixture(scope="module")
def ns_eval(tmp_path_factory):
    """What `ns-eval` scores a run at, each run evaluated once for this file's tests."""
    folder, results = tmp_path_factory.mktemp("ns_eval"), {}

    def scores(config: Path) -> dict:
        if config not in results:
            out = folder / f"{config.parent.parent.name}.json"
            subprocess.run([str(BIN / "ns-eval"), "--load-config", str(config), "--output-path", str(out)],
                           check=True, capture_output=True, cwd=folder)  # fmt: skip
            results[config] = json.loads(out.read_text())["results"]
        return results[config]

    return scores


def test_two_runs_side_by_side_in_the_browser(runs, ns_eval, tmp_path):
    from playwright.sync_api import sync_playwright

    a, b = runs
    proc, port, log = start_compare(runs, tmp_path)
    try:
        with sync_playwright() as playwright:
            page = Page(playwright, port)
            scores = page.wait_for_text(SCORE.pattern, count=2)
            text = page.text()
            split_view = page.picture(tmp_path / "split.png")
            left, right = strips(split_view)
            assert_rendered(left)
            assert_rendered(right)

            # the divider: at 1 the whole picture is A, at 0 it is B; each time only the other side changes
            page.set_number("Divider", 1)
            only_a = page.picture(tmp_path / "only_a.png")
            page.set_number("Divider", 0)
            only_b = page.picture(tmp_path / "only_b.png")
            unchanged = np.abs(strips(only_a)[0] - left).mean(), np.abs(strips(only_b)[1] - right).mean()
            changed = np.abs(strips(only_a)[1] - right).mean(), np.abs(strips(only_b)[0] - left).mean()
            print("mean |difference| of the unchanged and the changed sides:", unchanged, changed)
            # measured: unchanged up to 0.6 (JPEG), changed 9.2 and 11.9 (B trained 60 steps, A 200 before A
            # became the shared 300-step run)
            assert max(unchanged) < 2
            assert min(changed) > 5  # A and B render the same place differently

            # orbit the camera off the test view with the mouse: both runs render the new view
            page.set_number("Divider", 0.5)
            page.page.mouse.move(400, 400)
            page.page.mouse.down()
            page.page.mouse.move(300, 380, steps=10)
            page.page.mouse.up()
            orbited = page.picture(tmp_path / "orbited.png")
            for before, after in zip(strips(split_view), strips(orbited)):
                # measured: std 32.4 and 18.9 (blurrier off the photos; a flat side is ~0), change 38 and 36
                assert after.std() > 8 and np.abs(after - before).mean() > 10

            # jump to a test view and put its photo on the right
            page.choose("Right", "Test photo")
            page.choose("Test view", "1: ")
            photo_name = page.value("Test view").split(": ", 1)[1]
            on_photo = page.picture(tmp_path / "photo.png", settle=6)
            page.close()
    finally:
        if proc.poll() is None:
            interrupt(proc, log)

    # labels: each run's method and Gaussian count (read back from its checkpoint)
    assert "A: tinysplat-cpu (" in text and "B: tinysplat-cpu-mcmc (" in text
    for config in runs:
        assert f"{gaussians_in_checkpoint(config):,} Gaussians" in text
    # scores on the test views: what ns-eval computes for each run, B through its own coordinates
    for config, (count, psnr, ssim) in zip((a, b), scores):
        reference = ns_eval(config)
        assert int(count) == 4
        assert abs(float(psnr) - reference["psnr"]) < 0.02, (psnr, reference)
        assert abs(float(ssim) - reference["ssim"]) < 0.002, (ssim, reference)
    # the right side is the photo file itself, where the test camera sees it (centred, full height)
    height, width = on_photo.shape[:2]
    photo = Image.open(scene_dir() / "images" / photo_name).convert("RGB")
    shown_width = round(height * photo.width / photo.height)
    expected = np.zeros_like(on_photo)
    left_edge = (width - shown_width) // 2
    expected[:, left_edge : left_edge + shown_width] = np.asarray(photo.resize((shown_width, height), Image.BILINEAR))
    difference = np.abs(strips(on_photo)[1] - strips(expected)[1]).mean()
    assert difference < 8, difference


def test_bad_input_gets_one_line(runs, tmp_path):
    a, _ = runs
    not_a_run = tmp_path / "other.yml"
    not_a_run.write_text("learning_rate: 0.1\n")
    no_checkpoint = tmp_path / "empty_run" / "config.yml"
    no_checkpoint.parent.mkdir()
    no_checkpoint.write_text(a.read_text().replace(a.parent.name, "never-trained"))  # nowhere to find one
    moved_data = tmp_path / "moved_data" / "config.yml"
    moved_data.parent.mkdir()
    config_text = a.read_text()  # (config.yml writes a path as a list of its parts)
    assert f"\n- {scene_dir().name}\n" in config_text
    moved_data.write_text(config_text.replace(f"\n- {scene_dir().name}\n", "\n- moved-away\n"))
    (moved_data.parent / "nerfstudio_models").symlink_to(a.parent / "nerfstudio_models")
    cases = {
        (tmp_path / "missing" / "config.yml", a): "no such file; pass the config.yml of a run",
        (not_a_run, a): "not a Nerfstudio run config",
        (a,): "got 1 sides; pass two",
        (a, a, "--max-resolution", "8"): "--max-resolution must be 32 to 4096",
        (a, no_checkpoint): "no checkpoint (step-*.ckpt)",
        (moved_data, a): "is not there; run from the folder ns-train ran in",
    }
    for configs, message in cases.items():
        command = [str(BIN / "tinysplat-compare")]
        for config in configs:
            command += ["--load-config", str(config)] if isinstance(config, Path) else [config]
        result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=120)
        assert result.returncode == 1, (configs, result.stdout[-500:], result.stderr[-2000:])
        assert "Traceback" not in result.stderr, result.stderr[-2000:]
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("error: ") and message in last, (configs, last)


def test_runs_on_different_datasets_warn_and_still_show(runs, tmp_path):
    """C trained on a copy of the scene without its first 8 photos: another dataset, other test photos."""
    from training import run_command

    a, _ = runs
    scene, fewer = scene_dir(), tmp_path / "fewer_photos"
    fewer.mkdir()
    transforms = json.loads((scene / "transforms.json").read_text())
    transforms["frames"] = sorted(transforms["frames"], key=lambda f: f["file_path"])[8:]
    (fewer / "transforms.json").write_text(json.dumps(transforms))
    for name in ("images", transforms.get("ply_file_path", "sparse_pc.ply")):
        (fewer / name).symlink_to(scene / name)
    c = ns_train("tinysplat-cpu", tmp_path, "--max-num-iterations", "20", data=fewer)

    proc, port, log = start_compare((a, c), tmp_path)
    try:
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}", timeout=30)
        assert page.status == 200 and b"<html" in page.read().lower()
    finally:
        interrupt(proc, log)
    warnings = [line for line in log.read_text().splitlines() if line.startswith("warning: ")]
    assert any("trained on different datasets" in line and str(fewer) in line for line in warnings), warnings
    assert any("held out different test photos" in line for line in warnings), warnings

    # a run beside a file scored on another dataset (--data): the same warnings, the page up
    run_command(["tinysplat-export", "--load-config", c, "--output", tmp_path / "c.ply", "--frame", "data"], tmp_path)
    proc, port, log = start_compare([a], tmp_path, "--load-splat", str(tmp_path / "c.ply"), "--data", str(fewer))
    try:
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}", timeout=30).status == 200
    finally:
        interrupt(proc, log)
    warnings = [line for line in log.read_text().splitlines() if line.startswith("warning: ")]
    assert any(line.startswith("warning: --data and A were trained on different datasets") for line in warnings), warnings
    assert any("--data and A held out different test photos" in line for line in warnings), warnings


def test_compares_with_another_nerfstudio_method(runs, tmp_path):
    """nerfacto, rendered through its own model on the CPU (3 steps: only the path is under test),
    from a checkpoint with numpy floats in it, built offline without LPIPS's weights."""
    from playwright.sync_api import sync_playwright

    a, _ = runs
    nerfacto = ns_train(
        "nerfacto", tmp_path, "--machine.device-type", "cpu", "--max-num-iterations", "3",
        "--pipeline.datamanager.train-num-rays-per-batch", "256", offline_lpips=True,
    )  # fmt: skip
    proc, port, log = start_compare((a, nerfacto), tmp_path, "--max-resolution", "48")
    try:
        with sync_playwright() as playwright:
            page = Page(playwright, port)
            page.wait_for_text(r"B: nerfacto \(")
            picture = page.picture(tmp_path / "nerfacto.png", settle=15)
            text = page.text()
            page.close()
    finally:
        interrupt(proc, log)  # while nerfacto is still scoring the test views (minutes each on a CPU)
    summary_of_b = text[text.index("B: nerfacto (") :].split("\n\n")[0]
    assert "Gaussians" not in summary_of_b and "Gaussians" in text[: text.index("B: nerfacto (")]
    left, right = strips(picture)
    assert_rendered(left)
    # 3 steps of nerfacto render a nearly flat grey: not the empty backdrop, not A's picture
    backdrop = np.abs(right.mean(axis=(0, 1)) - np.array(LETTERBOX_RGB)).max()
    assert backdrop > 30 and np.abs(right - left).mean() > 5, (backdrop, np.abs(right - left).mean())


def test_splat_files_score_as_the_run_they_came_from(runs, ns_eval, tmp_path):
    """A's own export in every format TinySplat writes, and splat-transform's conversions of its
    plain .ply, each placed from the dataset's frame (or the run's) and scored on A's test photos as
    the page scores a side: A's ns-eval PSNR, within each format's loss."""
    from splat_transform import executable
    from training import run_command

    from tinysplat_ns.compare.frames import reference_of_run
    from tinysplat_ns.compare.inputs import read_splat_file
    from tinysplat_ns.compare.runs import load_runs
    from tinysplat_ns.compare.scoring import image_metrics, test_views
    from tinysplat_ns.compare.splats import load_splat

    a, _ = runs
    # (file, its frame, the PSNR difference allowed): measured on the shared 300-step run (18.35 dB):
    # 0.000 for the plain .ply in either frame, compressed .ply -0.06, .spz 0.39 (Niantic's 4-5 bit
    # SH, on bands trained from step 30; 0.024 on a 200-step run whose SH was still degree 0), SOG
    # 0.016 (ours) and 0.027 (splat-transform's) on that 200-step run
    files = [(tmp_path / "run.ply", "run", 0.005)]
    run_command(["tinysplat-export", "--load-config", a, "--output", files[0][0]], tmp_path)
    for fmt, name, allowed in (("ply", "data.ply", 0.005), ("compressed-ply", "data.compressed.ply", 0.1),
                               ("spz", "data.spz", 0.5), ("sog", "data.sog", 0.1)):  # fmt: skip
        run_command(["tinysplat-export", "--load-config", a, "--output", tmp_path / name, "--format", fmt,
                     "--frame", "data"], tmp_path)  # fmt: skip
        files.append((tmp_path / name, "data", allowed))
    for name, allowed in (("st.compressed.ply", 0.1), ("st.spz", 0.5), ("st.sog", 0.1)):
        run_command([executable(), "-w", "-q", "-g", "cpu", tmp_path / "data.ply", tmp_path / name], tmp_path)
        files.append((tmp_path / name, "data", allowed))

    (run,) = load_runs([a])
    run.name = "A: tinysplat-cpu"
    reference = reference_of_run(run)
    views = test_views(reference.datamanager, reference.background)
    expected = ns_eval(a)["psnr"]
    for path, frame, allowed in files:
        side = load_splat(read_splat_file(path), frame, reference, torch.device("cpu"))
        psnr = np.mean([image_metrics(side.render(view.camera), view.photo)["psnr"] for view in views])
        print(f"{path.name} ({frame} frame): {psnr:.3f} dB, ns-eval of the run {expected:.3f}")
        assert abs(psnr - expected) < allowed, (path.name, psnr, expected)


def wait_for_log(log: Path, pattern: str, count: int = 1, timeout: float = 240) -> list:
    return wait_for(log.read_text, pattern, count, timeout, "tinysplat-compare's output")


def test_a_splat_file_beside_a_run_and_alone(runs, ns_eval, tmp_path):
    """`--load-config A --load-splat FILE`: both scores printed once in, the file's (A's own .spz, in
    the dataset's frame) A's within the format's loss. `--load-splat FILE --data SCENE` alone: a page
    that shows the file, labelled with its name, format and count, beside the test photo, and its score
    printed. A file placed where no test camera sees it: a warning naming --splat-frame, the page up."""
    from playwright.sync_api import sync_playwright
    from training import run_command

    from tinysplat_ns.core.ply import write_ply
    from tinysplat_ns.core.splat_files import read_splats

    a, _ = runs
    spz = tmp_path / "data.spz"
    run_command(["tinysplat-export", "--load-config", a, "--output", spz, "--frame", "data"], tmp_path)
    proc, port, log = start_compare([a], tmp_path, "--load-splat", str(spz))
    try:
        printed = wait_for_log(log, r"tinysplat-compare: ([AB]): \S+: " + SCORE.pattern, count=2)
    finally:
        interrupt(proc, log)
    scores = {letter: float(psnr) for letter, _, psnr, _ in printed}
    assert abs(scores["A"] - ns_eval(a)["psnr"]) < 0.02 and abs(scores["B"] - scores["A"]) < 0.5, scores

    proc, port, log = start_compare([], tmp_path, "--load-splat", str(spz), "--data", str(scene_dir()))
    try:
        with sync_playwright() as playwright:
            page = Page(playwright, port)
            page.wait_for_text(SCORE.pattern)
            text = page.text()
            left, _ = strips(page.picture(tmp_path / "alone.png"))
            page.close()
        wait_for_log(log, r"tinysplat-compare: A: data.spz: " + SCORE.pattern)
    finally:
        interrupt(proc, log)
    count = len(read_splats(spz)["means"])
    assert "A: data.spz (.spz file)" in text and f"{count:,} Gaussians" in text, text
    assert_rendered(left)

    # no --data: the file in its own frame, no test views; the page opens on a camera that sees it
    proc, port, log = start_compare([], tmp_path, "--load-splat", str(spz))
    try:
        with sync_playwright() as playwright:
            page = Page(playwright, port)
            page.wait_for_text("No test views")
            page.set_number("Divider", 1)
            picture = page.picture(tmp_path / "no_data.png")
            page.close()
    finally:
        interrupt(proc, log)
    assert_rendered(strips(picture)[0])

    far = tmp_path / "far.ply"
    gaussians = read_splats(spz)
    gaussians["means"] = gaussians["means"] + 1000.0
    write_ply(far, gaussians)
    proc, port, log = start_compare([], tmp_path, "--load-splat", str(far), "--data", str(scene_dir()))
    try:
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}", timeout=30)
        assert page.status == 200
        (warning,) = [line for line in log.read_text().splitlines() if line.startswith("warning: ")]
    finally:
        interrupt(proc, log)
    assert "A: far.ply: no test camera sees any of its Gaussians" in warning and "--splat-frame run" in warning


def test_bad_splat_files_get_one_line(runs, tmp_path):
    from training import run_command

    a, _ = runs
    not_a_splat = tmp_path / "notes.txt"
    not_a_splat.write_text("not a splat\n")
    damaged = tmp_path / "damaged.ply"
    run_command(["tinysplat-export", "--load-config", a, "--output", tmp_path / "whole.ply"], tmp_path)
    whole = (tmp_path / "whole.ply").read_bytes()
    damaged.write_bytes(whole[: len(whole) // 2])
    cases = {
        ("--load-splat", not_a_splat): "not a splat file TinySplat reads",
        ("--load-splat", damaged): "truncated",
        ("--load-splat", tmp_path / "missing.ply"): "cannot be read",
        ("--load-config", a, "--load-splat", damaged, "--load-splat", damaged): "got 3 sides; pass two",
        ("--load-splat", tmp_path / "whole.ply", "--data", tmp_path / "no-such-scene"): "no such folder",
        ("--load-splat", tmp_path / "whole.ply", "--data", tmp_path): "no transforms.json, transforms_train.json",
    }
    for arguments, message in cases.items():
        result = subprocess.run([str(BIN / "tinysplat-compare"), *map(str, arguments)], capture_output=True,
                                text=True, cwd=tmp_path, timeout=120)  # fmt: skip
        assert result.returncode == 1, (arguments, result.stdout[-500:], result.stderr[-2000:])
        assert "Traceback" not in result.stderr, result.stderr[-2000:]
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("error: ") and message in last, (arguments, last)
