"""Densification strategies by name: the built-ins and those that installed packages register under
the `tinysplat.strategies` entry point group (name = entry point name, value = the dataclass)."""

from typing import Dict, Type

from tinysplat_ns.core.plugins import discover
from tinysplat_ns.core.strategies.adc import ADC
from tinysplat_ns.core.strategies.base import Strategy
from tinysplat_ns.core.strategies.mcmc import MCMC
from tinysplat_ns.core.strategies.none import NoDensification

BUILT_IN: Dict[str, Type[Strategy]] = {"adc": ADC, "mcmc": MCMC, "none": NoDensification}
ENTRY_POINT_GROUP = "tinysplat.strategies"


def available_strategies() -> Dict[str, Type[Strategy]]:
    return discover(ENTRY_POINT_GROUP, BUILT_IN, Strategy)
