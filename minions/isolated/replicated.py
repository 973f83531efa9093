"""Replicated components: N children of one isolated resource or minion, one proxy in front.

``isolated=Isolation(replicas=4)`` (or ``"cores"``, or ``replicas`` set by ``run()``'s options,
``minions.toml`` or ``minions scale``) runs the component as a :class:`ReplicatedHost`: a
:class:`~minions.isolated.replicas.ReplicaSet` of children, each forked from the runtime's
zygote exactly like a lone isolated child and built with the same dependencies (proxies to this
process) plus its :class:`~minions.ReplicaInfo`.

* A replicated **resource**'s dependents receive one proxy whose calls an
  :class:`isolation.Router` spreads over the replicas: least loaded, or by ``route_by`` key in
  call order. The proxy outlives the replicas: a replica that dies is replaced behind it, so
  the dependents are not restarted (unlike a lone isolated resource's). Calls in flight on a
  replica that dies fail with ``ComponentCrashed``, or are retried once elsewhere for methods
  marked :func:`~minions.idempotent`.
* A replicated **minion** runs ``run()`` in each replica.

The supervisor sees one incarnation that runs while any replica does (see
:mod:`minions.isolated.replicas`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
from collections.abc import Mapping
from typing import Any

from isolation import ChildExit, ChildProcess, ChildSpec, Isolation, Peer, Router, remote_interface

from ..core.graph import Node
from ..core.host import Outcome
from ..core.host import ReplicatedHost as ReplicatedHostBase
from ..core.idempotent import is_idempotent
from ..core.observer import CallObserver
from ..core.policy import Policy
from ..core.status import LifecycleListener, ReplicaStatus
from .children import Zygotes, spawn_child
from .component import child_spec
from .measured import LIFECYCLE, measured_proxy
from .replicas import Replica, ReplicaLauncher, ReplicaSet, Routing

__all__ = [
    "LocalLauncher",
    "LocalReplica",
    "ReplicatedHost",
    "idempotent_methods",
    "router_routing",
]


class LocalLauncher:
    """Starts replicas as children of this host's zygote."""

    def __init__(self, zygotes: Zygotes) -> None:
        self._zygotes = zygotes

    def __repr__(self) -> str:
        return f"<LocalLauncher {self._zygotes!r}>"

    async def launch(
        self, name: str, spec: ChildSpec, services: Mapping[str, object], index: int
    ) -> Replica:
        child = await spawn_child(self._zygotes, name, spec, services, replica=index, hold_run=True)
        return LocalReplica(child)


class LocalReplica:
    """A replica that is a child of this host's zygote."""

    def __init__(self, child: ChildProcess) -> None:
        self._child = child

    def __repr__(self) -> str:
        return f"<LocalReplica {self._child!r}>"

    @property
    def pid(self) -> int | None:
        return self._child.pid

    @property
    def node(self) -> str | None:
        return None

    @property
    def channel(self) -> Peer:
        return self._child.channel

    def proxy(self, cls: type) -> Any:
        return self._child.proxy(cls)

    def start_run(self) -> None:
        self._child.start_run()

    async def wait(self) -> ChildExit:
        return await self._child.wait()

    async def stop(self, timeout: float) -> ChildExit:  # noqa: ASYNC109 - a grace period
        return await self._child.stop(timeout)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self._child.pid, signal.SIGKILL)


def idempotent_methods(cls: type) -> frozenset[str]:
    """The remote methods of ``cls`` marked ``@idempotent``."""
    return frozenset(
        name for name in remote_interface(cls, LIFECYCLE) if is_idempotent(getattr(cls, name, None))
    )


def router_routing(router: Router) -> Routing:
    """Keep ``router`` informed of a replica set's replicas."""
    return Routing(
        on_ready=lambda index, replica: router.attach(index, replica.channel),
        on_gone=router.detach,
        on_failed=router.retire,
        resize=router.resize,
        in_flight=router.calls_in_flight,
        drained=router.drained,
    )


class ReplicatedHost(ReplicatedHostBase):
    """Runs one incarnation of a component as ``count`` replicas (see the module docstring)."""

    def __init__(
        self,
        node: Node,
        policy: Policy,
        isolation: Isolation,
        launcher: ReplicaLauncher,
        *,
        fresh_code: bool = False,
        observer: CallObserver | None = None,
        announce: LifecycleListener | None = None,
    ) -> None:
        self._node = node
        self._announce = announce
        self._policy = policy
        self._isolation = isolation
        self._launcher = launcher
        self._fresh_code = fresh_code
        self._observer = observer
        self._router: Router | None = None
        self._set: ReplicaSet | None = None
        self._proxy: object | None = None
        self._spec: ChildSpec | None = None
        self._services: dict[str, object] = {}

    def __repr__(self) -> str:
        return f"<ReplicatedHost {self._node.name} {self._set!r}>"

    @property
    def instance(self) -> object:
        if self._proxy is None:
            raise RuntimeError(f"{self._node.name} has not been started")
        return self._proxy

    @property
    def pid(self) -> int | None:
        return None  # each replica has its own: see replicas

    @property
    def replicas(self) -> tuple[ReplicaStatus, ...]:
        return self._set.statuses() if self._set is not None else ()

    @property
    def running_replicas(self) -> int:
        return self._set.running if self._set is not None else 0

    async def start(self, provided: Mapping[type[Any], object], config: object | None) -> None:
        node, isolation = self._node, self._isolation
        self._spec, self._services = child_spec(
            node, isolation, provided, config, self._fresh_code, self._observer
        )
        router = self._router = Router(
            node.name,
            node.cls,
            exclude=LIFECYCLE,
            route_by=isolation.route_by,
            idempotent=idempotent_methods(node.cls),
            wait_timeout=isolation.start_timeout,
        )
        proxy: object = router.proxy()
        if self._observer is not None:
            proxy = measured_proxy(proxy, node.cls, node.name, self._observer)
        self._proxy = proxy
        self._set = ReplicaSet(
            node.name,
            node.kind,
            self._policy,
            self._launch,
            router_routing(router),
            stop_timeout=isolation.stop_timeout,
            announce=self._announce,
        )
        await self._set.start(isolation.replica_count())

    async def _launch(self, index: int, count: int) -> Replica:
        assert self._spec is not None
        spec = dataclasses.replace(
            self._spec, payload={**self._spec.payload, "replica": [index, count]}
        )
        return await self._launcher.launch(self._node.name, spec, self._services, index)

    async def wait(self) -> Outcome:
        assert self._set is not None
        return await self._set.wait()

    async def stop(self) -> None:
        if self._router is not None:
            self._router.close(f"{self._node.name} is stopping")
        if self._set is not None:
            await self._set.stop()

    def kill(self) -> None:
        if self._set is not None:
            self._set.kill()

    async def scale(self, count: int) -> None:
        if self._set is not None:
            await self._set.scale(count)
