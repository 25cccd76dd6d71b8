"""Densification strategies by name: the built-ins and those that installed packages register under
the `tinysplat.strategies` entry point group (name = entry point name, value = the dataclass)."""

import warnings
from importlib.metadata import entry_points
from typing import Dict, Type

from tinysplat_ns.core.strategies.adc import ADC
from tinysplat_ns.core.strategies.base import Strategy
from tinysplat_ns.core.strategies.mcmc import MCMC
from tinysplat_ns.core.strategies.none import NoDensification

BUILT_IN: Dict[str, Type[Strategy]] = {"adc": ADC, "mcmc": MCMC, "none": NoDensification}
ENTRY_POINT_GROUP = "tinysplat.strategies"


def available_strategies() -> Dict[str, Type[Strategy]]:
    """A plugin that cannot be used is left out with a warning: one broken package must not stop
    every other run."""
    found = dict(BUILT_IN)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        problem = None
        if entry.name in found:
            problem = "its name is taken"
        else:
            try:
                cls = entry.load()
            except Exception as e:  # the plugin's own import error
                problem = f"it does not import ({type(e).__name__}: {e})"
            else:
                if not (isinstance(cls, type) and issubclass(cls, Strategy)):
                    problem = "it is not a subclass of tinysplat_ns.core.strategies.base.Strategy"
        if problem:
            warnings.warn(f"TinySplat strategy {entry.name} = {entry.value} is left out: {problem}", stacklevel=2)
        else:
            found[entry.name] = cls
    return found
