"""Frozen snapshots of what the runtime is doing, for people and programs to read: each
component's :class:`ComponentStatus`, and the :class:`LifecycleEvent` the runtime announces at
each step of a component's life."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from .component import ComponentState

__all__ = [
    "ComponentStatus",
    "LifecycleEvent",
    "LifecycleKind",
    "LifecycleListener",
    "ReplicaStatus",
]


@dataclass(frozen=True)
class ReplicaStatus:
    """One replica of a replicated component at one moment (``ComponentStatus.replicas``).

    ``state`` is the replica's own: ``starting``, ``running``, ``restarting`` (waiting out its
    backoff), ``stopping`` (draining, after a scale down), ``stopped``, ``completed`` or
    ``failed`` (given up). ``calls_in_flight`` counts the calls, streams and workflow steps
    running on it; ``node`` is the Ray node it runs on (``None`` for a local child).
    """

    index: int
    state: ComponentState
    pid: int | None
    restarts: int
    crashes: int
    calls_in_flight: int
    last_error: str | None
    started_at: datetime | None
    node: str | None = None


@dataclass(frozen=True)
class ComponentStatus:
    """One component at one moment: returned by :meth:`minions.Runtime.status`.

    ``crash_causes`` counts the crashes by a short cause: ``raised`` (``run()`` raised),
    ``cancelled``, ``returned`` (a resource's ``run()`` ended), ``startup`` (construction or
    ``startup()`` failed) and, for an isolated component, how its child ended: ``died``,
    ``hung``, ``protocol``, ``memory``, ``cpu``. ``ended_by_crash`` is true for a component
    whose last incarnation crashed and whose policy did not restart it (``temporary``).
    ``replicas`` describes each replica of a replicated component (empty otherwise); its
    ``pid`` is then ``None``.
    ``dependencies`` names the components it depends on (its injected resources).
    """

    name: str
    kind: str  # "resource" or "minion"
    state: ComponentState
    restarts: int
    crashes: int
    last_error: str | None
    started_at: datetime | None  # when the current incarnation started (UTC); None unless running
    isolated: bool
    pid: int | None  # the child process of an isolated component
    crash_causes: Mapping[str, int] = field(default_factory=dict, hash=False)
    ended_by_crash: bool = False
    replicas: tuple[ReplicaStatus, ...] = ()
    dependencies: tuple[str, ...] = ()

    def __str__(self) -> str:
        text = f"{self.name} ({self.kind}) {self.state.value}, {self.restarts} restarts"
        if self.replicas:
            running = sum(1 for r in self.replicas if r.state is ComponentState.RUNNING)
            text += f", {running}/{len(self.replicas)} replicas running"
        return f"{text}, last error: {self.last_error}" if self.last_error else text


LifecycleKind = Literal[
    "starting",
    "started",
    "crashed",
    "restarting",
    "redeploying",
    "stopping",
    "stopped",
    "completed",
    "given_up",
]


@dataclass(frozen=True)
class LifecycleEvent:
    """One step of a component's life, announced by the runtime as it happens.

    ``kind`` is what happened: ``starting``, ``started`` (``pid``: an isolated component's
    child), ``crashed`` (``cause`` one of the short causes of
    :attr:`ComponentStatus.crash_causes`, ``reason`` the error), ``restarting`` (``delay``: the
    backoff before the next start, when there is one), ``redeploying``, ``stopping``,
    ``stopped``, ``completed`` (a minion's ``run()`` returned for good) or ``given_up`` (too many
    restarts). ``reason`` says why, in words, where there is a why. ``at`` is when (UTC).
    ``replica`` is set when the step is one replica's of a replicated component (its index):
    the replica started, crashed, is restarting, was given up, completed or stopped, while the
    component itself runs on.

    These are the same steps as the ``component.*`` log events; a
    :meth:`~minions.Runtime.add_lifecycle_listener` receives them as data.
    """

    component: str
    kind: LifecycleKind
    at: datetime
    reason: str | None = None
    cause: str | None = None
    pid: int | None = None
    delay: float | None = None
    replica: int | None = None


#: Called with every :class:`LifecycleEvent`, on the event loop, as it happens.
LifecycleListener = Callable[[LifecycleEvent], None]
