"""Isolated components: the host that runs a component in a child process.

A component marked ``isolated=True`` (or ``isolated=Isolation(...)``, by class keyword or in
``run(..., options=...)``) is built and run by a child forked from the runtime's warm zygote
(:mod:`isolation`). Its dependencies stay in this process and the child reaches them through
proxies; an isolated resource is reached by its in-process dependents through a proxy too.

The supervisor sees an :class:`IsolatedHost` exactly like a local one: the child's death — an
exception in ``run()``, ``os._exit``, a signal, a memory or CPU limit, a hang, a garbled
channel — is an :class:`~minions.core.host.Outcome` with the cause in words, and the
component's restart policy applies as for any crash.

In the child, :func:`build_in_child` constructs the component from the same annotations the
parent resolved, with proxies in place of the dependencies and the validated config; after a
redeploy, from its module executed anew (:mod:`minions.isolated.code`).

With a :class:`~minions.core.observer.CallObserver` (metrics on), the proxy dependents receive
and the services the child reaches are measured stand-ins (:mod:`minions.isolated.measured`).
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from isolation import ChildProcess, ChildSpec, Isolation, reference, resolve

from ..core.component import Component, Resource, component_name, has_own_run, tasks_of
from ..core.errors import RuntimeStateError, StartupError
from ..core.graph import Node, declared_config, declared_dependencies
from ..core.host import Outcome, construct_with
from ..core.observer import CallObserver
from ..core.policy import Policy
from ..core.replica import SINGLE, ReplicaInfo
from ..core.tasks import run_supervised, shutdown_supervised
from ..core.values import plain_codec
from .children import Zygotes, isolation_of, spawn_child
from .code import fresh_class, fresh_source
from .measured import measured_proxy, measured_service

FACTORY = "minions.isolated.component:build_in_child"


@dataclass(frozen=True)
class ChildOutcome(Outcome):
    """An isolated incarnation's end; ``reason`` is how its child ended (``ChildExit.reason``)."""

    reason: str = "died"


class IsolatedHost:
    """Runs one incarnation of a component in a child process.

    ``fresh_code`` makes the child execute the component's module anew (a redeploy);
    ``observer`` measures the calls that cross the boundary.
    """

    def __init__(
        self,
        node: Node,
        policy: Policy,
        isolated: object,
        zygotes: Zygotes,
        *,
        fresh_code: bool = False,
        observer: CallObserver | None = None,
    ) -> None:
        self._node = node
        self._policy = policy
        self._isolation = isolation_of(node, isolated)
        self._zygotes = zygotes
        self._fresh_code = fresh_code
        self._observer = observer
        self._child: ChildProcess | None = None
        self._proxy: object | None = None

    @property
    def instance(self) -> object:
        if self._proxy is None:
            if self._child is None:
                raise RuntimeError(f"{self._node.name} has not been started")
            proxy = self._child.proxy(self._node.cls)
            if self._observer is not None:
                proxy = measured_proxy(proxy, self._node.cls, self._node.name, self._observer)
            self._proxy = proxy
        return self._proxy

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child is not None else None

    async def start(self, provided: Mapping[type[Any], object], config: object | None) -> None:
        node = self._node
        spec, services = child_spec(
            node, self._isolation, provided, config, self._fresh_code, self._observer
        )
        self._child = await spawn_child(self._zygotes, node.name, spec, services, hold_run=True)

    async def wait(self) -> Outcome:
        assert self._child is not None
        # The supervisor has just counted the component running: its run() may begin.
        self._child.start_run()
        end = await self._child.wait()
        if end.reason == "returned":
            return ChildOutcome(False, "run() returned", reason=end.reason)
        return ChildOutcome(
            True,
            f"child {end.cause}" if end.reason != "raised" else end.cause,
            end.error,
            reason=end.reason,
        )

    async def stop(self) -> None:
        if self._child is not None:
            await self._child.stop(self._isolation.stop_timeout)

    def kill(self) -> None:
        if self._child is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._child.pid, signal.SIGKILL)


def child_spec(
    node: Node,
    isolation: Isolation,
    provided: Mapping[type[Any], object],
    config: object | None,
    fresh_code: bool,
    observer: CallObserver | None,
) -> tuple[ChildSpec, dict[str, object]]:
    """What the child of ``node`` builds, and the services it reaches in this process
    (measured stand-ins when ``observer`` is set)."""
    payload: dict[str, Any] = {
        "component": reference(node.cls),
        "config": _dump_config(node, config),
    }
    if fresh_code:
        try:
            payload["fresh"] = fresh_source(node.cls)
        except RuntimeStateError as exc:
            raise StartupError(node.name, str(exc)) from None
    spec = ChildSpec(
        component=node.name,
        factory=FACTORY,
        services={dep.name: reference(bound) for dep, bound in node.dependencies},
        payload=payload,
        isolation=isolation,
    )
    services = {dep.name: provided[bound] for dep, bound in node.dependencies}
    if observer is not None:
        services = {
            dep.name: measured_service(
                provided[bound], bound, node.name, component_name(bound), observer
            )
            for dep, bound in node.dependencies
        }
    return spec, services


def build_in_child(proxies: Mapping[str, Any], payload: Mapping[str, Any]) -> Component:
    """The child's factory: construct the component with proxies for its dependencies."""
    fresh = payload.get("fresh")
    if fresh:
        cls = fresh_class(payload["component"], fresh)
    else:
        cls = resolve(payload["component"], what="component")
    dependencies = {dep.name: proxies[dep.name] for dep in declared_dependencies(cls)}
    config_type, config_via = declared_config(cls)
    config = None
    if config_type is not None:
        config = plain_codec(config_type).load(payload["config"])
    structlog.contextvars.bind_contextvars(component=cls.__minions_options__.name or cls.__name__)
    instance = construct_with(cls, dependencies, config, config_via, replica=replica_of(payload))
    # The child calls run() and shutdown() as the hooks: the same supervised wrappers as in
    # the parent, so background tasks crash the component and are drained when it stops. A
    # resource without run() lives until it is stopped, as it does in-process.
    tasks = tasks_of(instance)
    run = None if issubclass(cls, Resource) and not has_own_run(cls) else instance.run
    instance.run = functools.partial(run_supervised, tasks, run)  # type: ignore[method-assign]
    instance.shutdown = functools.partial(  # type: ignore[method-assign]
        shutdown_supervised, tasks, instance.shutdown
    )
    return instance


def replica_of(payload: Mapping[str, Any]) -> ReplicaInfo:
    """The :class:`ReplicaInfo` a replica's payload carries (``SINGLE`` for a lone child)."""
    replica = payload.get("replica")
    if replica is None:
        return SINGLE
    index, count = replica
    return ReplicaInfo(int(index), int(count))


def _dump_config(node: Node, config: object | None) -> Any:
    if node.config_type is None or config is None:
        return None
    return plain_codec(node.config_type).dump(config)
