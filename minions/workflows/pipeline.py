"""Pipelines: shared event sources that workflow minions subscribe to.

``class Trades(Pipeline[ChainEvent])`` with ``async def produce_event(self) -> ChainEvent`` is a
:class:`~minions.Resource`: one instance per identity, started before the minions that declare it,
supervised (``permanent`` by default), and restarted together with its dependents. Its ``run()``
is the produce loop::

    wait for a subscriber ──► event = await produce_event() ──► deliver to every subscriber
            ▲                                                          │
            └───────── every 64 events: yield to the event loop ◄──────┘

* Each event goes to every subscribed workflow minion (fan-out); a subscriber with no room for
  another workflow (``max_in_flight``) makes the loop wait, so a fast pipeline cannot queue
  unbounded work (backpressure).
* The loop yields to the event loop at least every 64 events, so a ``produce_event`` that
  never awaits anything cannot starve the rest of the program. It does not yield after every
  event: the workflows started for events produced back to back (when several finished at
  once and made room) then take their steps, and save their checkpoints, in the same pass of
  the event loop — one transaction for a batching store.
* Nothing is produced while nobody subscribes: events are not buffered, and a pipeline that
  starts before its minions loses none of them. An event produced while the last subscriber
  left (a minion restarting) is held for the next subscriber.
* ``produce_event`` raising is logged and counted, and the loop goes on after a short delay
  that grows while it keeps failing (capped at one second), so a broken source cannot flood
  the log. An event of the wrong type is logged, counted and dropped.
"""

from __future__ import annotations

import asyncio
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import structlog

from ..core.component import Resource, component_name
from ..core.errors import DefinitionError
from ..core.values import instance_type

__all__ = ["Pipeline", "PipelineStatistics", "Subscriber"]

EventT = TypeVar("EventT")

log = structlog.get_logger("minions")

_RETRY_INITIAL = 0.01
_RETRY_CAP = 1.0
#: Events produced back to back before the loop yields to the event loop.
_BURST = 64


class Subscriber(Protocol):
    """What a pipeline delivers events to (a workflow minion's runner)."""

    async def deliver(self, event: Any) -> None: ...


@dataclass(frozen=True)
class PipelineStatistics:
    """A pipeline's counters since its current incarnation started."""

    produced: int
    delivered: int
    errors: int
    subscribers: int


class _Fanout:
    """The subscribers of one pipeline instance, and its counters."""

    def __init__(self) -> None:
        self.subscribers: list[Subscriber] = []
        self.has_subscribers = asyncio.Event()
        self.produced = 0
        self.delivered = 0
        self.errors = 0


def _fanout(pipeline: Pipeline[Any]) -> _Fanout:
    # Created on first use: a user's __init__ need not call super().__init__().
    fanout = pipeline.__dict__.get("_minions_fanout")
    if fanout is None:
        fanout = _Fanout()
        pipeline.__dict__["_minions_fanout"] = fanout
    return fanout


class Pipeline(Resource, Generic[EventT]):
    """A source of events for workflow minions: override ``async def produce_event(self)``.

    Declare the event type as the class parameter, ``class Trades(Pipeline[ChainEvent])``; it
    must be the minions' event type or a subclass of it. Do not override ``run()``: it is the
    produce-and-fan-out loop described in :mod:`minions.workflows.pipeline`.
    """

    __minions_event_type__: ClassVar[Any] = None

    def __init_subclass__(cls, **keywords: Any) -> None:
        super().__init_subclass__(**keywords)
        if cls.run is not Pipeline.run:
            raise DefinitionError(
                f"{cls.__qualname__} overrides run(), which is the pipeline's produce loop; "
                "implement produce_event() instead and keep background work in a Resource"
            )
        declared = _declared_event_type(cls)
        if declared is not None:
            cls.__minions_event_type__ = declared

    async def produce_event(self) -> EventT:
        """Return the next event; called again as soon as the previous one was delivered."""
        raise NotImplementedError

    @classmethod
    def event_type(cls) -> Any:
        """The declared event type, or a clear error if the class has none."""
        if cls.__minions_event_type__ is None:
            raise DefinitionError(
                f"{cls.__qualname__} declares no event type: class {cls.__name__}"
                "(Pipeline[MyEvent])"
            )
        return cls.__minions_event_type__

    def subscribe(self, subscriber: Subscriber) -> None:
        """Deliver every later event to ``subscriber`` too."""
        fanout = _fanout(self)
        if subscriber not in fanout.subscribers:
            fanout.subscribers.append(subscriber)
        fanout.has_subscribers.set()

    def unsubscribe(self, subscriber: Subscriber) -> None:
        fanout = _fanout(self)
        if subscriber in fanout.subscribers:
            fanout.subscribers.remove(subscriber)
        if not fanout.subscribers:
            fanout.has_subscribers.clear()

    def statistics(self) -> PipelineStatistics:
        fanout = _fanout(self)
        return PipelineStatistics(
            produced=fanout.produced,
            delivered=fanout.delivered,
            errors=fanout.errors,
            subscribers=len(fanout.subscribers),
        )

    async def run(self) -> None:
        """The produce loop (see the module docstring)."""
        cls = type(self)
        if cls.produce_event is Pipeline.produce_event:
            raise DefinitionError(
                f"{cls.__qualname__} does not implement produce_event(); define "
                "'async def produce_event(self) -> MyEvent'"
            )
        expected = cls.event_type()
        check = instance_type(expected)
        name = component_name(cls)
        fanout = _fanout(self)
        failures = 0
        burst = 0
        while True:
            if not fanout.subscribers:
                await fanout.has_subscribers.wait()
            try:
                event = await self.produce_event()
            except Exception as exc:
                failures += 1
                fanout.errors += 1
                log.error(
                    "pipeline.produce_failed",
                    pipeline=name,
                    reason=f"{type(exc).__name__}: {exc}",
                    consecutive=failures,
                    exc_info=exc,
                )
                await asyncio.sleep(min(_RETRY_CAP, _RETRY_INITIAL * 2 ** min(failures - 1, 16)))
                continue
            failures = 0
            if check is not None and not isinstance(event, check):
                fanout.errors += 1
                log.error(
                    "pipeline.wrong_event_type",
                    pipeline=name,
                    reason=f"produce_event() returned a {type(event).__qualname__}, but "
                    f"{cls.__qualname__} declares events of type {expected.__qualname__}; "
                    "the event was dropped",
                )
            else:
                fanout.produced += 1
                if not fanout.subscribers:
                    # The last subscriber left while this event was being produced (a minion
                    # restarting): hold it for the next one rather than drop it.
                    await fanout.has_subscribers.wait()
                for subscriber in tuple(fanout.subscribers):
                    await subscriber.deliver(event)
                    fanout.delivered += 1
            burst += 1
            if burst >= _BURST:
                # A produce_event() that never awaits must not starve the event loop; yielding
                # after every event instead would start the workflows of events produced back
                # to back in different passes, each pass then committing its own checkpoints.
                burst = 0
                await asyncio.sleep(0)


def _declared_event_type(cls: type) -> Any:
    for klass in cls.__mro__:
        for base in klass.__dict__.get("__orig_bases__", ()):
            origin = typing.get_origin(base)
            if not (isinstance(origin, type) and issubclass(origin, Pipeline)):
                continue
            args = typing.get_args(base)
            if len(args) == 1 and not isinstance(args[0], TypeVar):
                return args[0]
    return None
