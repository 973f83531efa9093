"""The supervisor: starts components in dependency order and applies their restart policies.

Every change of structure — start, stop, restart, reacting to a crash — happens under one lock,
one operation at a time, so concurrent crashes and requests never interleave half-way. Each
running component has a *watcher* task waiting for its ``run()`` to end; when it does, the
watcher takes the lock and decides, per :class:`~minions.core.policy.Policy`, between finishing,
restarting after a backoff delay, and giving the component up.

Restarts are dependency-aware (like OTP's ``rest_for_one``, but following the real dependency
graph): before a resource restarts, every component that depends on it, directly or not, is
stopped in reverse start order and marked as blocked by it; once the resource is running again,
the blocked components start in dependency order. A given-up resource stops its dependents and
leaves the rest of the system running.

Each incarnation of a component has a generation number; a watcher whose generation is stale
(the component was stopped or restarted meanwhile) does nothing.

Each step of a component's life is logged (``component.<kind>``) and announced as a
:class:`~minions.core.status.LifecycleEvent` to ``on_event`` at the moment it is taken.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from .clock import Clock
from .component import ComponentState, component_name
from .errors import RuntimeStateError, StartupError
from .graph import Graph, Node
from .host import Host, Outcome, ReplicatedHost
from .policy import Policy, RestartHistory
from .status import (
    ComponentStatus,
    LifecycleEvent,
    LifecycleKind,
    LifecycleListener,
    ReplicaStatus,
)

log = structlog.get_logger("minions")

HostFactory = Callable[[Node, Policy], Host]
ConfigFactory = Callable[[Node], object | None]

_S = ComponentState


@dataclass(eq=False)
class Cell:
    """The supervisor's record of one component across its incarnations."""

    node: Node
    policy: Policy
    isolated: bool
    history: RestartHistory
    state: ComponentState = _S.CREATED
    host: Host | None = None
    generation: int = 0
    restarts: int = 0
    crashes: int = 0
    crash_causes: dict[str, int] = field(default_factory=dict)
    last_error: str | None = None
    #: Its last incarnation crashed and its policy did not restart it (``temporary``).
    ended_by_crash: bool = False
    started_at: datetime | None = None
    timer: asyncio.Task[None] | None = None
    watcher: asyncio.Task[None] | None = None
    blocked_by: set[type[Any]] = field(default_factory=set)

    @property
    def name(self) -> str:
        return self.node.name

    def snapshot(self) -> ComponentStatus:
        state, host = self.state, self.host
        replicas: tuple[ReplicaStatus, ...] = ()
        if isinstance(host, ReplicatedHost):
            replicas = host.replicas
            if state is _S.RUNNING and not host.running_replicas:
                state = _S.RESTARTING  # it runs while at least one of its replicas does
        return ComponentStatus(
            name=self.name,
            kind=self.node.kind,
            state=state,
            restarts=self.restarts,
            crashes=self.crashes,
            last_error=self.last_error,
            started_at=self.started_at,
            isolated=self.isolated,
            pid=self.host.pid if self.host is not None and self.state is _S.RUNNING else None,
            crash_causes=dict(self.crash_causes),
            ended_by_crash=self.ended_by_crash and self.state is _S.STOPPED,
            replicas=replicas,
            dependencies=tuple(dict.fromkeys(map(component_name, self.node.dependency_classes))),
        )

    def count_crash(self, cause: str) -> None:
        self.crashes += 1
        self.crash_causes[cause] = self.crash_causes.get(cause, 0) + 1


def crash_cause(outcome: Outcome) -> str:
    """A short name for why an incarnation ended, from a small fixed set (a metrics label)."""
    if not outcome.crashed:
        return "returned"  # only a resource's run() ending is counted as a crash
    reason = getattr(outcome, "reason", None)  # an isolated child's end: died, hung, memory...
    if isinstance(reason, str):
        return reason
    return "raised" if outcome.error is not None else "cancelled"


