"""What a loss term is to TinySplat: a small dataclass (its fields are its options) that maps what
one training step produced to a scalar. The loss is a weighted sum of terms picked by name; no term
knows about the others.

A third-party package adds one by registering its class under the `tinysplat.losses` entry point
group; `--pipeline.model.loss.terms <entry point name>=<weight>` then uses it.
"""

from dataclasses import dataclass
from typing import ClassVar, Mapping, Optional, Tuple

from torch import Tensor


@dataclass
class LossInputs:
    """One training view: images are [H, W, C] in [0, 1]."""

    pred: Tensor
    gt: Tensor
    params: Mapping[str, Tensor]
    """The Gaussians as optimised: means, scales (log), quats, opacities (logit), colour features."""
    mask: Optional[Tensor] = None
    """[H, W, 1], true where pixels count (the dataset's masks), or None: all count."""
    depth: Optional[Tensor] = None
    """Rendered expected depth [H, W, 1], when a term needs depth."""
    gt_depth: Optional[Tensor] = None
    """The dataset's depth [H, W, 1] in scene units, 0 where unknown."""


@dataclass
class LossTerm:
    needs: ClassVar[Tuple[str, ...]] = ()
    """Data beyond images that the term reads: "depth" (rendered and given depth)."""

    def __call__(self, inputs: LossInputs) -> Tensor:
        raise NotImplementedError
