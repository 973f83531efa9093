"""Per-replica supervision: the replicas of one incarnation, each restarted under the policy.

A replicated component is one incarnation for the supervisor (``minions.core.supervisor``) and
N replicas here. :class:`ReplicaSet` starts them, watches each one, and applies the component's
:class:`~minions.core.policy.Policy` to each replica on its own, exactly as the supervisor does
for a component: a crash restarts the replica after a backoff delay, counted in *its own*
restart intensity window; past it, that replica is given up while the others keep serving. The
set reports to the supervisor (``wait()``) only once every replica is at rest — all given up
(the component is given up), all finished, or stopped by a ``temporary`` policy — so the
component counts as running while at least one replica runs or is coming back.

A replica's state is a :class:`~minions.ComponentState`::

    STARTING ──ready──▶ RUNNING ──crash──▶ RESTARTING ──backoff──▶ STARTING ...
                          │   └──intensity exceeded──▶ FAILED
                          ├──run() returned / temporary crash──▶ COMPLETED / STOPPED
                          └──scale down──▶ STOPPING (draining) ──▶ removed

Replicas are numbered from 0; a replacement keeps the index of the replica it replaces, and
scaling down removes the highest indexes, so indexes stay ``0..count-1``. Whatever routes work
to the replicas (a :class:`~isolation.Router`, the step pool of a workflow minion) learns of
each replica through ``on_ready(index, replica)`` and ``on_gone(index)``.

Starting one replica is the *launcher*'s job (a forked child, or a Ray actor): it returns a
:class:`Replica` handle or raises :class:`~minions.StartupError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog

from isolation import ChildExit, ChildSpec, Peer

from ..core.clock import Clock, MonotonicClock
from ..core.component import ComponentState
from ..core.errors import StartupError
from ..core.host import Outcome
from ..core.policy import Policy, RestartHistory
from ..core.status import LifecycleEvent, LifecycleKind, LifecycleListener, ReplicaStatus

__all__ = ["Launcher", "Replica", "ReplicaLauncher", "ReplicaSet", "Routing"]

log = structlog.get_logger("minions")

_S = ComponentState
_AT_REST = frozenset({_S.COMPLETED, _S.STOPPED, _S.FAILED})


class Replica(Protocol):
    """One incarnation of one replica: a child process or a Ray actor, READY."""

    @property
    def pid(self) -> int | None: ...

    @property
    def node(self) -> str | None:
        """The Ray node it runs on; None for a child of this host."""
        ...

    @property
    def channel(self) -> Peer: ...

    def proxy(self, cls: type) -> Any:
        """A proxy to the component the replica built, with the methods of ``cls``."""
        ...

    def start_run(self) -> None:
        """Let the replica's ``run()`` begin: it is counted running (it waits for this)."""
        ...

    async def wait(self) -> ChildExit: ...

    async def stop(self, timeout: float) -> ChildExit:  # noqa: ASYNC109 - a grace period
        ...

    def kill(self) -> None: ...


#: Starts replica ``index`` of ``count`` and returns it READY, or raises StartupError.
Launcher = Callable[[int, int], Awaitable[Replica]]


class ReplicaLauncher(Protocol):
    """Where replicas run: forks of this host's zygote, or actors of a Ray cluster."""

    async def launch(
        self, name: str, spec: ChildSpec, services: Mapping[str, object], index: int
    ) -> Replica:
        """Start replica ``index`` of component ``name`` building ``spec``, serving it
        ``services``; READY, or a :class:`~minions.StartupError`."""
        ...


@dataclass(eq=False)
class _Slot:
    """The record of one replica across its incarnations."""

    index: int
    history: RestartHistory
    state: ComponentState = _S.STARTING
    replica: Replica | None = None
    restarts: int = 0
    crashes: int = 0
    last_error: str | None = None
    started_at: datetime | None = None
    task: asyncio.Task[None] | None = None  # watching, or waiting out the backoff
    ended: str = "returned"  # how it came to rest: returned, crashed or given_up
    cause: str = ""
    error: BaseException | None = None
    incarnation: int = 0

    def snapshot(self, calls_in_flight: int) -> ReplicaStatus:
        replica = self.replica
        return ReplicaStatus(
            index=self.index,
            state=self.state,
            pid=replica.pid if replica is not None else None,
            restarts=self.restarts,
            crashes=self.crashes,
            calls_in_flight=calls_in_flight,
            last_error=self.last_error,
            started_at=self.started_at,
            node=replica.node if replica is not None else None,
        )


