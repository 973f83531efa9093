"""The recent history of a runtime's lifecycle events, numbered, for readers that come and go.

:class:`LifecycleHistory` is a runtime's lifecycle listener
(:meth:`~minions.Runtime.add_lifecycle_listener`) that keeps the last :data:`HISTORY_SIZE`
events as plain data, each with a sequence number that only grows. A reader asks for the events
after the last number it saw (:meth:`LifecycleHistory.after`) and may wait, bounded, for the
next one: that is how the control socket's ``events`` request follows a system without
polling, and how the dashboard's timeline learns of a crash the moment it is handled.

Older events fall off the end; a reader that asks for events older than the oldest one kept is
told how many it missed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from dataclasses import dataclass
from typing import Any

from ..core.status import LifecycleEvent

__all__ = ["HISTORY_SIZE", "MAX_WAIT", "LifecycleHistory", "LifecyclePage"]

#: How many events are kept.
HISTORY_SIZE = 1000
#: The longest a reader may wait for the next event, in seconds.
MAX_WAIT = 30.0
#: Reasons longer than this many characters are cut (an error message can be huge).
MAX_REASON = 2000


@dataclass(frozen=True)
class LifecyclePage:
    """What :meth:`LifecycleHistory.after` returns: events as plain data, the number of the
    last one (``last``: pass it as ``since`` next time) and how many were missed (older than
    the oldest kept)."""

    events: list[dict[str, Any]]
    last: int
    missed: int

    def as_data(self) -> dict[str, Any]:
        return {"events": self.events, "last": self.last, "missed": self.missed}


class LifecycleHistory:
    """A lifecycle listener that keeps the last ``size`` events; see the module docstring."""

    def __init__(self, size: int = HISTORY_SIZE) -> None:
        self._events: deque[dict[str, Any]] = deque(maxlen=size)
        self._last = 0
        self._arrived: asyncio.Event | None = None

    def __repr__(self) -> str:
        return f"<LifecycleHistory {len(self._events)} events, last #{self._last}>"

    @property
    def last(self) -> int:
        """The number of the newest event (0 before the first)."""
        return self._last

    def __call__(self, event: LifecycleEvent) -> None:
        self._last += 1
        self._events.append(event_data(self._last, event))
        arrived, self._arrived = self._arrived, None
        if arrived is not None:
            arrived.set()

    async def after(self, since: int, wait: float = 0.0) -> LifecyclePage:
        """The events numbered above ``since``; if there are none, wait up to ``wait`` seconds
        (at most :data:`MAX_WAIT`) for the next one. ``since`` above the newest number (the
        runtime restarted, counting from 0 again) is read as 0."""
        if since > self._last:
            since = 0
        if since == self._last and wait > 0:
            if self._arrived is None:
                self._arrived = asyncio.Event()
            arrived = self._arrived
            with contextlib.suppress(TimeoutError):
                # Not wait_for: on Python 3.11 it may swallow a cancellation that arrives as the
                # event is set (the runtime announces its stop while its readers are cancelled).
                async with asyncio.timeout(min(wait, MAX_WAIT)):
                    await arrived.wait()
        oldest = self._events[0]["seq"] if self._events else self._last + 1
        missed = max(0, oldest - since - 1)
        events = [e for e in self._events if e["seq"] > since]
        return LifecyclePage(events, self._last, missed)


def event_data(seq: int, event: LifecycleEvent) -> dict[str, Any]:
    """One event as plain data (msgpack and JSON can carry it); a long reason is cut."""
    reason = event.reason
    if reason is not None and len(reason) > MAX_REASON:
        reason = reason[: MAX_REASON - 1] + "…"
    return {
        "seq": seq,
        "at": event.at.timestamp(),
        "component": event.component,
        "kind": event.kind,
        "reason": reason,
        "cause": event.cause,
        "pid": event.pid,
        "delay": event.delay,
        "replica": event.replica,
    }
