"""Nerfstudio's exponential learning-rate decay, with plain-float learning rates.

Nerfstudio's own scheduler computes its factor with numpy, so the optimizer and scheduler state end
up holding `numpy.float64` learning rates; since torch 2.6, `torch.load(weights_only=True)` (the
default, used by ns-eval, ns-viewer, ns-export and ns-render) then refuses the checkpoint.
"""

from dataclasses import dataclass, field
from typing import Type

from torch.optim import Optimizer, lr_scheduler

from nerfstudio.engine.schedulers import ExponentialDecayScheduler, ExponentialDecaySchedulerConfig


class FloatExponentialDecayScheduler(ExponentialDecayScheduler):
    def get_scheduler(self, optimizer: Optimizer, lr_init: float) -> lr_scheduler.LRScheduler:
        numpy_factor = super().get_scheduler(optimizer, lr_init).lr_lambdas[0]
        return lr_scheduler.LambdaLR(optimizer, lr_lambda=lambda step: float(numpy_factor(step)))


@dataclass
class FloatExponentialDecaySchedulerConfig(ExponentialDecaySchedulerConfig):
    _target: Type = field(default_factory=lambda: FloatExponentialDecayScheduler)
