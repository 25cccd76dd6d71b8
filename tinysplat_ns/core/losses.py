"""Photometric loss of 3D Gaussian Splatting: (1 - lambda) * L1 + lambda * D-SSIM."""

from typing import Dict

import torch
from pytorch_msssim import SSIM
from torch import Tensor


class PhotometricLoss(torch.nn.Module):
    """L1 and D-SSIM (= 1 - SSIM, 11x11 Gaussian window, sigma 1.5) of [H, W, 3] images in [0, 1]."""

    def __init__(self, ssim_lambda: float = 0.2):
        super().__init__()
        if not 0.0 <= ssim_lambda <= 1.0:
            raise ValueError(f"ssim_lambda must be in [0, 1], got {ssim_lambda}")
        self.ssim_lambda = ssim_lambda
        self.ssim = SSIM(data_range=1.0, size_average=True, channel=3)

    def terms(self, pred: Tensor, gt: Tensor) -> Dict[str, Tensor]:
        l1 = torch.abs(gt - pred).mean()
        dssim = 1.0 - self.ssim(gt.permute(2, 0, 1)[None], pred.permute(2, 0, 1)[None])
        return {"l1": l1, "dssim": dssim}

    def forward(self, pred: Tensor, gt: Tensor) -> Tensor:
        terms = self.terms(pred, gt)
        return (1.0 - self.ssim_lambda) * terms["l1"] + self.ssim_lambda * terms["dssim"]
