"""TinySplat's Nerfstudio model.

It subclasses `SplatfactoModel` only because Nerfstudio 1.1.5's viewer and `ns-export gaussian-splat`
recognise Gaussian models with `isinstance(model, SplatfactoModel)`; it keeps splatfacto's parameter
names and properties (`means`, `shs_0`, `opacities`, ...) for them, and replaces everything that
would tie it to CUDA or the network: initialisation (no `.cuda()`), rasterization (TinySplat's
backends), densification, loss and metrics (LPIPS only from weights already on disk).
"""

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Tuple, Type, Union

import torch
import tyro
from pytorch_msssim import SSIM
from scipy.spatial import cKDTree
from torch import Tensor
from torch.nn import Parameter
from typing_extensions import Annotated

from nerfstudio.cameras.cameras import Cameras
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.engine.optimizers import Optimizers
from nerfstudio.model_components.lib_bilagrid import BilateralGrid
from nerfstudio.models.splatfacto import SplatfactoModel, SplatfactoModelConfig, random_quat_tensor
from nerfstudio.utils.rich_utils import CONSOLE

from tinysplat_ns.core.bilateral_grid import total_variation
from tinysplat_ns.core.distributed import Collectives, new_random_state, shared_random_state
from tinysplat_ns.core.losses.base import LossInputs
from tinysplat_ns.core.losses.composite import WeightedLoss, parse_weights
from tinysplat_ns.core.losses.registry import available_terms
from tinysplat_ns.core.frames import transform_gaussians
from tinysplat_ns.core.kernels import bilateral_grid as compiled_bilateral_grid
from tinysplat_ns.core.kernels import build as kernels_build
from tinysplat_ns.core.ply import PARAMETERS, Gaussians, SplatFileError, sh_degree_of, with_sh_degree
from tinysplat_ns.core.splat_files import read_splats
from tinysplat_ns.core.rasterization import rasterization
from tinysplat_ns.core.sh import num_sh_bases, rgb_to_sh, sh_to_rgb
from tinysplat_ns.core.surfaces import depth_normals
from tinysplat_ns.core.strategies.base import Strategy
from tinysplat_ns.core.strategies.ops import enforce_budget
from tinysplat_ns.core.strategies.registry import available_strategies
from tinysplat_ns.component_options import LossConfig, configured, option_groups
from tinysplat_ns.meshing import refuse_ray_sampling

# splatfacto's own densification settings: TinySplat's strategies have their own option groups
_SPLATFACTO_DENSIFICATION = (
    "warmup_length", "refine_every", "cull_alpha_thresh", "cull_scale_thresh", "reset_alpha_every",
    "densify_grad_thresh", "use_absgrad", "densify_size_thresh", "n_split_samples", "cull_screen_size",
    "split_screen_size", "stop_screen_size_at", "stop_split_at",
)  # fmt: skip
# and its loss settings: TinySplat's loss is `--pipeline.model.loss.terms`
_SPLATFACTO_LOSS = ("ssim_lambda", "use_scale_regularization", "max_gauss_ratio")