class Supervisor:
    """Owns the cells of one runtime; see the module docstring."""

    def __init__(
        self,
        *,
        clock: Clock,
        rng: random.Random,
        host_factory: HostFactory,
        config_factory: ConfigFactory,
        on_change: Callable[[], None],
        on_event: LifecycleListener | None = None,
    ) -> None:
        self._clock = clock
        self._rng = rng
        self._host_factory = host_factory
        self._config_factory = config_factory
        self._on_change = on_change
        self._on_event = on_event
        self._lock = asyncio.Lock()
        self._graph = Graph(())
        self._cells: dict[type[Any], Cell] = {}
        self._closed = False

    # -- reading -------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` or :meth:`kill` was called: nothing starts or restarts again."""
        return self._closed

    @property
    def cells(self) -> list[Cell]:
        """Every cell, in start order."""
        return [self._cells[node.cls] for node in self._graph.nodes]

    def __repr__(self) -> str:
        counts: dict[str, int] = {}
        for cell in self._cells.values():
            counts[cell.state.value] = counts.get(cell.state.value, 0) + 1
        summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "empty"
        return f"<Supervisor {summary}>"

    # -- operations ----------------------------------------------------------------------------

    async def start(
        self, graph: Graph, cells: dict[type[Any], Cell], wanted: set[type[Any]]
    ) -> None:
        """Start the components of ``graph`` in ``wanted`` that are not running, in order.

        ``wanted`` holds the requested components and everything they depend on; the rest of
        the graph (running, finished, stopped on purpose) is left as it is. ``cells`` holds new
        cells for components this supervisor does not have yet. If one fails to start, the
        call is undone: what it started is stopped again, in reverse order, every component it
        touched is put back as it was, and the error is raised.
        """
        async with self._lock:
            self._ensure_open()
            previous = self._graph
            self._graph = graph
            added = [
                cls for cls, cell in cells.items() if self._cells.setdefault(cls, cell) is cell
            ]
            started: list[Cell] = []
            touched: list[tuple[Cell, ComponentState, set[type[Any]]]] = []
            try:
                for node in graph.nodes:
                    cell = self._cells[node.cls]
                    if node.cls not in wanted or cell.state.is_active:
                        continue
                    touched.append((cell, cell.state, set(cell.blocked_by)))
                    blocked = {
                        d for d in node.dependency_classes if self._cells[d].state is not _S.RUNNING
                    }
                    if blocked:
                        cell.blocked_by |= blocked
                        cell.state = _S.RESTARTING
                        continue
                    await self._start_cell(cell)
                    started.append(cell)
            except StartupError:
                for cell in reversed(started):
                    await self._stop_cell(cell, "another component failed to start")
                for cell, state, blocked_by in touched:
                    cell.state, cell.blocked_by = state, blocked_by
                for cls in added:
                    del self._cells[cls]
                self._graph = previous
                raise
            finally:
                self._on_change()

    async def restart(self, cls: type[Any]) -> None:
        """Stop ``cls`` and its dependents, then start it and them again (a manual restart)."""
        async with self._lock:
            self._ensure_open()
            cell = self._cells[cls]
            for dep in cell.node.dependency_classes:
                dep_cell = self._cells[dep]
                if dep_cell.state is not _S.RUNNING:
                    raise RuntimeStateError(
                        f"cannot restart {cell.name}: its dependency {dep_cell.name} is "
                        f"{dep_cell.state.value}; restart {dep_cell.name} instead"
                    )
            self._cancel_timer(cell)
            await self._stop_dependents(cell, _S.RESTARTING, f"{cell.name} is restarting")
            if cell.state in (_S.RUNNING, _S.STARTING):
                await self._stop_cell(cell, "restart requested")
            cell.history.clear()
            cell.blocked_by.clear()
            log.info("component.restarting", component=cell.name, reason="restart requested")
            self._announce(cell, "restarting", reason="restart requested")
            await self._bring_up(cell)
            self._on_change()
            if cell.state is not _S.RUNNING:
                raise StartupError(cell.name, f"{cell.name} failed to restart: {cell.last_error}")

    async def stop(self, cls: type[Any]) -> None:
        """Stop ``cls`` and every component that depends on it; none restart by themselves."""
        async with self._lock:
            cell = self._cells[cls]
            self._cancel_timer(cell)
            await self._stop_dependents(cell, _S.STOPPED, f"its dependency {cell.name} was stopped")
            if cell.state in (_S.RUNNING, _S.STARTING):
                await self._stop_cell(cell, "stop requested")
            cell.state = _S.STOPPED
            cell.blocked_by.clear()
            self._on_change()

    async def close(self) -> None:
        """Stop everything in reverse start order; no restart happens after this."""
        async with self._lock:
            self._closed = True
            for cell in reversed(self.cells):
                self._cancel_timer(cell)
                if cell.state in (_S.RUNNING, _S.STARTING):
                    await self._stop_cell(cell, "runtime stopping")
                elif cell.state is _S.RESTARTING:
                    cell.state = _S.STOPPED
                    self._announce(cell, "stopped", reason="runtime stopping")
            self._on_change()

    def kill(self) -> None:
        """Stop at once without waiting for anything: the second Ctrl-C."""
        self._closed = True
        for cell in reversed(self.cells):
            self._cancel_timer(cell)
            if cell.watcher is not None:
                cell.watcher.cancel()
            if cell.host is not None and cell.state.is_active:
                cell.host.kill()
            if cell.state.is_active:
                cell.state = _S.STOPPED
                self._announce(cell, "stopped", reason="killed: the stop was forced")

    # -- internals (the lock is held) ----------------------------------------------------------

    def _announce(
        self,
        cell: Cell,
        kind: LifecycleKind,
        *,
        reason: str | None = None,
        cause: str | None = None,
        pid: int | None = None,
        delay: float | None = None,
    ) -> None:
        if self._on_event is not None:
            at = datetime.now(UTC)
            self._on_event(LifecycleEvent(cell.name, kind, at, reason, cause, pid, delay))

    def _ensure_open(self) -> None:
        if self._closed:
            raise RuntimeStateError("the runtime is stopping or stopped; create a new one")

    async def _start_cell(self, cell: Cell) -> None:
        cell.state = _S.STARTING
        log.info("component.starting", component=cell.name)
        self._announce(cell, "starting")
        host = self._host_factory(cell.node, cell.policy)
        cell.host = host
        provided = {dep: self._instance_of(dep) for dep in cell.node.dependency_classes}
        try:
            await host.start(provided, self._config_factory(cell.node))
        except StartupError as exc:
            cell.count_crash("startup")
            cell.last_error = str(exc)
            log.error(
                "component.crashed", component=cell.name, reason=str(exc), exc_info=exc.__cause__
            )
            self._announce(cell, "crashed", reason=str(exc), cause="startup", pid=host.pid)
            cell.state = _S.STOPPING
            await host.stop()
            cell.state = _S.STOPPED
            raise
        cell.generation += 1
        cell.ended_by_crash = False
        cell.state = _S.RUNNING
        cell.started_at = datetime.now(UTC)
        if host.pid is None:
            log.info("component.started", component=cell.name)
        else:
            log.info("component.started", component=cell.name, pid=host.pid)
        self._announce(cell, "started", pid=host.pid)
        cell.watcher = asyncio.get_running_loop().create_task(
            self._watch(cell, cell.generation, host), name=f"minions:watch:{cell.name}"
        )

    def _instance_of(self, cls: type[Any]) -> object:
        host = self._cells[cls].host
        assert host is not None, f"{cls.__name__} has no host"
        return host.instance

    async def _watch(self, cell: Cell, generation: int, host: Host) -> None:
        outcome = await host.wait()
        async with self._lock:
            if cell.generation != generation or cell.state is not _S.RUNNING or self._closed:
                return
            cell.watcher = None  # this task; stopping the cell must not cancel it
            await self._handle_exit(cell, host, outcome)
            self._on_change()

    async def _handle_exit(self, cell: Cell, host: Host, outcome: Outcome) -> None:
        crashed, cause = outcome.crashed, outcome.cause
        kind = crash_cause(outcome)
        if cell.node.kind == "resource" and not crashed:
            crashed = True
            cause = f"{cause}, but a resource's run() must last as long as the resource"
        cell.state = _S.STOPPING
        cell.generation += 1
        if crashed:
            cell.count_crash(kind)
            cell.last_error = cause
            log.error(
                "component.crashed", component=cell.name, reason=cause, exc_info=outcome.error
            )
            self._announce(cell, "crashed", reason=cause, cause=kind, pid=host.pid)
        await self._after_exit(
            cell, crashed=crashed, cause=cause, host=host, given_up=outcome.given_up
        )

    async def _after_exit(
        self,
        cell: Cell,
        *,
        crashed: bool,
        cause: str,
        host: Host | None = None,
        given_up: bool = False,
    ) -> None:
        """Apply the policy to an incarnation that ended. Its dependents stop first, then its
        own ``host`` (when given: its ``shutdown()`` has not run yet), so that a dependent's
        ``shutdown()`` can still use it. ``given_up``: the host has given it up already (every
        replica was)."""
        if self._closed:
            await self._release(cell, host)
            cell.state = _S.STOPPED
            self._announce(cell, "stopped", reason="runtime stopping")
            return
        if not cell.policy.restarts_after(crashed=crashed):
            await self._stop_dependents(cell, _S.STOPPED, f"its dependency {cell.name} stopped")
            await self._release(cell, host)
            cell.state = _S.STOPPED if crashed else _S.COMPLETED
            cell.ended_by_crash = crashed
            kind: LifecycleKind = "stopped" if crashed else "completed"
            reason = f"{cause}; restart={cell.policy.restart}"
            log.info(f"component.{kind}", component=cell.name, reason=reason)
            self._announce(cell, kind, reason=reason)
            return
        now = self._clock.now()
        if given_up or not cell.history.allows_restart(now):
            intensity = cell.policy.intensity
            reason = (
                cause
                if given_up
                else f"more than {intensity.max_restarts} restarts within {intensity.within} s; "
                f"last: {cause}"
            )
            await self._stop_dependents(
                cell, _S.STOPPED, f"its dependency {cell.name} was given up"
            )
            await self._release(cell, host)
            cell.state = _S.FAILED
            cell.last_error = reason
            log.error("component.given_up", component=cell.name, reason=reason)
            self._announce(cell, "given_up", reason=reason)
            return
        attempt = cell.history.recent(now)
        cell.history.record(now)
        delay = cell.policy.backoff.delay(attempt, self._rng)
        await self._stop_dependents(
            cell, _S.RESTARTING, f"its dependency {cell.name} is restarting"
        )
        await self._release(cell, host)
        cell.state = _S.RESTARTING
        log.warning(
            "component.restarting",
            component=cell.name,
            reason=cause,
            delay=round(delay, 3),
            attempt=attempt + 1,
        )
        self._announce(cell, "restarting", reason=cause, delay=delay)
        cell.timer = asyncio.get_running_loop().create_task(
            self._restart_after(cell, delay), name=f"minions:backoff:{cell.name}"
        )

    async def _restart_after(self, cell: Cell, delay: float) -> None:
        await self._clock.sleep(delay)
        async with self._lock:
            if cell.timer is not asyncio.current_task() or self._closed:
                return
            cell.timer = None
            if cell.state is _S.RESTARTING and not cell.blocked_by:
                await self._bring_up(cell)
                self._on_change()

    async def _bring_up(self, cell: Cell) -> None:
        """Start ``cell``, then the components that were waiting for it; a failure is a crash."""
        try:
            await self._start_cell(cell)
        except StartupError as exc:
            await self._after_exit(cell, crashed=True, cause=str(exc))
            return
        cell.restarts += 1
        for node in self._graph.dependents(cell.node.cls):
            waiting = self._cells[node.cls]
            if cell.node.cls not in waiting.blocked_by:
                continue
            waiting.blocked_by.discard(cell.node.cls)
            ready = all(self._cells[d].state is _S.RUNNING for d in node.dependency_classes)
            if waiting.state in (_S.RESTARTING, _S.STOPPED) and not waiting.blocked_by and ready:
                log.info(
                    "component.restarting", component=waiting.name, reason=f"{cell.name} is back"
                )
                self._announce(waiting, "restarting", reason=f"{cell.name} is back")
                await self._bring_up(waiting)

    async def _stop_dependents(self, cell: Cell, state: ComponentState, reason: str) -> None:
        for node in reversed(self._graph.dependents(cell.node.cls)):
            dependent = self._cells[node.cls]
            if dependent.state in (_S.COMPLETED, _S.FAILED, _S.CREATED):
                continue
            if dependent.state is _S.STOPPED and not dependent.blocked_by:
                continue  # stopped on purpose; it stays stopped
            self._cancel_timer(dependent)
            if dependent.state in (_S.RUNNING, _S.STARTING):
                await self._stop_cell(dependent, reason)
            dependent.state = state
            dependent.blocked_by.add(cell.node.cls)

    async def _stop_cell(self, cell: Cell, reason: str) -> None:
        cell.state = _S.STOPPING
        cell.generation += 1
        log.info("component.stopping", component=cell.name, reason=reason)
        self._announce(cell, "stopping", reason=reason)
        watcher, cell.watcher = cell.watcher, None
        if watcher is not None:
            watcher.cancel()
        if cell.host is not None:
            await cell.host.stop()
        cell.state = _S.STOPPED
        cell.started_at = None
        log.info("component.stopped", component=cell.name, reason=reason)
        self._announce(cell, "stopped", reason=reason)

    async def _release(self, cell: Cell, host: Host | None) -> None:
        """Finish stopping an incarnation whose ``run()`` has ended (``shutdown()``)."""
        if host is not None:
            await host.stop()
        cell.started_at = None

    def _cancel_timer(self, cell: Cell) -> None:
        timer, cell.timer = cell.timer, None
        if timer is not None and timer is not asyncio.current_task():
            timer.cancel()
