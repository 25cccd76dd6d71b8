"""Components by name: TinySplat's built-ins and those that installed packages register under an
entry point group (entry point name = the name users type, value = the class)."""

import warnings
from importlib.metadata import entry_points
from typing import Dict, Type, TypeVar

T = TypeVar("T")


def discover(group: str, built_in: Dict[str, Type[T]], base: Type[T]) -> Dict[str, Type[T]]:
    """The built-ins, then every usable plugin of `group`. A plugin that cannot be used is left out
    with a warning: one broken package must not stop every other run."""
    found = dict(built_in)
    for entry in entry_points(group=group):
        problem = None
        if entry.name in found:
            problem = "its name is taken"
        else:
            try:
                cls = entry.load()
            except Exception as e:  # the plugin's own import error
                problem = f"it does not import ({type(e).__name__}: {e})"
            else:
                if not (isinstance(cls, type) and issubclass(cls, base)):
                    problem = f"it is not a subclass of {base.__module__}.{base.__qualname__}"
        if problem:
            warnings.warn(f"TinySplat {group} plugin {entry.name} = {entry.value} is left out: {problem}", stacklevel=3)
        else:
            found[entry.name] = cls
    return found
