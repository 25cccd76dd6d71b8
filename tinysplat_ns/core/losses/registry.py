"""Loss terms by name: the built-ins and those that installed packages register under the
`tinysplat.losses` entry point group (name = entry point name, value = the dataclass)."""

from typing import Dict, Type

from tinysplat_ns.core.losses.base import LossTerm
from tinysplat_ns.core.losses.depth import DepthL1
from tinysplat_ns.core.losses.photometric import DSSIM, L1, L2
from tinysplat_ns.core.losses.regularizers import AnisotropyReg, OpacityReg, ScaleReg
from tinysplat_ns.core.plugins import discover

BUILT_IN: Dict[str, Type[LossTerm]] = {
    "l1": L1,
    "l2": L2,
    "dssim": DSSIM,
    "scale-reg": ScaleReg,
    "anisotropy-reg": AnisotropyReg,
    "opacity-reg": OpacityReg,
    "depth": DepthL1,
}
ENTRY_POINT_GROUP = "tinysplat.losses"


def available_terms() -> Dict[str, Type[LossTerm]]:
    return discover(ENTRY_POINT_GROUP, BUILT_IN, LossTerm)
