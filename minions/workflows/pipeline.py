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
  starts before its minions loses none of them.
* An event belongs to the subscribers there when ``produce_event`` returns it, and a stopping
  minion leaves with :meth:`Pipeline.detach`, which keeps that promise: if an event is due to
  it, it waits until it is delivered (and its workflow started, or saved for later); if it was
  the last subscriber while an event was being produced, the production is withdrawn
  (``produce_event`` is cancelled: no event exists yet, so none is lost). So a graceful stop,
  which stops the minions before their pipeline, never drops the event in hand. An event that
  appears with nobody to take it anyway (a ``produce_event`` that ignored its cancellation) is
  delivered to the subscribers that left while it was produced, or held for the next one.
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
    """The subscribers of one pipeline instance, its counters, and the event in hand."""

    def __init__(self) -> None:
        self.subscribers: list[Subscriber] = []
        self.has_subscribers = asyncio.Event()
        self.produced = 0
        self.delivered = 0
        self.errors = 0
        #: The produce loop's task while it runs.
        self.task: asyncio.Task[None] | None = None
        #: The loop is inside produce_event().
        self.producing = False
        #: detach() cancelled the production: the last subscriber left while it was under way.
        self.withdrawn = False
        #: The subscribers an event in hand is still due to.
        self.pending: list[Subscriber] = []
        #: Subscribers that left, last, while an event was being produced, and wait for it.
        self.departed: list[Subscriber] = []
        #: detach() calls waiting for the loop to be done with their subscriber.
        self.waiters: dict[Subscriber, asyncio.Future[None]] = {}

    def settle(self) -> None:
        """Release the detach() calls whose subscriber nothing is due to any more."""
        if not self.waiters:
            return
        owed = set(map(id, self.pending))
        if self.producing:
            owed |= set(map(id, self.departed))
        for subscriber, waiter in list(self.waiters.items()):
            if id(subscriber) not in owed:
                del self.waiters[subscriber]
                if not waiter.done():
                    waiter.set_result(None)

    def production_ended(self) -> bool:
        """Called when produce_event() ended; take back detach()'s cancellation, if it made one.

        True when that cancellation was the only one pending: the loop goes on.
        """
        self.producing = False
        if not self.withdrawn:
            return False
        self.withdrawn = False
        task = asyncio.current_task()
        return task is not None and task.uncancel() == 0


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

    async def detach(self, subscriber: Subscriber, *, within: float) -> bool:
        """Unsubscribe ``subscriber``, and return once no event is due to it any more.

        An event in hand for it is delivered first (its workflow starts, or is saved for the
        next start); if it was the last subscriber while an event was being produced, the
        production is withdrawn. Returns False if that took longer than ``within`` seconds;
        the event then still goes to it when its turn comes.
        """
        fanout = _fanout(self)
        was_subscribed = subscriber in fanout.subscribers
        self.unsubscribe(subscriber)
        if subscriber in fanout.pending:
            pass
        elif was_subscribed and fanout.producing and not fanout.subscribers:
            if subscriber not in fanout.departed:
                fanout.departed.append(subscriber)
            if not fanout.withdrawn and fanout.task is not None:
                fanout.withdrawn = True
                fanout.task.cancel()
        else:
            return True
        waiter = fanout.waiters.get(subscriber)
        if waiter is None:
            waiter = fanout.waiters[subscriber] = asyncio.get_running_loop().create_future()
        done, _ = await asyncio.wait({waiter}, timeout=within)
        return bool(done)

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
        fanout.task = asyncio.current_task()
        try:
            await self._produce_loop(fanout, name, expected, check)
        finally:
            fanout.task = None
            fanout.producing = fanout.withdrawn = False
            fanout.pending.clear()
            fanout.departed.clear()
            fanout.settle()  # nobody waits for a loop that has ended

    async def _produce_loop(
        self, fanout: _Fanout, name: str, expected: Any, check: type | None
    ) -> None:
        cls = type(self)
        failures = 0
        burst = 0
        while True:
            if not fanout.subscribers:
                await fanout.has_subscribers.wait()
            fanout.producing = True
            try:
                event = await self.produce_event()
            except asyncio.CancelledError:
                if not fanout.production_ended():
                    raise
                fanout.departed.clear()  # withdrawn: nobody was left to take the event
                fanout.settle()
                continue
            except Exception as exc:
                fanout.production_ended()
                fanout.departed.clear()
                fanout.settle()
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
            fanout.production_ended()  # a produce_event() that ignored a withdrawal
            # The event is due to the subscribers there now; if all left while it was being
            # produced, to those of them still waiting in detach().
            targets = tuple(fanout.subscribers) or tuple(fanout.departed)
            fanout.departed.clear()
            failures = 0
            if check is not None and not isinstance(event, check):
                fanout.settle()
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
                if not targets:
                    # Its subscribers left without detach(): hold it for the next one.
                    await fanout.has_subscribers.wait()
                    targets = tuple(fanout.subscribers)
                await self._deliver(fanout, event, targets)
            burst += 1
            if burst >= _BURST:
                # A produce_event() that never awaits must not starve the event loop; yielding
                # after every event instead would start the workflows of events produced back
                # to back in different passes, each pass then committing its own checkpoints.
                burst = 0
                await asyncio.sleep(0)

    @staticmethod
    async def _deliver(fanout: _Fanout, event: Any, targets: tuple[Subscriber, ...]) -> None:
        fanout.pending[:] = targets
        fanout.settle()
        for subscriber in targets:
            try:
                await subscriber.deliver(event)
            finally:
                fanout.pending.remove(subscriber)
                fanout.settle()
            fanout.delivered += 1


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
