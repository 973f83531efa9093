"""Where a dashboard's data comes from, and where its actions go: the control requests.

A :class:`Channel` makes one control request (``minions.ops.control``) and returns its result,
or raises the :class:`~minions.ops.client.RequestFailed` the system answered. ``minions
dashboard`` talks to the system over its socket (:class:`~minions.ops.client.AsyncControlClient`
is a channel); a system serving its own dashboard hands the same requests to its
:class:`~minions.ops.control.ControlServer` directly (:class:`LocalChannel`). Either way the
dashboard's restart, stop and redeploy are the very operations of ``minions restart``, ``stop``
and ``redeploy``, with the same checks and errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from ..client import result_of
from ..control import PROTOCOL_VERSION, ControlServer

__all__ = ["Channel", "LocalChannel"]


class Channel(Protocol):
    """Makes control requests; see the module docstring."""

    async def request(
        self, op: str, name: str | None = None, *, fields: Mapping[str, Any] | None = None
    ) -> Any: ...


class LocalChannel:
    """The control requests of the system in this process, answered by its ``ControlServer``."""

    def __init__(self, control: ControlServer) -> None:
        self._control = control

    def __repr__(self) -> str:
        return f"<LocalChannel {self._control!r}>"

    async def request(
        self, op: str, name: str | None = None, *, fields: Mapping[str, Any] | None = None
    ) -> Any:
        answer = await self._control.answer(
            {**(fields or {}), "v": PROTOCOL_VERSION, "op": op, "name": name}
        )
        return result_of(answer)