@dataclass
class TinySplatModelConfigBase(SplatfactoModelConfig):
    """TinySplat: 3D Gaussian Splatting that trains on CPU (pure PyTorch) and on CUDA (gsplat)."""

    _target: Type = field(default_factory=lambda: TinySplatModel)
    backend: Literal["auto", "cpp", "torch", "gsplat"] = "auto"
    """Rasterizer: "auto" picks gsplat's CUDA kernels on CUDA, TinySplat's compiled CPU one (built on first
    use) on a CPU, and its pure-PyTorch one elsewhere or where the build fails."""
    max_gaussians: int = 0
    """Hard cap on the number of Gaussians (0: no cap), honoured by every strategy; past it the
    least opaque go."""
    init_ply: Optional[Path] = None
    """Start from the Gaussians of a splat file instead of the SfM points: a 3DGS .ply (ours,
    ns-export's or another trainer's), a compressed .ply, an .spz, or a SOG (.sog, meta.json or its
    folder)."""
    num_random: int = 100_000
    """Random initial Gaussians for a scene without sparse points (3DGS's count for Blender scenes)."""
    random_scale: Optional[float] = None
    """Side of the cube (centred at the origin) that the random initial Gaussians fill; by default
    they fill the dataset's scene box (Blender's [-1.5, 1.5]^3, Nerfstudio data's [-1, 1]^3)."""
    background_color: Literal["auto", "random", "black", "white"] = "auto"
    """What training renders over. "auto": where the dataset's photos have alpha, the colour they are
    meant to be seen on (Blender's white; else the viewer's grey), as 3DGS trains NeRF-Synthetic; a new
    random colour each step otherwise, as splatfacto does. Evaluation and the viewer show photos with alpha
    on the dataset's colour (with "white" or "black", on that one)."""
    init_ply_frame: Literal["run", "data"] = "run"
    """The coordinates of --pipeline.model.init-ply: "run": a Nerfstudio run's on this dataset (what
    ns-export and tinysplat-export write); "data": the dataset's own, e.g. COLMAP's (what Inria's
    3DGS and `tinysplat-export --frame data` write)."""

    def __setstate__(self, state):
        """How a run's config.yml is read back: options added to TinySplat since that run was
        trained, absent from the file, take their defaults."""
        self.__dict__.update(type(self)().__dict__)
        self.__dict__.update(state)


def _model_config_with_components(base: type) -> type:
    """The model config with the choice among the available strategies (built-in or registered by
    an installed package) and their options, the loss, and splatfacto's own densification and loss
    fields hidden."""
    strategies = available_strategies()
    choice = Literal[tuple(strategies)]  # type: ignore[valid-type]
    fields: List[Tuple[str, Any, Any]] = [
        (
            "strategy",
            Annotated[choice, tyro.conf.arg(help="densification: " + ", ".join(strategies))],
            field(default="adc"),
        )
    ]
    fields += option_groups(strategies, "strategy")
    fields.append(("loss", Annotated[LossConfig, tyro.conf.arg(help="the loss")], field(default_factory=LossConfig)))
    for name in _SPLATFACTO_DENSIFICATION + _SPLATFACTO_LOSS:
        inherited = base.__dataclass_fields__[name]
        fields.append((name, tyro.conf.Suppress[inherited.type], field(default=inherited.default)))
    config = dataclasses.make_dataclass("TinySplatModelConfig", fields, bases=(base,))
    config.__module__ = __name__
    config.__doc__ = base.__doc__
    return config


TinySplatModelConfig = _model_config_with_components(TinySplatModelConfigBase)


def viewmats_from_c2w(camera_to_worlds: Tensor) -> Tensor:
    """Nerfstudio's camera-to-world [C, 3, 4] (OpenGL axes) -> world-to-camera [C, 4, 4] (OpenCV)."""
    rot = camera_to_worlds[:, :3, :3] * torch.tensor([1.0, -1.0, -1.0], device=camera_to_worlds.device)
    rot_inv = rot.transpose(1, 2)
    viewmats = torch.eye(4, device=camera_to_worlds.device, dtype=camera_to_worlds.dtype).repeat(len(rot), 1, 1)
    viewmats[:, :3, :3] = rot_inv
    viewmats[:, :3, 3:4] = -rot_inv @ camera_to_worlds[:, :3, 3:4]
    return viewmats


def lpips_weights_path() -> Path:
    """Where torchvision keeps the AlexNet weights that torchmetrics' LPIPS needs."""
    from torchvision.models import AlexNet_Weights

    return Path(torch.hub.get_dir()) / "checkpoints" / Path(AlexNet_Weights.DEFAULT.url).name


