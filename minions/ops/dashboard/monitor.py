"""What a dashboard knows of its system, kept up to date and pushed to every open page.

A :class:`Monitor` runs two loops over its :class:`~.channel.Channel`:

* **sampling**: a ``telemetry`` request every :data:`SAMPLE_INTERVAL` seconds, turned into a
  *tick* by a :class:`~.series.Tracker` (states, restarts, last errors, CPU and memory, call
  rates and latency percentiles, workflow counters and step durations). The chart points of
  the last :data:`HISTORY_SECONDS` are kept, so a page opened now shows the last minutes at
  once. A lifecycle event makes the next sample come at once, so a state's colour changes with
  the event, not up to a second later.
* **following**: an ``events`` request that the system holds until something happens (up to
  :data:`FOLLOW_WAIT` seconds), so a crash reaches the timeline as the runtime handles it. The
  last :data:`TIMELINE_SIZE` events are kept; a system seen for the first time hands over the
  events it remembers (its last thousand), so the timeline starts with the past. When the
  sampler sees the system go away or another one answer, the waiting request is dropped and
  the new system asked at once.

One sample serves every page, however many are open: each page has a :class:`Subscription`,
a bounded queue of ready-to-send frames (``tick``, ``lifecycle``, ``reachability``). A page
too slow to take them loses its subscription; its browser reconnects and starts again from a
fresh :meth:`Monitor.snapshot`. When the system cannot be reached (it stopped, or was never
started), the pages are told so, and the monitor keeps trying.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from typing import Any

import structlog

from ..client import ControlError
from .channel import Channel
from .series import Tracker

__all__ = [
    "ACTIONS",
    "FOLLOW_WAIT",
    "HISTORY_SECONDS",
    "OPERATION_TIMEOUT",
    "SAMPLE_INTERVAL",
    "TIMELINE_SIZE",
    "Monitor",
    "Subscription",
]

log = structlog.get_logger("minions")

SAMPLE_INTERVAL = 1.0
#: The shortest time between two samples, however many events ask for one.
MIN_SAMPLE_GAP = 0.2
HISTORY_SECONDS = 300.0
TIMELINE_SIZE = 500
FOLLOW_WAIT = 10.0
#: How long a sample or an event request may take beyond its own wait.
ANSWER_TIMEOUT = 5.0
#: How long a restart, stop or redeploy may take (as ``minions restart``).
OPERATION_TIMEOUT = 120.0
ACTIONS = ("restart", "stop", "redeploy")
QUEUE_SIZE = 256


def frame(event: str, data: Any) -> bytes:
    """One server-sent event (JSON text never holds a raw newline)."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False)
    return f"event: {event}\ndata: {text}\n\n".encode()


class Subscription:
    """The frames waiting for one page; see the module docstring."""

    def __init__(self, size: int = QUEUE_SIZE) -> None:
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(size)
        self.overflowed = False

    def put(self, data: bytes | None) -> None:
        """Queue a frame (``None``: the end); a full queue ends the subscription."""
        if self.overflowed:
            return
        try:
            self._queue.put_nowait(data)
        except asyncio.QueueFull:
            self.overflowed = True
            self._queue.get_nowait()
            self._queue.put_nowait(None)

    async def next(self) -> bytes | None:
        """The next frame; ``None`` at the end (the monitor closed, or the page fell behind)."""
        return await self._queue.get()