@dataclass(frozen=True)
class Routing:
    """How a :class:`ReplicaSet` tells what routes work to its replicas about them."""

    #: Replica ``index`` is READY (a new one, or the replacement of one that died).
    on_ready: Callable[[int, Replica], None]
    #: Replica ``index`` has ended; its replacement may come.
    on_gone: Callable[[int], None]
    #: Replica ``index`` was given up: it will not come back.
    on_failed: Callable[[int], None]
    #: New work goes to replicas ``0..count-1`` only.
    resize: Callable[[int], None]
    #: Calls (or workflow steps) in flight on replica ``index``.
    in_flight: Callable[[int], int]
    #: Wait until replica ``index`` has nothing in flight; False after the timeout.
    drained: Callable[[int, float], Awaitable[bool]]


class ReplicaSet:
    """The replicas of one incarnation of ``name`` (see the module docstring).

    ``kind`` is the component's ("resource": a ``run()`` that ends is a crash); ``routing``
    keeps what routes work to the replicas informed; ``announce`` receives each step of each
    replica's life as a :class:`~minions.core.status.LifecycleEvent` (with its ``replica``).
    """

    def __init__(
        self,
        name: str,
        kind: str,
        policy: Policy,
        launch: Launcher,
        routing: Routing,
        *,
        stop_timeout: float,
        clock: Clock | None = None,
        announce: LifecycleListener | None = None,
    ) -> None:
        self._name = name
        self._announce = announce
        self._kind = kind
        self._policy = policy
        self._launch = launch
        self._hooks = routing
        self._stop_timeout = stop_timeout
        self._clock = clock or MonotonicClock()
        self._rng = random.Random()
        self._slots: dict[int, _Slot] = {}
        self._count = 0
        self._draining: dict[int, _Slot] = {}
        self._closing = False
        self._begun = False  # the supervisor counts the component running: run() may begin
        self._scaling = asyncio.Lock()
        self._rest: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()

    def __repr__(self) -> str:
        return f"<ReplicaSet {self._name} {self.running}/{self._count} running>"

    # -- reading ---------------------------------------------------------------------------------

    @property
    def count(self) -> int:
        return self._count

    @property
    def running(self) -> int:
        return sum(1 for slot in self._slots.values() if slot.state is _S.RUNNING)

    def statuses(self) -> tuple[ReplicaStatus, ...]:
        slots = sorted([*self._slots.values(), *self._draining.values()], key=lambda s: s.index)
        return tuple(slot.snapshot(self._hooks.in_flight(slot.index)) for slot in slots)

    def replica(self, index: int) -> Replica | None:
        slot = self._slots.get(index)
        return slot.replica if slot is not None and slot.state is _S.RUNNING else None

    # -- the incarnation's life ------------------------------------------------------------------

    async def start(self, count: int) -> None:
        """Start ``count`` replicas and wait until all are READY; if one fails, stop the others
        and raise its :class:`StartupError`."""
        self._count = count
        self._hooks.resize(count)
        for index in range(count):
            self._slots[index] = _Slot(index, RestartHistory(self._policy.intensity))
        results = await asyncio.gather(
            *(
                self._in_task(slot, self._bring_up(slot, first=True))
                for slot in self._slots.values()
            ),
            return_exceptions=True,
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            await self.stop()
            raise failures[0]

    async def wait(self) -> Outcome:
        """Until every replica is at rest; how the incarnation ended.

        The supervisor calls it once it counts the component running: from then on each
        replica's ``run()`` may begin (those started later, at once).
        """
        if not self._begun:
            self._begun = True
            for slot in self._slots.values():
                if slot.replica is not None and slot.state is _S.RUNNING:
                    slot.replica.start_run()
        return await asyncio.shield(self._rest)

    async def stop(self) -> None:
        """Stop every replica (draining ones included), each within the stop timeout."""
        self._closing = True
        slots = [*self._slots.values(), *self._draining.values()]
        current = asyncio.current_task()
        tasks = [s.task for s in slots if s.task is not None and s.task is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(self._stop_slot(slot) for slot in slots))
        if not self._rest.done():
            self._rest.set_result(Outcome(False, "stopped"))

    def kill(self) -> None:
        self._closing = True
        for slot in [*self._slots.values(), *self._draining.values()]:
            if slot.task is not None:
                slot.task.cancel()
            if slot.replica is not None:
                slot.replica.kill()

    async def scale(self, count: int) -> None:
        """Run ``count`` replicas: start the missing ones, drain and stop the extra ones."""
        async with self._scaling:
            if self._closing or count == self._count:
                return
            old = self._count
            self._count = count
            self._hooks.resize(count)
            if count > old:
                log.info("component.scaling", component=self._name, replicas=count, previous=old)
                new = []
                for index in range(old, count):
                    slot = self._slots[index] = _Slot(index, RestartHistory(self._policy.intensity))
                    new.append(self._in_task(slot, self._bring_up(slot, first=False)))
                await asyncio.gather(*new, return_exceptions=True)
                return
            log.info("component.scaling", component=self._name, replicas=count, previous=old)
            leaving = [self._slots.pop(i) for i in range(count, old)]
            for slot in leaving:
                self._draining[slot.index] = slot
                if slot.task is not None and slot.state is _S.RESTARTING:
                    slot.task.cancel()  # no replacement for a replica being removed
                slot.state = _S.STOPPING
                log.info("replica.draining", component=self._name, replica=slot.index)
                self._tell(slot, "stopping", reason=f"scaled down to {count} replicas")
            await asyncio.gather(*(self._drain(slot) for slot in leaving))

    # -- one replica -----------------------------------------------------------------------------

    def _tell(
        self,
        slot: _Slot,
        kind: LifecycleKind,
        *,
        reason: str | None = None,
        cause: str | None = None,
        pid: int | None = None,
        delay: float | None = None,
    ) -> None:
        if self._announce is not None:
            at = datetime.now(UTC)
            self._announce(
                LifecycleEvent(self._name, kind, at, reason, cause, pid, delay, replica=slot.index)
            )

    def _in_task(self, slot: _Slot, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``coro`` as the slot's current activity (``stop()`` cancels it)."""
        task = asyncio.get_running_loop().create_task(
            coro, name=f"minions:replica:{self._name}:{slot.index}"
        )
        slot.task = task
        return task

    async def _bring_up(self, slot: _Slot, *, first: bool, restart: bool = False) -> None:
        """Start ``slot``'s replica; a failure is a crash (raised instead on the first start)."""
        slot.state = _S.STARTING
        slot.incarnation += 1
        try:
            replica = await self._launch(slot.index, self._count)
        except Exception as exc:
            error = exc
            if not isinstance(exc, StartupError):  # a launcher's own failure: said as such
                error = StartupError(
                    self._name, f"{self._name}: replica {slot.index} failed to start: {exc}"
                )
                error.__cause__ = exc
            if first:
                slot.state = _S.STOPPED
                raise error from error.__cause__
            self._crashed(slot, "startup", str(error), error)
            return
        if self._closing or slot.state is not _S.STARTING:
            await replica.stop(self._stop_timeout)  # stopped or drained while it started
            return
        slot.replica = replica
        slot.state = _S.RUNNING
        slot.started_at = datetime.now(UTC)
        if restart:
            slot.restarts += 1
        log.info("replica.started", component=self._name, replica=slot.index, pid=replica.pid)
        self._tell(slot, "started", pid=replica.pid)
        slot.task = asyncio.get_running_loop().create_task(
            self._watch(slot, replica), name=f"minions:replica:{self._name}:{slot.index}"
        )
        self._hooks.on_ready(slot.index, replica)

    async def _watch(self, slot: _Slot, replica: Replica) -> None:
        if self._begun:
            replica.start_run()  # its component counts as running: its own run() may begin
        end = await replica.wait()
        if self._closing or slot.replica is not replica or slot.state is not _S.RUNNING:
            return
        slot.task = None
        slot.replica = None
        slot.started_at = None
        self._hooks.on_gone(slot.index)
        crashed = end.reason != "returned"
        if end.reason == "returned" and self._kind == "resource":
            crashed = True
            cause = "run() returned, but a resource's run() must last as long as the resource"
        elif end.reason == "returned":
            cause = "run() returned"
        else:
            cause = f"child {end.cause}" if end.reason != "raised" else end.cause
        if not crashed:
            log.info("replica.completed", component=self._name, replica=slot.index)
            self._tell(slot, "completed", reason=cause)
            if self._policy.restarts_after(crashed=False):
                self._schedule_restart(slot, cause)
            else:
                self._come_to_rest(slot, _S.COMPLETED, "returned", cause)
            return
        self._crashed(slot, end.reason, cause, end.error)

    def _crashed(self, slot: _Slot, reason: str, cause: str, error: BaseException | None) -> None:
        slot.crashes += 1
        slot.last_error = cause
        log.error(
            "replica.crashed", component=self._name, replica=slot.index, reason=cause,
            exc_info=error,
        )  # fmt: skip
        self._tell(slot, "crashed", reason=cause, cause=reason)
        if not self._policy.restarts_after(crashed=True):
            self._come_to_rest(slot, _S.STOPPED, "crashed", cause, error)
            return
        if not slot.history.allows_restart(self._clock.now()):
            intensity = self._policy.intensity
            reason_text = (
                f"more than {intensity.max_restarts} restarts within {intensity.within} s; "
                f"last: {cause}"
            )
            slot.last_error = reason_text
            log.error(
                "replica.given_up", component=self._name, replica=slot.index, reason=reason_text
            )
            self._tell(slot, "given_up", reason=reason_text)
            self._come_to_rest(slot, _S.FAILED, "given_up", reason_text, error)
            return
        self._schedule_restart(slot, cause)

    def _schedule_restart(self, slot: _Slot, cause: str) -> None:
        now = self._clock.now()
        attempt = slot.history.recent(now)
        slot.history.record(now)
        delay = self._policy.backoff.delay(attempt, self._rng)
        slot.state = _S.RESTARTING
        log.warning(
            "replica.restarting", component=self._name, replica=slot.index, reason=cause,
            delay=round(delay, 3), attempt=attempt + 1,
        )  # fmt: skip
        self._tell(slot, "restarting", reason=cause, delay=delay)
        slot.task = asyncio.get_running_loop().create_task(
            self._restart_after(slot, delay), name=f"minions:replica-backoff:{self._name}"
        )

    async def _restart_after(self, slot: _Slot, delay: float) -> None:
        await self._clock.sleep(delay)
        if self._closing or slot.state is not _S.RESTARTING:
            return
        await self._bring_up(slot, first=False, restart=True)

    def _come_to_rest(
        self,
        slot: _Slot,
        state: ComponentState,
        ended: str,
        cause: str,
        error: BaseException | None = None,
    ) -> None:
        slot.state, slot.ended, slot.cause, slot.error = state, ended, cause, error
        if state is _S.FAILED:
            self._hooks.on_failed(slot.index)
        active = [s for s in self._slots.values() if s.state not in _AT_REST]
        if active or self._rest.done():
            return
        slots = list(self._slots.values())
        if all(s.ended == "given_up" for s in slots):
            last = slots[-1].cause if slots else cause
            self._rest.set_result(
                Outcome(
                    True,
                    f"every replica ({len(slots)}) was given up; last: {last}",
                    error,
                    given_up=True,
                )
            )
        elif any(s.ended != "returned" for s in slots):
            crashed = next(s for s in slots if s.ended != "returned")
            self._rest.set_result(Outcome(True, crashed.cause, crashed.error))
        else:
            self._rest.set_result(Outcome(False, cause))

    # -- stopping --------------------------------------------------------------------------------

    async def _drain(self, slot: _Slot) -> None:
        """A replica removed by a scale down: no new work, its work in flight ends, it stops."""
        try:
            if slot.replica is not None:
                finished = await self._hooks.drained(slot.index, self._stop_timeout)
                if not finished:
                    log.warning(
                        "replica.drain_timeout", component=self._name, replica=slot.index,
                        reason=f"work still in flight after {self._stop_timeout:g} s; stopping it",
                    )  # fmt: skip
            await self._stop_slot(slot)
        finally:
            self._draining.pop(slot.index, None)
            self._hooks.on_gone(slot.index)
            log.info("replica.stopped", component=self._name, replica=slot.index)
            self._tell(slot, "stopped", reason="scaled down")

    async def _stop_slot(self, slot: _Slot) -> None:
        replica, slot.replica = slot.replica, None
        if slot.state not in _AT_REST:
            slot.state = _S.STOPPED
        slot.started_at = None
        if replica is not None:
            with contextlib.suppress(Exception):
                await replica.stop(self._stop_timeout)