def load_lpips() -> Optional[torch.nn.Module]:
    """LPIPS when its weights are already on disk; never a download (no network is assumed)."""
    path = lpips_weights_path()
    if not path.exists():
        CONSOLE.print(
            f"LPIPS skipped: its AlexNet weights are not at {path} (PSNR and SSIM are computed)", soft_wrap=True
        )
        return None
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    return LearnedPerceptualImagePatchSimilarity(normalize=True)


def over_background(photo: Tensor, background: Tensor) -> Tensor:
    """An RGBA photo [H, W, 4] over a background colour [3] or image [H, W, 3]."""
    rgb = photo[..., :3]
    return torch.lerp(background.expand_as(rgb), rgb, photo[..., 3:])


class LastResult:
    """What a computation gave for the last arguments it was asked with (tensors compared by identity):
    Nerfstudio asks a model for the same photo twice in a training step, for the metrics and for the loss."""

    def __init__(self):
        self.arguments: Tuple = ()
        self.result: Any = None

    def of(self, compute, *arguments):
        same = len(arguments) == len(self.arguments) and all(
            a is b if isinstance(a, Tensor) else a == b for a, b in zip(arguments, self.arguments)
        )
        if not same:
            self.arguments, self.result = arguments, compute(*arguments)
        return self.result


