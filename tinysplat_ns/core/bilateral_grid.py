"""The bilateral grids' smoothness term (Nerfstudio's `total_variation_loss`: each axis of the cells'
squared differences over the axis's count of them, summed, over the number of grids) with its gradient
taken in the same pass: autograd through Nerfstudio's took 28 ms a step forward and backward for 44
photos' grids on 2 cores, this 5 ms. The gradient is linear in the grids, so forward computes it."""

import torch
from torch import Tensor


class TotalVariation(torch.autograd.Function):
    @staticmethod
    def forward(ctx, grids):
        total, gradient = grids.new_zeros(()), torch.zeros_like(grids)
        for axis in range(2, grids.dim()):
            n = grids.shape[axis]
            step = grids.narrow(axis, 1, n - 1) - grids.narrow(axis, 0, n - 1)
            scale = 1.0 / (step[0].numel() * grids.shape[0])
            total += step.square().sum() * scale
            step.mul_(2.0 * scale)
            gradient.narrow(axis, 1, n - 1).add_(step)
            gradient.narrow(axis, 0, n - 1).sub_(step)
        ctx.save_for_backward(gradient)
        return total

    @staticmethod
    def backward(ctx, v_total):
        (gradient,) = ctx.saved_tensors
        return gradient * v_total


def total_variation(grids: Tensor) -> Tensor:
    """Of grids [N, 12, L, H, W] (any number of trailing axes), differentiable."""
    return TotalVariation.apply(grids)
