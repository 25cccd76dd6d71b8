"""Image terms. With a mask, pixels outside it do not count."""

from dataclasses import dataclass
from typing import Literal, Optional

import torch
from pytorch_msssim import ssim
from torch import Tensor

from tinysplat_ns.core.kernels import ssim as compiled_ssim
from tinysplat_ns.core.losses.base import LossInputs, LossTerm


def masked_mean(values: Tensor, mask: Optional[Tensor]) -> Tensor:
    """Mean of [H, W, C] values over the pixels where mask [H, W, 1] is true."""
    if mask is None:
        return values.mean()
    weight = mask.to(values.dtype)
    return (values * weight).sum() / (weight.sum() * values.shape[-1]).clamp(min=1)


@dataclass
class L1(LossTerm):
    """Mean absolute error."""

    def __call__(self, inputs: LossInputs) -> Tensor:
        return masked_mean((inputs.pred - inputs.gt).abs(), inputs.mask)


@dataclass
class L2(LossTerm):
    """Mean squared error."""

    def __call__(self, inputs: LossInputs) -> Tensor:
        return masked_mean((inputs.pred - inputs.gt).square(), inputs.mask)


@dataclass
class DSSIM(LossTerm):
    """1 - SSIM (pytorch-msssim: Gaussian window, no padding). With a mask, both images are black
    outside it, so those pixels agree (as splatfacto masks)."""

    window_size: int = 11
    window_sigma: float = 1.5
    borders: Literal["valid", "zeros"] = "valid"
    """valid: windows inside the image only (pytorch-msssim's); zeros: a window at every pixel, the image
    padded with zeros (3DGS's conv2d)."""
    implementation: Literal["pytorch-msssim", "compiled"] = "compiled"
    """The same SSIM and gradient compiled (core/kernels/ssim.cpp) for float32 CPU images, pytorch-msssim's
    convolutions for others (CUDA, float64) or when asked: a lego step at 800x800 231 -> 174 ms on 2
    cores, the same test PSNR on lego over 3 seeds (docs/benchmarks.md)."""

    def __call__(self, inputs: LossInputs) -> Tensor:
        pred, gt = inputs.pred, inputs.gt
        if inputs.mask is not None:
            pred, gt = pred * inputs.mask, gt * inputs.mask
        if self.borders == "zeros":
            half = self.window_size // 2
            pred, gt = (torch.nn.functional.pad(image, (0, 0, half, half, half, half)) for image in (pred, gt))
        # the window in the images' dtype: pytorch-msssim's own is float32 (1e-5 off in float64)
        offsets = torch.arange(self.window_size, dtype=pred.dtype, device=pred.device) - self.window_size // 2
        window = torch.exp(-(offsets**2) / (2 * self.window_sigma**2))
        window = window / window.sum()
        if self.implementation == "compiled" and compiled_ssim.supports(pred, gt, window):
            return 1.0 - compiled_ssim.ssim(pred, gt, window)
        window = window.expand(pred.shape[-1], 1, 1, -1)
        value = ssim(pred.permute(2, 0, 1)[None], gt.permute(2, 0, 1)[None], data_range=1.0, win=window)
        return 1.0 - value