class TinySplatModel(SplatfactoModel):
    config: TinySplatModelConfig

    def populate_modules(self):
        # a run loaded to be viewed or evaluated takes its Gaussians from its checkpoint: the .ply it
        # started from is not needed (nor read) then
        training = self.kwargs["metadata"].get("test_mode", "val") == "val"
        from_ply = self.config.init_ply is not None and training
        gaussians = self._initial_ply() if from_ply else self._initial_gaussians()
        if self.config.sh_degree == 0:  # degree 0 stores colours behind a sigmoid, as splatfacto does
            gaussians["features_dc"] = torch.logit(sh_to_rgb(gaussians["features_dc"]).clamp(0, 1), eps=1e-10)
        self.gauss_params = torch.nn.ParameterDict({name: Parameter(gaussians[name]) for name in PARAMETERS})
        self.camera_optimizer = self.config.camera_optimizer.setup(num_cameras=self.num_train_data, device="cpu")

        from torchmetrics.image import PeakSignalNoiseRatio

        self.psnr = PeakSignalNoiseRatio(data_range=1.0)
        self.ssim = SSIM(data_range=1.0, size_average=True, channel=3)
        self.loss = self._build_loss()
        self.lpips = None  # loaded on first evaluation, only from disk
        self.step = 0
        self.crop_box = None
        self._photo, self._composite = LastResult(), LastResult()
        alpha_color = self.kwargs["metadata"].get("alpha_color")
        if self.config.background_color in ("white", "black"):
            from nerfstudio.utils.colors import get_color

            self.background_color = get_color(self.config.background_color)
        else:
            # what evaluation and the viewer render over: the colour the dataset's photos with alpha are
            # meant to be seen on (Blender's white), else the viewer's grey
            self.background_color = alpha_color if alpha_color is not None else torch.tensor([0.1490, 0.1647, 0.2157])
        # what training renders over: that same colour, or a new random one each step (None)
        random_background = self.config.background_color == "random" or (
            self.config.background_color == "auto" and not self.kwargs["metadata"].get("photos_have_alpha", False)
        )
        self.training_background = None if random_background else self.background_color.clone()
        if self.config.use_bilateral_grid:
            self.bil_grids = BilateralGrid(
                num=self.num_train_data,
                grid_X=self.config.grid_shape[0],
                grid_Y=self.config.grid_shape[1],
                grid_W=self.config.grid_shape[2],
            )
        if self.config.backend == "cpp" and not kernels_build.available():
            raise SystemExit(
                "error: --pipeline.model.backend cpp: TinySplat's compiled CPU rasterizer is not available here "
                "(TINYSPLAT_CPP=0, or its build failed: see the warning above); use --pipeline.model.backend auto or torch"
            )
        self.strategy: Strategy = configured(self.config, self.config.strategy)
        self.strategy.set_budget(self.config.max_gaussians)
        self.strategy.set_fixed_background(self.training_background is not None)
        # 3DGS's scene extent from the training cameras: the strategy's size thresholds are multiples of it
        # (the means' learning rate too: the trainer scales it)
        self.scene_scale = float(self.kwargs["metadata"].get("camera_extent", 1.0))
        self.strategy_state = self.strategy.initialize_state(scene_scale=self.scene_scale)
        # set by the trainer when it runs in several processes: what they exchange each step
        self.collectives = Collectives()
        # the strategy's own random draws, alike in every process (the trainer gives all of them process 0's;
        # seeded from the run's seed without drawing from the generator the run uses)
        self.strategy_random = new_random_state(torch.initial_seed())

    def _initial_gaussians(self) -> Gaussians:
        """From the SfM points (or random ones): isotropic, sized by the 3 nearest neighbours."""
        means, rgb = self._initial_points()
        n = len(means)
        # scipy's k-d tree, not splatfacto's sklearn: the same distances, without sklearn's import (1.2-2.4 s
        # of every start); each point is its own nearest, first
        points = means.cpu().numpy()
        distances, _ = cKDTree(points).query(points, k=4, workers=-1)
        avg_dist = torch.from_numpy(distances[:, 1:]).float().mean(dim=-1, keepdim=True).clamp(min=1e-7)
        return {
            "means": means,
            "scales": torch.log(avg_dist.repeat(1, 3)).float(),
            "quats": random_quat_tensor(n),
            "features_dc": rgb_to_sh(rgb),
            "features_rest": torch.zeros(n, num_sh_bases(self.config.sh_degree) - 1, 3),
            "opacities": torch.logit(0.1 * torch.ones(n, 1)),
        }

    def _initial_ply(self) -> Gaussians:
        path = self.config.init_ply
        try:
            gaussians = read_splats(path)
        except SplatFileError as e:
            raise SystemExit(f"error: --pipeline.model.init-ply: {e}") from None
        if len(gaussians["means"]) == 0:
            raise SystemExit(f"error: --pipeline.model.init-ply: {path}: holds no Gaussians; pass a trained splat file")
        degree = sh_degree_of(gaussians)
        if degree != self.config.sh_degree:
            CONSOLE.print(
                f"[bold yellow]Warning: {path} has SH degree {degree}, the model {self.config.sh_degree}: "
                f"{'dropping the higher bands' if degree > self.config.sh_degree else 'new bands start at zero'}",
                soft_wrap=True,
            )
        if self.config.init_ply_frame == "data":
            matrix, scale = self.kwargs["metadata"]["dataparser_transform"]
            gaussians = transform_gaussians(gaussians, (matrix.double(), float(scale)))
        CONSOLE.print(f"Starting from {len(gaussians['means']):,} Gaussians of {path}")
        return with_sh_degree(gaussians, self.config.sh_degree)

    def _build_loss(self) -> WeightedLoss:
        """The loss from `--pipeline.model.loss.terms`, checked against the terms there are and the
        data the dataset has; a bad one stops the run here, before training, in one line."""
        terms = available_terms()
        flag = "--pipeline.model.loss.terms"
        try:
            weights = parse_weights(self.config.loss.terms, list(terms))
        except ValueError as e:
            raise SystemExit(f"error: {flag}: {e}") from None
        loss = WeightedLoss({name: configured(self.config.loss, name) for name in weights}, weights)
        if "depth" in loss.needs and not self.kwargs["metadata"].get("depth_filenames"):
            raise SystemExit(
                f"error: {flag}: a term needs depth images and the dataset has none; add a depth_file_path "
                "to each frame of transforms.json, or drop the depth term"
            )
        return loss

    def _initial_points(self) -> Tuple[Tensor, Tensor]:
        """Means [N, 3] and colours [N, 3] in [0, 1]: the SfM points, or random ones."""
        if self.seed_points is not None and not self.config.random_init:
            means, colors = self.seed_points
            if len(means) >= 4:
                return means.float().clone(), (colors.float() / 255.0).clamp(0, 1)
            CONSOLE.print(
                f"[bold yellow]Warning: the scene has {len(means)} sparse points; starting from "
                f"{self.config.num_random} random Gaussians instead (--pipeline.model.num-random)",
                soft_wrap=True,
            )
        elif not self.config.random_init:
            CONSOLE.print(
                f"[bold yellow]Warning: the scene has no sparse points (sparse_pc.ply / points3D); starting "
                f"from {self.config.num_random} random Gaussians (--pipeline.model.num-random)",
                soft_wrap=True,
            )
        if self.config.random_scale is None:
            low, high = self.scene_box.aabb.float()
        else:
            low, high = torch.full((3,), -0.5 * self.config.random_scale), torch.full((3,), 0.5 * self.config.random_scale)
        means = low + torch.rand(self.config.num_random, 3) * (high - low)
        return means, torch.rand(self.config.num_random, 3)

    def get_training_callbacks(
        self, training_callback_attributes: TrainingCallbackAttributes
    ) -> List[TrainingCallback]:
        return [
            TrainingCallback(
                [TrainingCallbackLocation.BEFORE_TRAIN_ITERATION],
                self.step_cb,
                args=[training_callback_attributes.optimizers],
            ),
            TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], self.step_post_backward),
        ]

    def step_cb(self, optimizers: Optimizers, step):
        self.step = step
        self.optimizer_set = optimizers
        self.optimizers = optimizers.optimizers

    def step_post_backward(self, step):
        if getattr(getattr(self, "optimizer_set", None), "skipped_step", False):
            return  # a skipped step's gradients (NaN) must not reach the strategy's statistics
        info = self.collectives.views_of_step(self.info)
        with shared_random_state(self.strategy_random, self.device):
            self.strategy.step_post_backward(self.gauss_params, self.optimizers, self.strategy_state, step, info)
        enforce_budget(self.gauss_params, self.optimizers, self.strategy_state, self.config.max_gaussians)
        if self.config.use_bilateral_grid:
            self._anchor_bilateral_grids()

    def _apply_bilateral_grid(self, rgb: Tensor, cam_idx: int, H: int, W: int) -> Tensor:
        """The photo's grid on the render [1, H, W, 3]: compiled on a CPU (Nerfstudio's grid_sample took
        96 ms a step forward and backward at 400x300 on 2 cores), Nerfstudio's elsewhere."""
        grid = self.bil_grids.grids[cam_idx]
        if compiled_bilateral_grid.supports(grid, rgb):
            return compiled_bilateral_grid.apply(grid, rgb[0])[None]
        return super()._apply_bilateral_grid(rgb, cam_idx, H, W)

    @torch.no_grad()
    def _anchor_bilateral_grids(self):
        """Hold the mean of the photos' grids at the identity, cell by cell: photos fix each one's look
        only relative to the others, and the look they share is the Gaussians' to carry. Free grids
        (splatfacto's) drift together and the Gaussians' colours with them, away from the photos' common
        look: recoloured photos of the bundled scene, 3000 steps, 21.47 dB free, 22.14 held
        (docs/benchmarks.md)."""
        grids = self.bil_grids.grids  # [photos, 12 (a 3x4 affine map, row-major), L, H, W]
        identity = torch.eye(4, device=grids.device)[:3].reshape(12, 1, 1, 1)
        grids.sub_(grids.mean(0, keepdim=True) - identity)

    def load_state_dict(self, state_dict, **kwargs):  # type: ignore[override]
        """Resize the Gaussians to the checkpoint's count in place: the optimizers, built before a
        resumed run loads its checkpoint, keep pointing at these same Parameter objects (splatfacto
        swaps in new ones, and a resumed run then optimises stale tensors)."""
        n = state_dict["gauss_params.means"].shape[0]
        for param in self.gauss_params.values():
            param.data = param.data.new_zeros((n,) + tuple(param.shape[1:]))
        return torch.nn.Module.load_state_dict(self, state_dict, **kwargs)

    def update_to_step(self, step: int) -> None:
        self.step = step  # a loaded checkpoint renders with the SH degree it was trained to

    def get_extra_state(self) -> Dict[str, Any]:
        """The strategy's running state and the random generators' go into checkpoints, so a
        resumed run densifies on and draws what the uninterrupted run would have."""
        return {
            "strategy": self.config.strategy,
            "state": self.strategy_state,
            "rng": torch.get_rng_state(),
            "strategy_rng": self.strategy_random,
        }

    def set_extra_state(self, extra: Dict[str, Any]) -> None:
        if "rng" in extra:
            torch.set_rng_state(extra["rng"])
        if "strategy_rng" in extra:
            self.strategy_random = dict(extra["strategy_rng"])
        if extra.get("strategy") == self.config.strategy:
            self.strategy_state = {
                k: v.to(self.device) if isinstance(v, Tensor) else v for k, v in extra["state"].items()
            }

    def _get_background_color(self) -> Tensor:
        """Training: the fixed colour, or a new random one each step; evaluation and the viewer:
        `background_color` (which the viewer's background control sets)."""
        if not self.training:
            return self.background_color.to(self.device)
        if self.training_background is None:
            return torch.rand(3, device=self.device)
        return self.training_background.to(self.device)

    def get_outputs(self, camera: Cameras) -> Dict[str, Union[Tensor, List]]:
        if isinstance(camera, RayBundle):  # Nerfstudio's NeRF exporters
            refuse_ray_sampling()
        if not isinstance(camera, Cameras):
            raise TypeError(f"TinySplat renders Cameras, got {type(camera).__name__}")
        if self.training:
            if camera.shape[0] != 1:
                raise ValueError("TinySplat trains on one camera at a time")
            camera_to_worlds = self.camera_optimizer.apply_to_camera(camera)
        else:
            camera_to_worlds = camera.camera_to_worlds

        params = {name: self.gauss_params[name] for name in self.gauss_params.keys()}
        if self.crop_box is not None and not self.training:
            inside = self.crop_box.within(self.means).squeeze()
            if inside.sum() == 0:
                return self.get_empty_outputs(
                    int(camera.width.item()), int(camera.height.item()), self.background_color
                )
            params = {name: value[inside] for name, value in params.items()}

        scale = self._get_downscale_factor()
        camera.rescale_output_resolution(1 / scale)
        Ks = camera.get_intrinsics_matrices().to(self.device)
        width, height = int(camera.width.item()), int(camera.height.item())
        camera.rescale_output_resolution(scale)
        self.last_size = (height, width)

        wants_depth = self.config.output_depth_during_training or "depth" in self.loss.needs
        render_mode = "RGB+ED" if wants_depth or not self.training else "RGB"
        if self.config.sh_degree > 0:
            sh_degree = min(self.step // self.config.sh_degree_interval, self.config.sh_degree)
            colors = torch.cat([params["features_dc"][:, None, :], params["features_rest"]], dim=1)
        else:
            sh_degree = None
            colors = torch.sigmoid(params["features_dc"])
        background = self._get_background_color()
        viewmats = viewmats_from_c2w(camera_to_worlds).to(self.device)
        render, alpha, info = rasterization(
            means=params["means"],
            quats=params["quats"],
            scales=torch.exp(params["scales"]),
            opacities=torch.sigmoid(params["opacities"]).squeeze(-1),
            colors=colors,
            viewmats=viewmats,
            Ks=Ks,
            width=width,
            height=height,
            sh_degree=sh_degree,
            render_mode=render_mode,
            rasterize_mode=self.config.rasterize_mode,
            absgrad=self.strategy.uses_absgrad,
            backend=self.config.backend,
        )
        if self.training:  # (the viewer's renders, in eval mode, must not replace the step's info)
            self.info = info
            self.strategy.step_pre_backward(self.gauss_params, self.optimizers, self.strategy_state, self.step, info)

        rgb = render[..., :3] + (1 - alpha) * background
        if not self.training:
            # 3DGS trains on the unclamped render: a clamp there gives no gradient to a pixel brighter than
            # 1, so a bright floater over white, or an overshoot in a highlight, is never corrected
            rgb = torch.clamp(rgb, 0.0, 1.0)
        if self.config.use_bilateral_grid and self.training and camera.metadata and "cam_idx" in camera.metadata:
            rgb = self._apply_bilateral_grid(rgb, camera.metadata["cam_idx"], height, width)
        depth = None
        if render_mode == "RGB+ED":
            depth = torch.where(alpha > 0, render[..., 3:4], render[..., 3:4].detach().max()).squeeze(0)
        outputs = {"rgb": rgb.squeeze(0), "depth": depth, "accumulation": alpha.squeeze(0), "background": background}
        if not self.training:
            outputs["background"] = background.expand(height, width, 3)
            # world-space, in 0..1 as Nerfstudio shows and exports normals (0.5 grey: none)
            normals = depth_normals(render[0, ..., 3:4], alpha[0], Ks[0], viewmats[0])
            outputs["normals"] = (normals + 1) / 2
        return outputs

    def get_gt_img(self, image: Tensor) -> Tensor:
        """The photo at the step's size, as splatfacto's: once a step."""
        return self._photo.of(self._photo_at, image, self._get_downscale_factor())

    def _photo_at(self, image: Tensor, _downscale: int) -> Tensor:
        return super().get_gt_img(image)

    def composite_with_background(self, image: Tensor, background: Tensor) -> Tensor:
        """The photo over the render's background where it has alpha, as splatfacto's, but in one pass
        (7 against 11 ms at 800x800 on 2 cores) and once a step."""
        return self._composite.of(over_background, image, background) if image.shape[2] == 4 else image

    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> Dict[str, Tensor]:
        """The loss terms by name (Nerfstudio sums them): the configured ones, the strategy's and
        camera/bilateral-grid regularisers."""
        gt = self.composite_with_background(self.get_gt_img(batch["image"]), outputs["background"])
        pred = outputs["rgb"]
        inputs = LossInputs(pred=pred, gt=gt, params=self.gauss_params)
        if "mask" in batch:
            inputs.mask = self._downscale_if_required(batch["mask"]).to(self.device)
        if "depth" in self.loss.needs:
            inputs.depth = outputs["depth"]
            # nearest, not averaged: a mean would blend in the zeros of unknown depth
            step = self._get_downscale_factor()
            inputs.gt_depth = batch["depth_image"][::step, ::step][: pred.shape[0], : pred.shape[1]].to(self.device)
        loss_dict = self.loss(inputs)
        if self.training:
            loss_dict.update(self.strategy.regularization(self.gauss_params))
            self.camera_optimizer.get_loss_dict(loss_dict)
            if self.config.use_bilateral_grid:
                loss_dict["tv_loss"] = 10 * total_variation(self.bil_grids.grids)
        return loss_dict

    def get_image_metrics_and_images(
        self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor]
    ) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
        gt = self.composite_with_background(self.get_gt_img(batch["image"]), outputs["background"])
        pred = outputs["rgb"]
        images = {"img": torch.cat([gt, pred], dim=1)}
        gt, pred = gt.permute(2, 0, 1)[None], pred.permute(2, 0, 1)[None]
        metrics = {"psnr": float(self.psnr(gt, pred).item()), "ssim": float(self.ssim(gt, pred))}
        if self.lpips is None and not getattr(self, "_lpips_checked", False):
            self._lpips_checked = True
            self.lpips = load_lpips()
        if self.lpips is not None:
            self.lpips = self.lpips.to(self.device)
            metrics["lpips"] = float(self.lpips(gt.clamp(0, 1), pred.clamp(0, 1)))
        return metrics, images
