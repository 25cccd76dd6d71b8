"""Depth supervision from the dataset's depth images."""

from dataclasses import dataclass
from typing import ClassVar, Tuple

from torch import Tensor

from tinysplat_ns.core.losses.base import LossInputs, LossTerm


@dataclass
class DepthL1(LossTerm):
    """Mean absolute difference between rendered and given depth (scene units), over the pixels
    with a depth (> 0) inside the mask."""

    needs: ClassVar[Tuple[str, ...]] = ("depth",)

    def __call__(self, inputs: LossInputs) -> Tensor:
        valid = inputs.gt_depth > 0
        if inputs.mask is not None:
            valid = valid & inputs.mask.bool()
        error = (inputs.depth - inputs.gt_depth).abs() * valid
        return error.sum() / valid.sum().clamp(min=1)
