"""Replicas as Ray actors: ``isolated=Isolation(backend="ray", replicas=8, num_cpus=1)``.

Ray places each replica on a node of the cluster and keeps its process; Minions does the rest,
as for a local child. Each replica is a :class:`ReplicaActor` whose ``serve`` method runs one
session of the child protocol (:func:`isolation.serve_remote`) in the actor's event loop: it
builds the component from the same start-up data a forked child gets, with proxies to this
process's services, and serves it. Every call, stream, heartbeat and log event between the two
goes over a CurveZMQ-secured TCP channel (:mod:`isolation`'s ``SecureChannels``) whose keys
travel to the actor through Ray, with the start-up message; arguments and results are the same
typed msgpack as everywhere else (Ray only ever carries our bytes).

The pending ``serve`` call is how Ray tells of the actor's end: it returns when the session is
over, and fails with Ray's ``RayActorError`` the moment the actor dies (its process killed, its
node lost) — then the replica's end is reported, and the replica is restarted under the
component's policy like any other (:mod:`minions.isolated.replicas`). A replica's status shows
the Ray node it runs on.

The actor asks Ray for ``num_cpus`` CPUs (1 unless set) and is never restarted by Ray itself
(``max_restarts=0``): Minions restarts it, with its backoff and intensity.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import Mapping
from typing import Any

import msgpack  # type: ignore[import-untyped]  # ships no type information
import ray
import structlog
import zmq.asyncio

from isolation import (
    ChildExit,
    ChildSpec,
    ChildStartError,
    Peer,
    RemoteChild,
    SecureChannels,
    remote_config,
    serve_remote,
)

from ..core.errors import StartupError
from .children import component_context, log_forwarder
from .ray_cluster import RayCluster
from .replicas import Replica

__all__ = ["RayBackend", "RayReplica", "ReplicaActor"]

log = structlog.get_logger("minions")


@ray.remote(max_restarts=0, max_task_retries=0)
class ReplicaActor:
    """A Ray actor that hosts one replica (see the module docstring)."""

    async def describe(self) -> bytes:
        """Where the actor runs: its pid and Ray node, as msgpack."""
        context = ray.get_runtime_context()
        address = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
        node = f"{address}/{context.get_node_id()[:12]}"
        packed: bytes = msgpack.packb({"pid": os.getpid(), "node": node})
        return packed

    async def serve(self, config: bytes) -> bytes:
        """Run the replica's child session until it ends; its exit code, as msgpack."""
        code = await serve_remote(msgpack.unpackb(config))
        packed: bytes = msgpack.packb(code)
        return packed


class RayBackend:
    """Starts replicas as Ray actors on the runtime's :class:`RayCluster`."""

    def __init__(self, cluster: RayCluster) -> None:
        self._cluster = cluster
        self._context: zmq.asyncio.Context | None = None
        self._channels: SecureChannels | None = None
        self._replicas: set[RayReplica] = set()

    def __repr__(self) -> str:
        return f"<RayBackend {self._cluster!r}: {len(self._replicas)} replicas>"

    async def launch(
        self, name: str, spec: ChildSpec, services: Mapping[str, object], index: int
    ) -> Replica:
        await self._cluster.connect()
        channels = self._secure_channels()
        try:
            channel = channels.open()
        except Exception as exc:
            raise StartupError(
                name, f"{name}: cannot open a channel for replica {index}: {exc}"
            ) from exc
        num_cpus = spec.isolation.num_cpus
        actor = ReplicaActor.options(  # type: ignore[attr-defined]
            num_cpus=1 if num_cpus is None else num_cpus, name=None
        ).remote()
        replica = RayReplica(self, channels, channel.socket, actor)
        try:
            await replica.start(name, spec, services, index, channel.child_keys(), channel.endpoint)
        except BaseException:
            await replica.discard()
            raise
        self._replicas.add(replica)
        return replica

    def forget(self, replica: RayReplica) -> None:
        self._replicas.discard(replica)

    def _secure_channels(self) -> SecureChannels:
        if self._channels is None:
            # One ZeroMQ context for the driver's ends of the channels, and its ZAP handler.
            self._context = zmq.asyncio.Context()
            self._channels = SecureChannels(self._context, self._cluster.host)
        return self._channels

    async def aclose(self) -> None:
        """Stop what is left (the supervisor stopped the replicas already), then the cluster."""
        for replica in list(self._replicas):
            await replica.discard()
        if self._channels is not None:
            self._channels.close()
            self._channels = None
        if self._context is not None:
            self._context.destroy(linger=0)
            self._context = None
        await self._cluster.close()


