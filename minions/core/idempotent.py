"""``@idempotent``: a method that may safely run twice, so a call lost with a replica is retried.

When a replica of a replicated component dies, the calls it was running are lost: whether their
effect happened is unknown. For an ordinary method the caller gets
:class:`~minions.ComponentCrashed` and decides. A method marked ``@idempotent`` — running it
twice has the effect of running it once (a read, a ``set``, an upsert by key) — is instead
retried once on a live replica, and the caller sees only the answer::

    class Pricer(Resource, isolated=Isolation(replicas=4)):
        @idempotent
        async def price(self, pair: str, book: Book) -> Quote: ...
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["idempotent", "is_idempotent"]

F = TypeVar("F", bound=Callable[..., Any])

_MARK = "__minions_idempotent__"


def idempotent(fn: F) -> F:
    """Mark an ``async`` method as safe to run again: see :mod:`minions.core.idempotent`."""
    setattr(fn, _MARK, True)
    return fn


def is_idempotent(fn: object) -> bool:
    """Whether ``fn`` was marked ``@idempotent``."""
    return getattr(fn, _MARK, False) is True