class Monitor:
    """Follows one system for its dashboard pages; see the module docstring."""

    def __init__(self, channel: Channel, *, interval: float = SAMPLE_INTERVAL) -> None:
        self._channel = channel
        self._interval = interval
        self._tracker = Tracker()
        self._latest: dict[str, Any] | None = None
        self._history: deque[dict[str, Any]] = deque()
        self._timeline: deque[dict[str, Any]] = deque(maxlen=TIMELINE_SIZE)
        self._reachable: bool | None = None
        self._problem: str | None = None
        self._subscribers: set[Subscription] = set()
        self._wake = asyncio.Event()
        self._pid: int | None = None
        self._changed_system = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def __repr__(self) -> str:
        state = {None: "starting", True: "following", False: "unreachable"}[self._reachable]
        return f"<Monitor {state}, {len(self._subscribers)} pages>"

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._sampling(), name="minions:dashboard:sampling"),
            loop.create_task(self._following(), name="minions:dashboard:following"),
        ]

    async def close(self) -> None:
        """Stop following; end every subscription."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for subscription in self._subscribers:
            subscription.put(None)
        self._subscribers.clear()

    def snapshot(self) -> dict[str, Any]:
        """Everything a page needs to draw itself: the latest tick, the chart history, the
        timeline and whether the system answers."""
        return {
            "reachable": self._reachable,
            "problem": self._problem,
            "tick": self._latest,
            "history": list(self._history),
            "timeline": list(self._timeline),
        }

    def subscribe(self) -> Subscription:
        subscription = Subscription()
        self._subscribers.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscribers.discard(subscription)

    async def act(self, op: str, component: str) -> Any:
        """Restart, stop or redeploy ``component`` as the ``minions`` command does; its new
        status row. Raises what the request raised (a refusal, an unknown component...)."""
        if op not in ACTIONS:
            raise ValueError(f"unknown action {op!r}; one of {', '.join(ACTIONS)}")
        log.info("dashboard.action", op=op, component=component)
        try:
            async with asyncio.timeout(OPERATION_TIMEOUT):
                return await self._channel.request(op, component)
        finally:
            self._wake.set()

    # -- the loops ------------------------------------------------------------------------------

    async def _sampling(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            started = loop.time()
            try:
                await self._sample()
            except Exception as exc:  # a bug here must not end the dashboard's updates
                log.error("dashboard.sample_failed", exc_info=exc)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._wake.wait()
            gap = MIN_SAMPLE_GAP - (loop.time() - started)
            if gap > 0:
                await asyncio.sleep(gap)  # the rate limit of samples asked for by events

    async def _sample(self) -> None:
        try:
            async with asyncio.timeout(ANSWER_TIMEOUT):
                reading = await self._channel.request("telemetry")
        except (ControlError, TimeoutError) as exc:
            self._set_reachable(False, str(exc) or "the system did not answer in time")
            self._pid = None
            self._changed_system.set()
            return
        pid = reading["status"]["system"]["pid"]
        if pid != self._pid:
            self._pid = pid
            self._changed_system.set()
        tick = self._tracker.tick(reading)
        self._latest = tick
        self._history.append({"t": tick["t"], "series": tick["series"]})
        while self._history and tick["t"] - self._history[0]["t"] > HISTORY_SECONDS:
            self._history.popleft()
        self._set_reachable(True, None)
        self._publish("tick", tick)

    async def _following(self) -> None:
        since, pid = 0, None
        while True:
            try:
                page = await self._next_events(since)
            except (ControlError, TimeoutError):
                # The sampler tells the pages; ask again at its pace.
                await asyncio.sleep(self._interval)
                continue
            if page is None:
                continue  # the system changed under the request: ask the one there now
            try:
                since, pid = self._take(page, since, pid)
            except Exception as exc:
                log.error("dashboard.events_failed", exc_info=exc)
                await asyncio.sleep(self._interval)

    async def _next_events(self, since: int) -> dict[str, Any] | None:
        """The next ``events`` answer, or ``None`` when the sampler saw the system go or another
        one come meanwhile (a request to a system that is gone would never be answered)."""
        self._changed_system.clear()
        request = asyncio.ensure_future(
            self._channel.request("events", fields={"since": since, "wait": FOLLOW_WAIT})
        )
        changed = asyncio.ensure_future(self._changed_system.wait())
        try:
            async with asyncio.timeout(FOLLOW_WAIT + ANSWER_TIMEOUT):
                await asyncio.wait((request, changed), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (request, changed):
                task.cancel()
            await asyncio.gather(request, changed, return_exceptions=True)
        if not request.done() or request.cancelled():
            return None
        page: dict[str, Any] = request.result()
        return page

    def _take(self, page: dict[str, Any], since: int, pid: int | None) -> tuple[int, int | None]:
        """Record the events of one answer; the ``since`` and ``pid`` to ask with next."""
        if page["pid"] != pid:
            if pid is not None and since > 0:
                return 0, page["pid"]  # another system now: read its events from its first
            pid = page["pid"]
        for event in page["events"]:
            self._timeline.append(event)
            self._publish("lifecycle", event)
        if page["events"]:
            self._wake.set()
        return int(page["last"]), pid

    def _set_reachable(self, reachable: bool, problem: str | None) -> None:
        if reachable == self._reachable and problem == self._problem:
            return
        self._reachable, self._problem = reachable, problem
        self._publish("reachability", {"reachable": reachable, "problem": problem})

    def _publish(self, event: str, data: Any) -> None:
        if not self._subscribers:
            return
        encoded = frame(event, data)
        for subscription in list(self._subscribers):
            subscription.put(encoded)
            if subscription.overflowed:
                self._subscribers.discard(subscription)
