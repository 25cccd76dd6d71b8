"""The compare page: a viser server whose panel picks what each side of the divider shows (a side, or
the test photo), one render thread per open browser tab, and the test views' scores filled in as
they are computed."""

import threading
import time
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import viser
import viser.transforms as vtf

from tinysplat_ns.compare.inputs import MAX_RESOLUTION, MIN_RESOLUTION
from tinysplat_ns.compare.picture import LETTERBOX_RGB, enlarged, fit_size, label, letterbox, split
from tinysplat_ns.compare.scoring import image_metrics

PHOTO = "Test photo"


class ComparePage:
    """The viser server, its panel, and one render thread per open browser tab."""

    def __init__(self, sides, views, warnings: List[str], port: int, host: str, max_resolution: int):
        from nerfstudio.viewer.viewer import VISER_NERFSTUDIO_SCALE_RATIO

        self.sides, self.views, self.warnings = sides, views, warnings
        self.world_scale = VISER_NERFSTUDIO_SCALE_RATIO  # as ns-viewer: the same feel of motion
        self.home = self._home(sides)
        self.scores: Dict[Tuple[int, int], Dict[str, float]] = {}
        self.last_render_request = 0.0  # when a tab last asked for a picture
        self.server = viser.ViserServer(host=host, port=port, verbose=False)
        self.clients: Dict[int, ClientView] = {}
        self.names = [side.name for side in sides]
        self._build_panel(max_resolution)
        self.server.on_client_connect(self._connect)
        self.server.on_client_disconnect(self._disconnect)

    def _build_panel(self, max_resolution: int) -> None:
        gui = self.server.gui
        gui.configure_theme(control_layout="fixed", control_width="medium")  # the panel covers no picture
        self.summary = gui.add_markdown(self._summary_text())
        sources = self.names + ([PHOTO] if self.views else [])
        # one side alone: beside its test photo, or the whole picture where there is none
        right = self.names[1] if len(self.names) > 1 else PHOTO if self.views else self.names[0]
        self.left = gui.add_dropdown("Left", sources, initial_value=self.names[0])
        self.right = gui.add_dropdown("Right", sources, initial_value=right)
        divider = 1.0 if right == self.names[0] else 0.5
        self.divider = gui.add_slider("Divider", min=0.0, max=1.0, step=0.01, initial_value=divider)
        swap = gui.add_button("Swap sides")
        with gui.add_folder("Test views"):
            if self.views:
                labels = [f"{k}: {view.name}" for k, view in enumerate(self.views)]
                self.test_view = gui.add_dropdown("Test view", labels, initial_value=labels[0])
                jump = gui.add_button("Jump to test view")
                self.view_scores = gui.add_markdown("")
                self.test_view.on_update(lambda event: self._jump(event.client))
                jump.on_click(lambda event: self._jump(event.client))
            else:
                gui.add_markdown("No test views: this dataset holds out none, or no --data was given.")
        self.show_cameras = gui.add_checkbox("Show test cameras", initial_value=True)
        self.show_cameras.on_update(lambda _: [view.show_test_cameras() for view in list(self.clients.values())])
        self.resolution = gui.add_slider(
            "Max resolution", min=MIN_RESOLUTION, max=MAX_RESOLUTION, step=16, initial_value=max_resolution
        )
        for control in (self.left, self.right, self.divider, self.resolution):
            control.on_update(lambda _: self.refresh())
        swap.on_click(lambda _: self._swap())

    def _home(self, sides) -> Optional[Tuple[np.ndarray, np.ndarray]]:
        """viser's (position, look-at) of a camera that sees the first splat file's Gaussians whole: from
        their median, 2.5 times as far as the farthest 80% of them lie, for a page with no test view to
        open on (a file given without --data is in coordinates of its own)."""
        means = next((side.gaussians["means"] for side in sides if hasattr(side, "gaussians")), None)
        if means is None:
            return None
        centre = means.median(dim=0).values
        reach = float(torch.quantile((means - centre).norm(dim=1).float().cpu(), 0.8))
        position = centre.cpu().double().numpy() + 2.5 * reach * np.ones(3) / np.sqrt(3)
        return position * self.world_scale, centre.cpu().double().numpy() * self.world_scale

    def _summary_text(self) -> str:
        lines = []
        for index, side in enumerate(self.sides):
            first, *rest = side.details
            lines.append(f"**{side.name}** ({first})  ")
            lines += [f"{line}  " for line in rest]
            lines.append(self._mean_score_text(index) + "\n")
        lines += [f"⚠ {warning}\n" for warning in self.warnings]
        return "\n".join(lines)

    def _mean_score_text(self, index: int) -> str:
        scores = [self.scores[key] for key in sorted(self.scores) if key[0] == index]
        if not self.views:
            return "no test views"
        if len(scores) < len(self.views):
            return f"test views: scoring {len(scores)}/{len(self.views)}"
        psnr = np.mean([s["psnr"] for s in scores])
        ssim = np.mean([s["ssim"] for s in scores])
        return f"{len(scores)} test views: PSNR {psnr:.2f} dB, SSIM {ssim:.3f}"

    def _view_score_text(self, index: int, view: int) -> str:
        score = self.scores.get((index, view))
        return "scoring..." if score is None else f"{score['psnr']:.2f} dB, SSIM {score['ssim']:.3f}"

    def score_test_views(self, stop: threading.Event) -> None:
        """PSNR and SSIM of every side on every test view, as ns-eval computes them, filled in while
        the page is already up (and printed once all are in); each waits until no tab has asked for
        a picture for a second, so the viewer stays quick."""
        for index, view in enumerate(self.views):
            for side_index, side in enumerate(self.sides):
                while time.time() - self.last_render_request < 1.0 and not stop.is_set():
                    time.sleep(0.2)
                if stop.is_set():
                    return
                self.scores[side_index, index] = image_metrics(side.render(view.camera), view.photo)
                self.summary.content = self._summary_text()
                self._show_view_scores()
                self.refresh(moving=False)
        for side_index, side in enumerate(self.sides):
            if self.views:
                print(f"tinysplat-compare: {side.name}: {self._mean_score_text(side_index)}", flush=True)

    def _show_view_scores(self) -> None:
        if self.views:
            k = self.selected_view()
            self.view_scores.content = "  \n".join(
                f"{name}: {self._view_score_text(i, k)}" for i, name in enumerate(self.names)
            )

    def selected_view(self) -> int:
        return int(self.test_view.value.split(":", 1)[0])

    def viser_pose(self, camera_to_world: torch.Tensor) -> Tuple[np.ndarray, np.ndarray]:
        """viser's camera position and orientation (OpenCV axes, scaled world) of a Nerfstudio pose."""
        pose = camera_to_world.double().numpy()
        rotation = vtf.SO3.from_matrix(pose[:, :3]) @ vtf.SO3.from_x_radians(np.pi)
        return pose[:, 3] * self.world_scale, rotation.wxyz

    def nerfstudio_pose(self, position: np.ndarray, wxyz: np.ndarray) -> torch.Tensor:
        """The [3, 4] Nerfstudio camera-to-world pose of a viser camera (the inverse of viser_pose)."""
        rotation = (vtf.SO3(np.asarray(wxyz)) @ vtf.SO3.from_x_radians(np.pi)).as_matrix()
        return torch.tensor(np.concatenate([rotation, np.asarray(position)[:, None] / self.world_scale], axis=1))

    def select(self, client, k: int) -> None:
        self.test_view.value = self.test_view.options[k]
        self._jump(client)

    def _jump(self, client) -> None:
        if client is None:
            return
        self._show_view_scores()
        view = self.clients.get(client.client_id)
        if view is not None:
            view.snap_to(self.selected_view())

    def _swap(self) -> None:
        left, right = self.left.value, self.right.value
        with self.server.atomic():
            self.left.value, self.right.value = right, left

    def refresh(self, moving: bool = True) -> None:
        """Every tab draws again: quickly first while a control moves, else at once in full."""
        for view in list(self.clients.values()):
            view.moving |= moving
            view.wake.set()

    def _connect(self, client) -> None:
        view = ClientView(self, client)
        self.clients[client.client_id] = view
        view.start()

    def _disconnect(self, client) -> None:
        view = self.clients.pop(client.client_id, None)
        if view is not None:
            view.running = False

    def close(self) -> None:
        for view in list(self.clients.values()):
            view.running = False
            view.wake.set()
        for view in list(self.clients.values()):
            view.join(timeout=30)
        self.server.stop()

    def side(self, source: str, camera, height: int, width: int, view: Optional[int]) -> Tuple[np.ndarray, List[str]]:
        """One side's picture ([height, width, 3] uint8, the camera's size) and its label lines."""
        if source == PHOTO:
            if view is None:
                return np.full((height, width, 3), LETTERBOX_RGB, np.uint8), [f"{PHOTO}: jump to a test view"]
            photo = torch.nn.functional.interpolate(
                self.views[view].photo.permute(2, 0, 1)[None], size=(height, width), mode="area"
            )[0].permute(1, 2, 0)
            return to_uint8(photo), [f"Photo: test view {view}", self.views[view].name]
        index = self.names.index(source)
        side = self.sides[index]
        lines = [source, *side.details[1:], self._mean_score_text(index)]
        if view is not None:
            lines.append(f"view {view}: {self._view_score_text(index, view)}")
        return to_uint8(side.render(camera)), lines


