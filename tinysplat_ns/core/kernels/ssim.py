"""SSIM as pytorch-msssim computes it (a separable window at the positions where it fits, K1 = 0.01,
K2 = 0.03, data range 1, the mean over channels and positions) of two [H, W, C] images, compiled
(`ssim.cpp`) with a hand-written gradient for the first image. DSSIM's `implementation="compiled"`
takes it for float32 CPU images.
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


class SsimCpp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pred, gt, window):
        keep_freed_memory()  # its scratch (12 MB at 400x300) from the heap, not page-faulted in each call
        x, y, w = _planes(pred), _planes(gt), window.detach().contiguous()
        ctx.save_for_backward(x, y, w)
        return pred.new_tensor(build.ops().ssim_forward(x, y, w))

    @staticmethod
    def backward(ctx, grad):
        v_x = build.ops().ssim_backward(*ctx.saved_tensors, float(grad))
        return v_x.permute(1, 2, 0), None, None


def ssim(pred: Tensor, gt: Tensor, window: Tensor) -> Tensor:
    """SSIM of pred and gt [H, W, C] (float32, CPU) with the 1-D window [S] (summing to 1), a scalar;
    differentiable in pred."""
    return SsimCpp.apply(pred, gt, window)
