"""Densification strategies by name: the built-ins and those that installed packages register under
the `tinysplat.strategies` entry point group (name = entry point name, value = the dataclass)."""

from importlib.metadata import entry_points
from typing import Dict, Type

from tinysplat_ns.core.strategies.adc import ADC
from tinysplat_ns.core.strategies.base import Strategy
from tinysplat_ns.core.strategies.mcmc import MCMC
from tinysplat_ns.core.strategies.none import NoDensification

BUILT_IN: Dict[str, Type[Strategy]] = {"adc": ADC, "mcmc": MCMC, "none": NoDensification}
ENTRY_POINT_GROUP = "tinysplat.strategies"


def available_strategies() -> Dict[str, Type[Strategy]]:
    found = dict(BUILT_IN)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name in found:
            raise ValueError(f"strategy {entry.name!r} from {entry.value} clashes with an existing one; rename it")
        cls = entry.load()
        if not (isinstance(cls, type) and issubclass(cls, Strategy)):
            raise TypeError(
                f"entry point {entry.name} = {entry.value} must be a subclass of tinysplat_ns.core.strategies.base.Strategy"
            )
        found[entry.name] = cls
    return found
