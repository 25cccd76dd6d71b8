"""No densification: the initial Gaussians (SfM points or random) are optimised, never added,
removed or moved. The simplest baseline, and the fastest per step."""

from dataclasses import dataclass

from tinysplat_ns.core.strategies.base import Strategy


@dataclass
class NoDensification(Strategy):
    pass
