"""The child's side: build the component, serve it, run it, and say how it ended.

``main`` is what the zygote runs in each fresh fork. Its life, as seen on the channel::

    child                                   parent
      ── hello {token, pid} ─────────────▶    checks the token, serves its services
      ◀──────────── init {factory, services, payload}   (only if it did not fit in the job)
      (build proxies, factory(), startup(), serve the component)
      ── ready {classes} ────────────────▶    spawn() returns; the zygote warms the classes
      ◀────────────────────────────────── run    (only when the spawn asked to hold run():
                                                  sent once the parent counts it running)
      (run(), heartbeats both ways, log events)
      ◀────────────────────────────── stop    (only when the parent stops it)
      (cancel run(), shutdown())
      ── exited {reason, error} ─────────▶    then the process exits 0

A sandboxed child (one forked by a sandbox zygote) waits, after ``hello``, for the parent's
``seal {data_limit}``: it proves the channel is connected, so the child can refuse itself new
Unix sockets for good (``_sandbox.enforce.seal_channel``) and take its memory limit, which the
parent measured for it (a sandbox cannot read ``/proc``); only then does any code of the
component run.

A failure before READY is sent as ``failed {error}`` instead, with the traceback, and becomes a
``ChildStartError`` in the parent. Heartbeats are sent by a task of the child's event loop, so a
child whose loop is blocked (a tight loop that never awaits) goes silent and is killed as hung.
The parent's heartbeats prove it is still there; if they stop, the child stops too — a backstop
for the lifeline (see ``_lifeline``) when the parent is alive but wedged.

The child uses a ZeroMQ context of its own, never an inherited one, and cleans up nothing the
parent relies on: the socket directory belongs to the parent.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import resource
import sys
import traceback
from collections.abc import Mapping
from typing import Any

import zmq
import zmq.asyncio

from ._channel import COMPONENT, LIFECYCLE, configure_socket
from ._errors import ErrorReport, ProtocolError
from ._limits import apply_cpu_limit, apply_memory_limit
from ._logs import forward_logs
from ._protocol import DEFAULT_MAX_FRAME_BYTES
from ._rpc import Peer
from ._sandbox import enforce
from ._spare import take
from ._spec import reference, resolve

__all__ = ["main"]


def main(config: Mapping[str, Any]) -> int:
    """Entry point of an isolated child (run by the zygote in a fresh fork); the exit code."""
    limits = config["limits"]
    if limits.get("cpu_seconds") is not None:
        apply_cpu_limit(limits["cpu_seconds"])
    loop, context, socket = take()
    with asyncio.Runner(loop_factory=lambda: loop) as runner:
        return runner.run(_Child(config, context, socket, runner.get_loop()).run())


class _Child:
    def __init__(
        self,
        config: Mapping[str, Any],
        context: zmq.asyncio.Context,
        socket: zmq.asyncio.Socket,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._context = context
        self._socket = socket
        self._component: str = config["component"]
        self._endpoint: str = config["endpoint"]
        self._token: str = config["token"]
        self._limits: Mapping[str, Any] = config["limits"]
        self._interval: float = self._limits["heartbeat_interval"]
        self._timeout: float = self._limits["heartbeat_timeout"]
        self._max_frame: int | None = config.get("max_frame_bytes")
        self._log_level: int = config.get("log_level", logging.INFO)
        self._init: asyncio.Future[Mapping[str, Any]] = loop.create_future()
        self._sandboxed = bool(config.get("sandboxed"))
        self._seal: asyncio.Future[Mapping[str, Any]] = loop.create_future()
        if config.get("init") is not None:
            # Small enough to come with the job: no round trip to the parent before building.
            self._init.set_result(config["init"])
        self._stop = asyncio.Event()
        # run() waits for the parent's "run" when the spawn asked for it: the component is
        # served from READY on, but its own life starts once the parent counts it running.
        self._go = asyncio.Event()
        if not config.get("hold_run"):
            self._go.set()
        self._last_parent_beat = loop.time()
        self._peer: Peer | None = None

    async def run(self) -> int:
        context, socket = self._context, self._socket
        try:
            configure_socket(socket, self._max_frame or DEFAULT_MAX_FRAME_BYTES)
            socket.connect(self._endpoint)
            kwargs = {} if self._max_frame is None else {"max_frame_bytes": self._max_frame}
            peer = self._peer = Peer(
                socket, component=self._component, on_control=self._on_control, **kwargs
            )
            receiver = asyncio.create_task(peer.run())
            beats = asyncio.create_task(self._heartbeats(peer))
            try:
                # Hello first (the tasks above start later): the parent checks it while this
                # process finishes setting up.
                peer.send_control("hello", {"token": self._token, "pid": os.getpid()})
                forward_logs(
                    lambda event: peer.send_control("log", event),
                    asyncio.get_running_loop(),
                    level=self._log_level,
                )
                await self._live(peer, receiver)
            finally:
                beats.cancel()
                receiver.cancel()
                await asyncio.gather(beats, receiver, return_exceptions=True)
                await peer.aclose()
        finally:
            socket.close()
            context.term()
        return 0

    async def _live(self, peer: Peer, receiver: asyncio.Task[None]) -> None:
        init = await _first(self._init, receiver)
        if init is None:
            return  # the channel closed before init: the parent is gone or gave up
        if self._sandboxed:
            seal = await _first(self._seal, receiver)
            if seal is None:
                return
            data_limit = seal.get("data_limit")
            if isinstance(data_limit, int):
                _, hard = resource.getrlimit(resource.RLIMIT_DATA)
                resource.setrlimit(resource.RLIMIT_DATA, (data_limit, hard))
            enforce.seal_channel()
        elif self._limits.get("memory_mb") is not None:
            # Set after the channel exists, so the limit counts only the component's memory.
            apply_memory_limit(self._limits["memory_mb"])
        try:
            obj = await self._build(peer, init)
        except BaseException as exc:
            peer.send_control("failed", self._error(exc))
            if not isinstance(exc, Exception):
                raise
            return
        peer.send_control("ready", {"classes": _references(type(obj))})
        reason, error = await self._run(obj, receiver)
        await self._shutdown(obj)
        peer.send_control("exited", {"reason": reason, "error": error})

    async def _build(self, peer: Peer, init: Mapping[str, Any]) -> object:
        proxies = {
            name: peer.proxy(name, resolve(class_name, what=f"service {name!r}"), exclude=LIFECYCLE)
            for name, class_name in init["services"].items()
        }
        factory = resolve(init["factory"], what=f"factory of {self._component}")
        obj: object = factory(proxies, init["payload"])
        await _call_hook(obj, "startup")
        peer.serve(COMPONENT, obj, type(obj), exclude=LIFECYCLE)
        return obj

    async def _run(self, obj: object, receiver: asyncio.Task[None]) -> tuple[str, Any]:
        """Run ``obj.run()`` until it ends or a stop is asked for; its outcome for the report.

        The channel ending (``receiver`` finished: the parent closed it or sent garbage) is a
        stop too: nobody would hear from this child any more.
        """
        stop = asyncio.create_task(self._stop.wait())
        if not self._go.is_set():
            go = asyncio.create_task(self._go.wait())
            await asyncio.wait({go, stop, receiver}, return_when=asyncio.FIRST_COMPLETED)
            go.cancel()
            if not self._go.is_set():
                stop.cancel()
                return "stopped", None  # stopped, or the parent gone, before run() began
        work = asyncio.ensure_future(_call_hook(obj, "run")) if hasattr(obj, "run") else None
        try:
            waiting: set[asyncio.Future[Any]] = {stop, receiver}
            if work is not None:
                waiting.add(work)
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if work is None:
            return "stopped", None
        if not work.done():
            work.cancel()
            with contextlib.suppress(BaseException):
                await work
            if not work.done() or work.cancelled():
                return "stopped", None
        if work.cancelled():
            return "stopped", None
        exc = work.exception()
        if exc is None:
            return "returned", None
        if isinstance(exc, SystemExit):
            raise exc
        reason = "memory" if self._is_memory_limit(exc) else "raised"
        return reason, ErrorReport.of(exc).to_data()

    async def _shutdown(self, obj: object) -> None:
        try:
            await _call_hook(obj, "shutdown")
        except Exception:
            # The outcome of run() is what the parent needs; a failing shutdown is only logged.
            print(f"{self._component}.shutdown() raised:", file=sys.stderr)
            traceback.print_exc()

    def _is_memory_limit(self, exc: BaseException) -> bool:
        return isinstance(exc, MemoryError) and self._limits.get("memory_mb") is not None

    def _error(self, exc: BaseException) -> dict[str, Any]:
        return {"memory": self._is_memory_limit(exc), **ErrorReport.of(exc).to_data()}

    def _on_control(self, kind: str, body: Any) -> None:
        loop = asyncio.get_running_loop()
        if kind == "heartbeat":
            self._last_parent_beat = loop.time()
        elif kind == "init":
            if self._init.done() or not isinstance(body, dict):
                raise ProtocolError(f"unexpected init message from the parent: {body!r}")
            self._last_parent_beat = loop.time()
            self._init.set_result(body)
        elif kind == "stop":
            self._stop.set()
        elif kind == "run":
            self._go.set()
        elif kind == "seal":
            if self._seal.done() or not isinstance(body, dict):
                raise ProtocolError(f"unexpected seal message from the parent: {body!r}")
            self._seal.set_result(body)

    async def _heartbeats(self, peer: Peer) -> None:
        loop = asyncio.get_running_loop()
        while True:
            peer.send_control("heartbeat")
            await asyncio.sleep(self._interval)
            if loop.time() - self._last_parent_beat > self._timeout:
                print(
                    f"{self._component}: no heartbeat from the parent for {self._timeout:g} s; "
                    "stopping",
                    file=sys.stderr,
                )
                self._stop.set()
                for waiting in (self._init, self._seal):
                    if not waiting.done():
                        waiting.cancel()


async def _call_hook(obj: object, name: str) -> None:
    """Call ``obj.<name>()`` if it exists, awaiting it if it is a coroutine (hooks may be sync)."""
    hook = getattr(obj, name, None)
    if hook is None:
        return
    result = hook()
    if inspect.isawaitable(result):
        await result


def _references(cls: type) -> list[str]:
    """Names of the component's class, for the zygote to prepare (see ``Zygote.warm``)."""
    try:
        return [reference(cls)]
    except ValueError:
        return []


async def _first(
    future: asyncio.Future[Mapping[str, Any]], receiver: asyncio.Task[None]
) -> Mapping[str, Any] | None:
    """The init message, or None when the channel ends (or the parent goes silent) first."""
    waiting: set[asyncio.Future[Any]] = {future, receiver}
    await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    if future.done() and not future.cancelled():
        return future.result()
    return None
