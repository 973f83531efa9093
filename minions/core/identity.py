"""Stable identities for components.

A component's identity names it across processes and runs: it keys the one shared instance of a
resource, and (for workflows) the orchestration ids under which checkpoints are saved. Without a
decorator the identity is the class's module path and qualified name; ``@resource_id``,
``@minion_id`` and ``@pipeline_id`` pin it, so that renaming or moving a class keeps its identity.

Any non-empty string is accepted as a pinned identity (programs may have used names like
``"price-feed"`` for years); a canonical lowercase UUID is what ``minions stamp`` writes and what
``minions doctor ids`` expects (:func:`uuid_problem`), so two hand-written names cannot collide.

A config file may carry an identity of its own too (``minions.core.config_identity``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from .errors import ComponentOptionsError, DefinitionError

C = TypeVar("C", bound=type[Any])

_ID_ATTRIBUTE = "__minions_id__"


def _identity_decorator(kind: str) -> Callable[[str], Callable[[C], C]]:
    def decorator_factory(identity: str) -> Callable[[C], C]:
        if not isinstance(identity, str) or not identity.strip():
            # A TypeError for a non-string and a ValueError for an empty one, as Python's
            # conventions (and the original project) have it: the class is both.
            raise ComponentOptionsError(
                f"@{kind}_id needs a non-empty string, got {identity!r}; pass a stable id, "
                f'e.g. a UUID: @{kind}_id("8d9c1e0a-...")'
            )

        def decorate(cls: C) -> C:
            if not isinstance(cls, type):
                raise DefinitionError(f"@{kind}_id decorates a class, not {cls!r}")
            setattr(cls, _ID_ATTRIBUTE, identity)
            return cls

        return decorate

    decorator_factory.__name__ = f"{kind}_id"
    decorator_factory.__doc__ = (
        f"Give a {kind} class a stable identity (e.g. a UUID string) that survives renames "
        "and moves."
    )
    return decorator_factory


resource_id = _identity_decorator("resource")
minion_id = _identity_decorator("minion")
pipeline_id = _identity_decorator("pipeline")


def identity_of(cls: type[Any]) -> str:
    """The class's own pinned identity, or its module path and qualified name."""
    pinned = cls.__dict__.get(_ID_ATTRIBUTE)
    if isinstance(pinned, str):
        return pinned
    return f"{cls.__module__}.{cls.__qualname__}"


def uuid_problem(value: object) -> str | None:
    """Why ``value`` is not a canonical identity (a lowercase UUID string), or ``None`` if it is.

    Canonical means ``str(uuid.UUID(value)) == value``: hyphenated, lowercase, no braces or
    ``urn:`` prefix, so the same id is always spelled the same way.
    """
    if not isinstance(value, str):
        return f"it must be a string, not {type(value).__name__}"
    if not value.strip():
        return "it must not be empty"
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        return f"{value!r} is not a UUID"
    if str(parsed) != value:
        return f"{value!r} is not in canonical form; write it as {str(parsed)!r}"
    return None
