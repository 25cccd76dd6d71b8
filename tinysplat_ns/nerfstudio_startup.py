"""Nerfstudio's start-up, without its slowest step.

Every Nerfstudio command (ns-train, ns-eval, ns-export, ns-render, ns-viewer, tinysplat-compare)
imports `nerfstudio.configs.method_configs`, which builds a placeholder config for each of the 26
external methods it lists. Each placeholder's `__post_init__` calls `inspect.stack()` only to read
its caller's name; that reads the source file of every frame on the stack, scanning all loaded
modules (thousands, once torch is in) for each: 3-7 s of a 13-16 s import on a 2-core Zen 3
(`benchmarks/startup.py`, docs/benchmarks.md). The frame itself says the same name at once.

Nerfstudio loads TinySplat's entry point (its method discovery) just before it builds them.
"""

import sys

from nerfstudio.configs.external_methods import ExternalMethodDummyTrainerConfig

# the placeholder's own check, kept: it offers to install the method when a user picks one
_nerfstudio_post_init = ExternalMethodDummyTrainerConfig.__post_init__


def _post_init(self) -> None:
    # frames: this method, the dataclass's __init__, its caller
    if sys._getframe(2).f_code.co_name == "get_external_methods":
        return
    _nerfstudio_post_init(self)


def skip_stack_inspection() -> None:
    """Building the placeholders from Nerfstudio's list costs nothing; picking one on the command line
    still offers to install it, as before."""
    ExternalMethodDummyTrainerConfig.__post_init__ = _post_init
