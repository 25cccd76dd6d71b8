"""SSIM as pytorch-msssim computes it (a separable window at the positions where it fits, K1 = 0.01,
K2 = 0.03, data range 1, the mean over channels and positions) of two [H, W, C] images, compiled
(`ssim.cpp`) with a hand-written gradient for the first image, computed with the value when the
first image needs one. DSSIM's `implementation="compiled"` takes it for float32 CPU images.
"""

import torch
from torch import Tensor

from tinysplat_ns.core.kernels import build
from tinysplat_ns.core.rasterize_torch import keep_freed_memory


def supports(pred: Tensor, gt: Tensor, window: Tensor) -> bool:
    """Whether `ssim` takes these: float32 CPU images [H, W, C] that the window fits in (pytorch-msssim
    smooths a smaller image along the other axis only, as the first steps of a small scene at a
    quarter of its size need)."""
    return (
        pred.device.type == "cpu"
        and pred.dtype == gt.dtype == torch.float32
        and not gt.requires_grad
        and min(pred.shape[0], pred.shape[1]) >= window.numel()
        and build.available()
    )


def _planes(image: Tensor) -> Tensor:
    return image.detach().permute(2, 0, 1).contiguous()


def _inputs(pred: Tensor, gt: Tensor, window: Tensor):
    keep_freed_memory()  # the kernels' scratch (12 MB at 400x300) from the heap, not page-faulted in each call
    return _planes(pred), _planes(gt), window.detach().contiguous()


class SsimCpp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pred, gt, window):
        value, gradient = build.ops().ssim_and_gradient(*_inputs(pred, gt, window))  # one pass for both
        ctx.save_for_backward(gradient)
        return pred.new_tensor(value)

    @staticmethod
    def backward(ctx, grad):
        (gradient,) = ctx.saved_tensors
        return (grad * gradient).permute(1, 2, 0), None, None


def ssim(pred: Tensor, gt: Tensor, window: Tensor) -> Tensor:
    """SSIM of pred and gt [H, W, C] (float32, CPU) with the 1-D window [S] (summing to 1), a scalar;
    differentiable in pred."""
    if torch.is_grad_enabled() and pred.requires_grad:
        return SsimCpp.apply(pred, gt, window)
    return pred.new_tensor(build.ops().ssim_forward(*_inputs(pred, gt, window)))
