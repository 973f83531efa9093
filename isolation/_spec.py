"""What to run in a child, named by reference so that it can cross a process boundary.

A ``ChildSpec`` says which component to build in the child and which of the parent's services
it reaches. Nothing in it is a live object: the factory and the service classes are named as
``"module:qualname"`` strings and resolved *in the child* — which, being a fork of the warm
zygote, finds them already imported (a one-file script's classes live in ``__main__``). The
payload is plain msgpack data.

``reference(obj)`` writes such a name for a class or function, and ``resolve(name)`` reads it
back, with errors that say which part was not found.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._limits import Isolation

__all__ = ["ChildSpec", "reference", "resolve"]


def _check_reference(what: str, name: object) -> None:
    if not isinstance(name, str) or name.count(":") != 1 or not all(name.split(":")):
        raise ValueError(
            f"{what} must be a 'module:qualname' string such as 'mypkg.strategies:Strategy', "
            f"got {name!r}"
        )


@dataclass(frozen=True)
class ChildSpec:
    """The component an isolated child builds, and the parent services it may call.

    In the child, ``factory(proxies, payload)`` builds the component, where ``proxies`` maps
    each name in ``services`` to a proxy built from the named class (the parent serves the
    matching object under that name). ``isolation`` sets the child's limits and timeouts.
    """

    component: str
    factory: str
    services: Mapping[str, str] = field(default_factory=dict)
    payload: Any = None
    isolation: Isolation = field(default_factory=Isolation)

    def __post_init__(self) -> None:
        if not isinstance(self.component, str) or not self.component:
            raise ValueError(
                f"ChildSpec.component must be a non-empty name, got {self.component!r}"
            )
        _check_reference(f"ChildSpec({self.component}).factory", self.factory)
        for service, class_name in self.services.items():
            if not isinstance(service, str) or not service:
                raise ValueError(f"ChildSpec({self.component}) has a bad service name {service!r}")
            _check_reference(f"ChildSpec({self.component}).services[{service!r}]", class_name)
        if not isinstance(self.isolation, Isolation):
            raise TypeError(
                f"ChildSpec({self.component}).isolation must be an Isolation, "
                f"got {self.isolation!r}"
            )


def reference(obj: Any) -> str:
    """The ``"module:qualname"`` name under which ``resolve`` finds ``obj`` again."""
    qualname = getattr(obj, "__qualname__", None)
    module = getattr(obj, "__module__", None)
    if not isinstance(qualname, str) or not isinstance(module, str) or "<locals>" in qualname:
        raise ValueError(
            f"{obj!r} cannot be named for a child process: define it at the top level of a module"
        )
    return f"{module}:{qualname}"


def resolve(name: str, *, what: str = "object") -> Any:
    """Import the module of ``"module:qualname"`` and return the named attribute."""
    _check_reference(what, name)
    module_name, qualname = name.split(":")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(
            f"cannot import module {module_name!r} for {what} {name!r}: {exc}"
        ) from exc
    for part in qualname.split("."):
        try:
            target = getattr(target, part)
        except AttributeError as exc:
            raise ImportError(f"{what} {name!r}: {part!r} not found in {target!r}") from exc
    return target
