"""What a densification strategy is to TinySplat: a small dataclass (its fields are its options)
with gsplat's two hooks around the backward pass. State lives in a plain dict of tensors, numbers
and None, which goes into checkpoints as it is.

A third-party package adds one by registering its class under the `tinysplat.strategies` entry
point group; `ns-train tinysplat --pipeline.model.strategy <entry point name>` then uses it and
`--help` lists its options.
"""

from dataclasses import dataclass
from typing import Any, Dict

from torch import Tensor


@dataclass
class Strategy:
    def initialize_state(self, scene_scale: float = 1.0) -> Dict[str, Any]:
        return {}

    def step_pre_backward(self, params, optimizers, state: Dict[str, Any], step: int, info: Dict[str, Any]) -> None:
        """Before `loss.backward()`: e.g. ask autograd to keep the 2D means' gradient."""

    def step_post_backward(self, params, optimizers, state: Dict[str, Any], step: int, info: Dict[str, Any]) -> None:
        """After the optimizer step: add, remove or move Gaussians (and their Adam moments)."""

    def upset(self, step: int) -> bool:
        """Whether the Gaussians after `step` are still recovering from a deliberate upset of the
        strategy's (ADC's opacity reset): they then render unlike the trained scene, so the trainer
        writes a periodic checkpoint due then once this is False."""
        return False

    def set_budget(self, max_gaussians: int) -> None:
        """Honour a hard cap on the number of Gaussians (0: none). The model also removes the
        least opaque past the cap after every step, so a strategy that ignores this stays capped."""

    def set_fixed_background(self, fixed: bool) -> None:
        """Whether training renders over one fixed colour (photos with alpha on the dataset's own
        background) rather than a random one each step."""

    def regularization(self, params) -> Dict[str, Tensor]:
        """Loss terms the strategy needs (3DGS-MCMC's opacity and scale penalties), by name."""
        return {}

    @property
    def uses_absgrad(self) -> bool:
        """Whether the rasterizer must sum per-pixel absolute 2D-mean gradients (AbsGS)."""
        return False
