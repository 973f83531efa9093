"""Which replica am I: :class:`ReplicaInfo`, injected into components that declare it.

A component run as several replicas (``isolated=Isolation(replicas=4)``) may want to know its
place among them — to take every fourth shard of a job, say. It declares a constructor
parameter (or a class attribute) annotated ``ReplicaInfo``, and the runtime passes it in like a
dependency::

    class Strategy(Minion, isolated=Isolation(replicas=3)):
        def __init__(self, prices: PriceFeed, replica: ReplicaInfo) -> None:
            self.shard = replica.index          # 0, 1 or 2

A component that is not replicated receives ``ReplicaInfo(index=0, count=1)``. ``count`` is the
number of replicas when this one started; ``minions scale`` changes it for replicas started
afterwards, not for those already running.
"""

from __future__ import annotations

import inspect
import typing
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

__all__ = ["SINGLE", "ReplicaInfo", "declared_replica_info"]


@dataclass(frozen=True, slots=True)
class ReplicaInfo:
    """This replica's ``index`` (from 0) among ``count`` replicas of its component."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(
                f"ReplicaInfo(index={self.index}, count={self.count}): index must be in 0..count-1"
            )


#: What a component that is not replicated receives.
SINGLE = ReplicaInfo(0, 1)


def declared_replica_info(cls: type) -> tuple[str, Literal["parameter", "attribute"]] | None:
    """Where ``cls`` wants its :class:`ReplicaInfo`: a parameter or attribute name, or None."""
    return _declared(cls)


@cache
def _declared(cls: Any) -> tuple[str, Literal["parameter", "attribute"]] | None:
    hints = _safe_hints(cls)
    for name, hint in hints.items():
        if hint is ReplicaInfo:
            return name, "attribute"
    init = cls.__init__
    if init is object.__init__:
        return None
    params = _safe_hints(init)
    for param in list(inspect.signature(init).parameters.values())[1:]:
        if params.get(param.name) is ReplicaInfo:
            return param.name, "parameter"
    return None


def _safe_hints(obj: Any) -> dict[str, Any]:
    # The graph reports unresolvable annotations with a clear error; here they only mean "not
    # a ReplicaInfo".
    try:
        return typing.get_type_hints(obj)
    except Exception:
        return {}
