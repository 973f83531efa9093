"""Time as the runtime sees it.

The supervisor reads time and waits only through a :class:`Clock`: :class:`MonotonicClock` in
production, and in tests :class:`FakeClock` (``minions.testing.FakeClock``), which drives backoff,
restart intensity and timeouts instead of real sleeps.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    """Monotonic time in seconds and a way to wait for it to pass."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class MonotonicClock:
    """The real clock: :func:`time.monotonic` and :func:`asyncio.sleep`."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def __repr__(self) -> str:
        return "<MonotonicClock>"


class FakeClock:
    """A clock that moves only when told to; implements the runtime's ``Clock`` protocol."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._counter = itertools.count()
        self._changed: asyncio.Event | None = None
        self.slept: list[float] = []
        """Every duration passed to :meth:`sleep`, in order (a backoff schedule, for example)."""

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if seconds <= 0:
            return
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._counter), future))
        self._notify()
        try:
            await future
        finally:
            if not future.done():
                future.cancel()
            self._sleepers = [s for s in self._sleepers if not s[2].done()]
            heapq.heapify(self._sleepers)
            self._notify()

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose deadline has come."""
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        self._now += seconds
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)

    def next_deadline(self) -> float | None:
        """When the earliest sleeper wakes, or ``None`` when nobody sleeps."""
        live = [s for s in self._sleepers if not s[2].done()]
        return min(live)[0] if live else None

    @property
    def sleepers(self) -> int:
        return sum(1 for s in self._sleepers if not s[2].done())

    async def wait_for_sleepers(self, count: int = 1) -> None:
        """Wait until at least ``count`` tasks are sleeping on this clock."""
        while self.sleepers < count:
            if self._changed is None:
                self._changed = asyncio.Event()
            self._changed.clear()
            await self._changed.wait()

    async def advance_to_next(self) -> float:
        """Wait for a sleeper, move time to its deadline, wake it; return the time moved."""
        await self.wait_for_sleepers(1)
        deadline = self.next_deadline()
        assert deadline is not None
        step = max(0.0, deadline - self._now)
        self.advance(step)
        return step

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
