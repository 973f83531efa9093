"""The dependency graph: which components a program needs, and in which order to start them.

Dependencies are declared by type annotation, in two forms that may be mixed:

* constructor parameters: ``def __init__(self, events: ChainEvents, prices: PriceFeed)``;
* class attributes: ``prices: PriceFeed`` (set on the instance before ``__init__`` runs).

An annotation that is a :class:`~minions.Resource` subclass is a dependency. A constructor
parameter with any other annotation must have a default (it stays a plain parameter); the
attribute or parameter named ``config`` annotated with a pydantic model or dataclass receives the
component's configuration, and one annotated :class:`~minions.ReplicaInfo` which replica it is.

Each requested class resolves to one concrete class, its *binding*: a subclass listed among the
components given to the runtime replaces it (so ``run(Strategy, FakeFeed)`` swaps a fake feed in
for every ``PriceFeed`` dependency); otherwise the class itself, unless it is abstract. Every
problem found here is a :class:`~minions.DefinitionError` raised before anything is constructed.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

from .component import Component, Minion, Resource, component_kind, component_name
from .errors import (
    DefinitionError,
    DependencyCycleError,
    DependencyError,
    IdentityConflictError,
)
from .identity import identity_of
from .replica import ReplicaInfo
from .values import is_struct


@dataclass(frozen=True)
class Dependency:
    """One injected dependency of a component."""

    name: str
    via: Literal["parameter", "attribute"]
    requested: type[Resource]


@dataclass(frozen=True)
class Node:
    """One component of the graph, with what it needs to be constructed."""

    cls: type[Component]
    name: str
    kind: str
    identity: str
    dependencies: tuple[tuple[Dependency, type[Resource]], ...]
    config_type: type[Any] | None
    config_via: Literal["parameter", "attribute"] | None

    @property
    def dependency_classes(self) -> tuple[type[Resource], ...]:
        return tuple(bound for _, bound in self.dependencies)


@dataclass(frozen=True)
class Graph:
    """Components in start order (every dependency before its dependents)."""

    nodes: tuple[Node, ...]

    def node(self, cls: type[Component]) -> Node:
        for node in self.nodes:
            if node.cls is cls:
                return node
        raise KeyError(cls)

    def closure(self, classes: Iterable[type[Component]]) -> set[type[Component]]:
        """``classes`` and every component they depend on, directly or not."""
        found: set[type[Component]] = set()
        pending = list(classes)
        while pending:
            cls = pending.pop()
            if cls not in found:
                found.add(cls)
                pending.extend(self.node(cls).dependency_classes)
        return found

    def dependents(self, cls: type[Component]) -> list[Node]:
        """Every component that depends on ``cls``, directly or not, in start order."""
        affected: set[type[Component]] = {cls}
        found: list[Node] = []
        for node in self.nodes:
            if any(dep in affected for dep in node.dependency_classes):
                affected.add(node.cls)
                found.append(node)
        return found


def build_graph(components: Sequence[type[Any]]) -> Graph:
    """Resolve ``components`` and everything they depend on into a :class:`Graph`."""
    roots: list[type[Component]] = []
    for cls in components:
        component_kind(cls)
        if cls not in roots:
            roots.append(cls)
    resolver = _Resolver(roots)
    order: list[Node] = []
    done: set[type[Component]] = set()
    for root in roots:
        resolver.visit(root, [], order, done)
    _check_unique(order)
    return Graph(tuple(order))


class _Resolver:
    def __init__(self, roots: list[type[Component]]) -> None:
        self._roots = roots
        self._nodes: dict[type[Component], Node] = {}

    def visit(
        self,
        cls: type[Component],
        path: list[type[Component]],
        order: list[Node],
        done: set[type[Component]],
    ) -> None:
        if cls in done:
            return
        if cls in path:
            cycle = [*path[path.index(cls) :], cls]
            raise DependencyCycleError([component_name(c) for c in cycle])
        node = self._node(cls)
        for _, bound in node.dependencies:
            self.visit(bound, [*path, cls], order, done)
        done.add(cls)
        order.append(node)

    def _node(self, cls: type[Component]) -> Node:
        if cls not in self._nodes:
            declared = list(declared_dependencies(cls))
            config_type, config_via = declared_config(cls)
            self._nodes[cls] = Node(
                cls=cls,
                name=component_name(cls),
                kind=component_kind(cls),
                identity=identity_of(cls),
                dependencies=tuple((dep, self._bind(cls, dep)) for dep in declared),
                config_type=config_type,
                config_via=config_via,
            )
        return self._nodes[cls]

    def _bind(self, owner: type[Component], dep: Dependency) -> type[Resource]:
        candidates = [c for c in self._roots if issubclass(c, dep.requested)]
        where = f"{component_name(owner)}.{dep.name}"
        if len(candidates) > 1:
            names = ", ".join(_type_name(c) for c in candidates)
            raise DependencyError(
                f"ambiguous dependency {where}: {_type_name(dep.requested)} is provided by "
                f"{names}; pass only one of them to the runtime"
            )
        if candidates:
            bound = candidates[0]
            assert issubclass(bound, Resource)
            return bound
        if inspect.isabstract(dep.requested):
            raise DependencyError(
                f"missing dependency {where}: {_type_name(dep.requested)} is abstract; pass a "
                f"concrete subclass of it to the runtime, e.g. run(..., My{dep.requested.__name__})"
            )
        return dep.requested


def declared_dependencies(cls: type[Component]) -> Iterable[Dependency]:
    """The dependencies ``cls`` declares by annotation, before bindings are applied."""
    owner = component_name(cls)
    for name, hint in _attribute_hints(cls).items():
        if _is_component_class(hint):
            yield Dependency(name, "attribute", _as_resource(owner, name, hint))
    init = cls.__init__
    if init is object.__init__:
        return
    hints = _hints(init, f"{owner}.__init__")
    for param in list(inspect.signature(init).parameters.values())[1:]:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        hint = hints.get(param.name)
        if isinstance(hint, type) and issubclass(hint, Component):
            yield Dependency(param.name, "parameter", _as_resource(owner, param.name, hint))
        elif param.name == "config" and _is_config_type(hint):
            continue
        elif hint is ReplicaInfo:
            continue  # passed in by the host, like the config
        elif param.default is param.empty:
            shown = f"{param.name}: {_type_name(hint)}" if hint is not None else param.name
            raise DependencyError(
                f"{owner}.__init__ parameter '{shown}' has no default and is not a Resource, so "
                f"the runtime cannot provide it: give it a default, annotate it with a Resource "
                f"class, or move it into the component's config model"
            )


def declared_config(
    cls: type[Component],
) -> tuple[type[Any] | None, Literal["parameter", "attribute"] | None]:
    owner = component_name(cls)
    hint = _attribute_hints(cls).get("config")
    if hint is not None:
        if not _is_config_type(hint):
            raise DefinitionError(
                f"{owner}.config is annotated {_type_name(hint)}; a component's config must be a "
                f"pydantic model, a dataclass or a msgspec Struct"
            )
        return hint, "attribute"
    init = cls.__init__
    if init is not object.__init__ and "config" in inspect.signature(init).parameters:
        param_hint = _hints(init, f"{owner}.__init__").get("config")
        if _is_config_type(param_hint):
            return param_hint, "parameter"
    return None, None


def _attribute_hints(cls: type[Component]) -> dict[str, Any]:
    hints = _hints(cls, component_name(cls))
    return {
        name: hint
        for name, hint in hints.items()
        if not name.startswith("_") and typing.get_origin(hint) is not typing.ClassVar
    }


def _hints(obj: Any, where: str) -> dict[str, Any]:
    try:
        return typing.get_type_hints(obj)
    except Exception as exc:
        raise DependencyError(
            f"cannot resolve the type annotations of {where}: {exc}. Define or import the "
            f"annotated classes at module level, before the runtime starts"
        ) from exc


def _is_component_class(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, Component)


def _as_resource(owner: str, name: str, hint: type[Component]) -> type[Resource]:
    if issubclass(hint, Resource):
        return hint
    kind = "a Minion" if issubclass(hint, Minion) else "not a Resource"
    shown = _type_name(hint)
    raise DependencyError(
        f"{owner}.{name} is annotated {shown}, which is {kind}: only Resources can be "
        f"injected. Make {shown} a Resource, or run it as its own component"
    )


def _is_config_type(hint: Any) -> bool:
    if not isinstance(hint, type):
        return False
    return dataclasses.is_dataclass(hint) or issubclass(hint, BaseModel) or is_struct(hint)


def _type_name(hint: Any) -> str:
    """How a type reads in a message: a component's name, else the class's qualified name
    without the ``<locals>`` of the function that defined it."""
    if isinstance(hint, type) and issubclass(hint, Component):
        return component_name(hint)
    if isinstance(hint, type):
        return hint.__qualname__.rsplit("<locals>.", 1)[-1]
    return repr(hint)


def _check_unique(nodes: list[Node]) -> None:
    by_name: dict[str, Node] = {}
    by_identity: dict[str, Node] = {}
    for node in nodes:
        other = by_identity.get(node.identity)
        if other is not None:
            raise IdentityConflictError(
                f"{_qualified(other.cls)} and {_qualified(node.cls)} both claim the identity "
                f"{node.identity!r}; give each its own @resource_id / @minion_id"
            )
        by_identity[node.identity] = node
        other = by_name.get(node.name)
        if other is not None:
            raise DefinitionError(
                f"two components are named {node.name!r} ({_qualified(other.cls)} and "
                f"{_qualified(node.cls)}); give one another name with a class keyword, e.g. "
                f'class {node.cls.__name__}(..., name="Other{node.name}")'
            )
        by_name[node.name] = node


def _qualified(cls: type[Any]) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