class RayReplica:
    """One replica running in a Ray actor (a :class:`~minions.isolated.replicas.Replica`)."""

    def __init__(self, backend: RayBackend, channels: SecureChannels, socket: Any, actor: Any):
        self._backend = backend
        self._channels = channels
        self._socket = socket
        self._actor = actor
        self._child: RemoteChild | None = None
        self._watch: asyncio.Task[None] | None = None
        self._pid: int | None = None
        self._node: str | None = None

    def __repr__(self) -> str:
        return f"<RayReplica pid={self._pid} node={self._node}>"

    @property
    def pid(self) -> int | None:
        return self._pid

    @property
    def node(self) -> str | None:
        return self._node

    @property
    def channel(self) -> Peer:
        assert self._child is not None
        return self._child.channel

    def proxy(self, cls: type) -> Any:
        assert self._child is not None
        return self._child.proxy(cls)

    def start_run(self) -> None:
        assert self._child is not None
        self._child.start_run()

    async def start(
        self,
        name: str,
        spec: ChildSpec,
        services: Mapping[str, object],
        index: int,
        keys: Mapping[str, str],
        endpoint: str,
    ) -> None:
        timeout = spec.isolation.start_timeout
        try:
            where = msgpack.unpackb(await asyncio.wait_for(self._actor.describe.remote(), timeout))
        except TimeoutError:
            raise StartupError(
                name,
                f"{name}: Ray placed no actor for replica {index} within {timeout:g} s (is a "
                f"node with {spec.isolation.num_cpus or 1} free CPU(s) in the cluster? raise "
                "Isolation.start_timeout or lower num_cpus)",
            ) from None
        except Exception as exc:
            raise StartupError(name, f"{name}: replica {index}'s Ray actor failed: {exc}") from exc
        self._pid = where.get("pid") if isinstance(where.get("pid"), int) else None
        self._node = str(where.get("node"))[:80]
        token = secrets.token_urlsafe(24)
        config: bytes = msgpack.packb(remote_config(spec, keys, endpoint, token))
        on_log = log_forwarder(replica=index)
        child = self._child = RemoteChild(
            spec, services, self._socket, token, kill=self.kill, on_log=on_log
        )
        served = self._actor.serve.remote(config)
        self._watch = asyncio.get_running_loop().create_task(
            self._watch_actor(served), context=component_context(name)
        )
        try:
            await child.start()
        except ChildStartError as exc:
            raise StartupError(name, f"{name} failed to start in its Ray actor: {exc}") from exc

    async def _watch_actor(self, served: Any) -> None:
        """Report the session's end: it returned, or the actor died."""
        assert self._child is not None
        try:
            await served
            cause = "its Ray actor's session ended"
        except asyncio.CancelledError:
            cause = "stopped"
        except ray.exceptions.RayActorError as exc:
            cause = f"its Ray actor died ({_first_line(exc)})"
        except Exception as exc:
            cause = f"its Ray actor failed ({type(exc).__name__}: {_first_line(exc)})"
        self._child.ended(cause)

    async def wait(self) -> ChildExit:
        assert self._child is not None
        end = await self._child.wait()
        await self.discard()
        return end

    async def stop(self, timeout: float) -> ChildExit:  # noqa: ASYNC109 - a grace period
        assert self._child is not None
        end = await self._child.stop(timeout)
        await self.discard()
        return end

    def kill(self) -> None:
        with contextlib.suppress(Exception):
            ray.kill(self._actor, no_restart=True)

    async def discard(self) -> None:
        """Release the actor, the watch and the channel (the session is over)."""
        self.kill()
        watch, self._watch = self._watch, None
        if watch is not None and not watch.done():
            if self._child is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(self._child.wait()), 5.0)
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
        self._channels.close_channel(self._socket)
        self._backend.forget(self)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