class ClientView(threading.Thread):
    """Renders what one browser tab sees: a quick low-resolution picture while the camera moves, a
    full one once it rests; exactly a test camera while the tab sits on one."""

    PREVIEW_LONG_SIDE = 256
    PREVIEW_SECONDS = 0.25  # a moving camera's picture should take about this long
    LABELLED_LONG_SIDE = 960  # smaller pictures are scaled up to this before the divider and labels are drawn
    ECHO_WAIT_S = 3.0

    def __init__(self, page: ComparePage, client):
        super().__init__(daemon=True)
        self.page, self.client = page, client
        self.wake = threading.Event()
        self.running = True
        self.snapped: Optional[int] = None
        self.snap_pose: Optional[Tuple[np.ndarray, np.ndarray]] = None
        self.browser_updates = 0
        self.moving = True  # the camera or a control moved since the last picture
        client.camera.on_update(self._browser_moved)
        self.frustums = self._add_test_cameras()

    def _add_test_cameras(self) -> list:
        """The held-out cameras as frustums in this tab (the one it sits on hidden); a click on one
        jumps to it."""
        frustums = []
        for k, view in enumerate(self.page.views):
            position, wxyz = self.page.viser_pose(view.camera.camera_to_worlds[0])
            aspect = float(view.camera.width / view.camera.height)
            frustum = self.client.scene.add_camera_frustum(
                f"/test_views/{k}", fov=_vertical_fov(view.camera), aspect=aspect, scale=0.1, color=(235, 160, 40),
                wxyz=wxyz, position=position,
            )  # fmt: skip
            frustum.on_click(lambda event, k=k: self.page.select(self.client, k))
            frustums.append(frustum)
        return frustums

    def show_test_cameras(self) -> None:
        for k, frustum in enumerate(self.frustums):
            frustum.visible = bool(self.page.show_cameras.value) and k != self.snapped

    def _browser_moved(self, _) -> None:
        self.browser_updates += 1
        self.moving = True
        self.wake.set()

    def snap_to(self, k: int) -> None:
        """Put the tab's camera on test view k (its position, direction, roll and field of view)."""
        camera = self.page.views[k].camera
        position, wxyz = self.page.viser_pose(camera.camera_to_worlds[0])
        with self.client.atomic():
            self.client.camera.position = position
            self.client.camera.wxyz = wxyz
            self.client.camera.up_direction = vtf.SO3(wxyz) @ np.array([0.0, -1.0, 0.0])
            self.client.camera.fov = _vertical_fov(camera)
        self.snapped, self.snap_pose = k, (position, vtf.SO3(wxyz).as_matrix()[:, 2])
        self.snap_confirmed, self.snapped_at, self.updates_at_snap = False, time.time(), self.browser_updates
        self.show_test_cameras()
        self.wake.set()

    def _still_snapped(self) -> Optional[int]:
        """The test view the camera sits on. Until the browser has echoed the snapped pose (rounded)
        its older camera messages are not moves; after that, any move leaves the view."""
        if self.snapped is None:
            return None
        position, direction = self.snap_pose
        here = np.asarray(self.client.camera.position)
        looking = vtf.SO3(np.asarray(self.client.camera.wxyz)).as_matrix()[:, 2]
        tolerance = 1e-4 * max(1.0, float(np.linalg.norm(position)))
        on_view = np.linalg.norm(here - position) <= tolerance and float(direction @ looking) >= 1 - 1e-6
        if on_view and self.browser_updates > self.updates_at_snap:
            self.snap_confirmed = True
        elif self.snap_confirmed or time.time() - self.snapped_at > self.ECHO_WAIT_S:
            self.snapped = None
            self.show_test_cameras()
        return self.snapped

    def run(self) -> None:
        while self.client.camera.update_timestamp == 0.0 and self.running:  # the tab has not said where it looks yet
            time.sleep(0.05)
        if self.page.views and self.running:
            self.snap_to(self.page.selected_view())  # the page opens on a test view
        elif self.running and self.page.home is not None:  # else somewhere that sees the first file
            with self.client.atomic():
                self.client.camera.position, self.client.camera.look_at = self.page.home
        needs_full = False
        while self.running:
            woken = self.wake.wait(0.15)
            if not self.running:
                break
            if woken and self.moving:  # a quick picture, the full one when it rests
                self.wake.clear()
                self.moving = False
                self._send(min(self._preview_long_side(), int(self.page.resolution.value)))
                needs_full = True
            elif woken or needs_full:
                self.wake.clear()
                self._send(int(self.page.resolution.value))
                needs_full = False

    def _preview_long_side(self) -> int:
        """Small enough that the slowest side renders a moving camera in about PREVIEW_SECONDS."""
        speed = min(side.pixels_per_second for side in self.page.sides)
        aspect = float(self.client.camera.aspect)
        long_side = np.sqrt(speed * self.PREVIEW_SECONDS * max(aspect, 1 / aspect))
        return int(np.clip(long_side, 32, self.PREVIEW_LONG_SIDE))

    def _send(self, long_side: int) -> None:
        self.page.last_render_request = time.time()
        from nerfstudio.cameras.cameras import CameraType
        from nerfstudio.viewer.utils import CameraState, get_camera

        page, client_camera = self.page, self.client.camera
        aspect = float(client_camera.aspect)
        view = self._still_snapped()
        if view is not None:
            test_camera = page.views[view].camera
            image_aspect = float(test_camera.width / test_camera.height)
            height, width = fit_size(aspect, image_aspect, long_side)
            camera = _resized(test_camera, height, width)
        else:
            height, width = fit_size(aspect, aspect, long_side)
            pose = page.nerfstudio_pose(client_camera.position, client_camera.wxyz)
            state = CameraState(float(client_camera.fov), aspect, pose, camera_type=CameraType.PERSPECTIVE)
            camera = get_camera(state, height, width)  # as ns-viewer builds its camera
        window = fit_size(aspect, aspect, long_side)
        divider = float(page.divider.value)
        pictures, labels = [], []
        for source, shown in ((page.left.value, divider > 0), (page.right.value, divider < 1)):
            if shown:
                picture, lines = page.side(source, camera, height, width, view)
            else:
                picture, lines = np.zeros((height, width, 3), np.uint8), []
            pictures.append(enlarged(letterbox(picture, *window), self.LABELLED_LONG_SIDE))
            labels.append(lines)
        image = split(pictures[0], pictures[1], divider)
        image = label(label(image, labels[0], "left"), labels[1], "right")
        self.client.scene.set_background_image(image, format="jpeg", jpeg_quality=92)


def _vertical_fov(camera) -> float:
    """viser's field of view (vertical, radians) of a one-camera Cameras."""
    return float(2 * torch.atan(camera.height / (2 * camera.fy)))


def _resized(camera, height: int, width: int):
    """A copy of a one-camera Cameras rendering the same view at height x width pixels."""
    from nerfstudio.cameras.cameras import Cameras

    sx, sy = width / float(camera.width), height / float(camera.height)
    return Cameras(
        camera_to_worlds=camera.camera_to_worlds, fx=camera.fx * sx, fy=camera.fy * sy, cx=camera.cx * sx,
        cy=camera.cy * sy, width=width, height=height, camera_type=camera.camera_type,
    )  # fmt: skip


def to_uint8(image: torch.Tensor) -> np.ndarray:
    return (image.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
