"""Command-line options of the pluggable components (densification strategies, loss terms): one
option group per component, built from whatever is installed when `ns-train` starts, so a plugin's
options show in `--help` like the built-ins'."""

import copy
import dataclasses
import inspect
from dataclasses import field
from typing import Any, Dict, List, Tuple

import tyro
from typing_extensions import Annotated

from tinysplat_ns.core.losses.composite import PUBLISHED_3DGS
from tinysplat_ns.core.losses.registry import available_terms


def _field_name(component: str) -> str:
    return component.replace("-", "_")


def option_groups(components: Dict[str, type], kind: str) -> List[Tuple[str, Any, Any]]:
    """A dataclass field per component whose own fields are options: `--<prefix>.<name>.<option>`."""
    fields = []
    for name, cls in components.items():
        help_text = f"options of the {name} {kind} ({cls.__module__}.{cls.__qualname__})"
        fields.append((_field_name(name), Annotated[cls, tyro.conf.arg(help=help_text)], field(default_factory=cls)))
    return fields


def configured(config: Any, component: str) -> Any:
    """A fresh copy of the component `option_groups` put in `config`, with its options as configured."""
    return copy.deepcopy(getattr(config, _field_name(component)))


def summary(cls: type) -> str:
    """The first sentence of a component's docstring."""
    return " ".join((inspect.getdoc(cls) or "").split()).split(". ")[0].rstrip(".")


def _loss_config() -> type:
    terms = available_terms()
    help_text = "the loss, as name=weight items that are summed (each is logged by its name); terms: " + "; ".join(
        f"{name}: {summary(cls)}" for name, cls in terms.items()
    )
    fields: List[Tuple[str, Any, Any]] = [
        ("terms", Annotated[Tuple[str, ...], tyro.conf.arg(help=help_text)], field(default=PUBLISHED_3DGS))
    ]
    config = dataclasses.make_dataclass("LossConfig", fields + option_groups(terms, "loss term"))
    config.__module__ = __name__
    return config


LossConfig = _loss_config()
