"""A child that another system runs (a Ray actor), reached over a secure channel.

:class:`ChildProcess` forks its child and watches it through a pidfd. A *remote* child is
started by a scheduler — its process may be on another host — and reached over a CurveZMQ TCP
channel (:mod:`isolation._secure`); the scheduler is the only witness of its death, and reports
it with :meth:`RemoteChild.ended`. Everything on the channel is the child protocol of
:mod:`isolation._child`, unchanged::

      ── hello {token, pid} ──▶  token checked, services served
      (the child builds the component from the init it was started with)
      ── ready ──────────────▶  start() returns
      heartbeats both ways, log events, calls and streams
      ◀───────────────── stop    stop(): asked first; the scheduler ends it if it does not
      ── exited {reason} ────▶  then the child's session returns

Lifecycle (``ChildState``): STARTING ── ready ──▶ RUNNING ── stop() ──▶ STOPPING, and from any of
them to EXITED once the scheduler reports the end. A child that sends garbage or a wrong token,
or misses heartbeats, is ended through ``kill`` (the scheduler's) and described as such.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import zmq

from ._channel import COMPONENT, LIFECYCLE
from ._errors import ChildStartError, ComponentCrashed, ErrorReport, ProtocolError
from ._exit import ChildExit
from ._logs import default_log_sink
from ._process import ChildState
from ._rpc import Peer
from ._spec import ChildSpec, resolve

__all__ = ["RemoteChild", "remote_config"]

LogSink = Callable[[str, dict[str, Any]], None]
#: How long the child's own final report may trail the end the scheduler reports.
_REPORT_GRACE_SECONDS = 1.0


class RemoteChild:
    """The parent's handle on a remote child (see the module docstring).

    ``socket`` is the parent's end of its channel, already bound (the caller closes it after
    the child has ended); ``kill`` ends the child through its scheduler. Call :meth:`start`,
    then report the end with :meth:`ended` whenever the scheduler sees it.
    """

    def __init__(
        self,
        spec: ChildSpec,
        services: Mapping[str, object],
        socket: zmq.Socket[Any],
        token: str,
        *,
        kill: Callable[[], None],
        on_log: LogSink | None = None,
    ) -> None:
        self.component = spec.component
        self.spec = spec
        self.pid: int | None = None
        self._limits = spec.isolation
        self._services = services
        self._classes = _service_classes(spec, services)
        self._token = token
        self._kill_child = kill
        self._on_log = on_log or default_log_sink
        self._state = ChildState.STARTING
        loop = self._loop = asyncio.get_running_loop()
        self._ready: asyncio.Future[None] = loop.create_future()
        self._ended: asyncio.Future[str] = loop.create_future()
        self._exit: asyncio.Future[ChildExit] = loop.create_future()
        self._reported = asyncio.Event()
        self._report: dict[str, Any] | None = None
        self._verdict: ChildExit | None = None
        self._failure: ChildStartError | None = None
        self._hello = False
        self._run_started = False
        self._last_beat = loop.time()
        self._tasks: set[asyncio.Task[None]] = set()
        self._peer = Peer(socket, component=spec.component, on_control=self._on_control)
        self._spawn(self._receive())
        self._finisher = loop.create_task(self._finish())

    def __repr__(self) -> str:
        return f"<RemoteChild {self.component} pid={self.pid} {self._state.value}>"

    @property
    def state(self) -> ChildState:
        return self._state

    @property
    def channel(self) -> Peer:
        return self._peer

    def proxy(self, cls: type) -> Any:
        """A proxy to the component the child built, with the methods of ``cls``."""
        return self._peer.proxy(COMPONENT, cls, exclude=LIFECYCLE)

    async def start(self) -> None:
        """Wait until the child is READY (``start_timeout``); ChildStartError otherwise."""
        timeout = self._limits.start_timeout
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), timeout)
        except TimeoutError:
            self._end(ChildExit("died", f"was not ready within {timeout:g} s; ended"))
            await asyncio.shield(self._exit)
            raise ChildStartError(
                f"{self.component} did not become ready within {timeout:g} s (raise "
                "Isolation.start_timeout if its placement or startup is slow)"
            ) from None
        except BaseException:
            if not self._exit.done():
                self._end(ChildExit("died", "start abandoned; ended"))
            await asyncio.shield(self._exit)
            raise
        self._state = ChildState.RUNNING
        self._last_beat = self._loop.time()
        self._spawn(self._watch_heartbeats())

    def start_run(self) -> None:
        """Let the child call its component's ``run()`` (it waits for this: see
        :func:`remote_config`); idempotent."""
        if self._state is ChildState.RUNNING and not self._run_started:
            self._run_started = True
            with contextlib.suppress(ComponentCrashed):
                self._peer.send_control("run")

    def ended(self, cause: str) -> None:
        """The scheduler saw the child end (its session returned, or its process is gone)."""
        if not self._ended.done():
            self._ended.set_result(cause)

    async def wait(self) -> ChildExit:
        return await asyncio.shield(self._exit)

    async def stop(self, timeout: float | None = None) -> ChildExit:  # noqa: ASYNC109 - a grace
        """Ask the child to stop; end it through the scheduler if it has not within
        ``timeout`` (default ``stop_timeout``). Idempotent."""
        if self._state is ChildState.RUNNING:
            self._state = ChildState.STOPPING
            grace = self._limits.stop_timeout if timeout is None else timeout
            self._spawn(self._escalate(grace))
        elif self._state is ChildState.STARTING and not self._exit.done():
            self._end(ChildExit("stopped", "stopped while starting"))
        return await asyncio.shield(self._exit)

    # -- messages from the child ----------------------------------------------------------------

    def _on_control(self, kind: str, body: Any) -> None:
        if kind == "heartbeat":
            self._last_beat = self._loop.time()
        elif kind == "log":
            if isinstance(body, dict):
                self._on_log(self.component, body)
            else:
                self._violation("sent a log event that is not a map")
        elif kind == "hello" and not self._hello:
            self._on_hello(body)
        elif kind == "ready" and self._hello and not self._ready.done():
            self._ready.set_result(None)
        elif kind == "failed" and self._hello and not self._ready.done():
            report = ErrorReport.from_data(body)
            self._failure = ChildStartError(
                f"{self.component} failed to start: {report.type}: {report.message}"
            )
            if report.traceback:
                self._failure.add_note(f"Remote traceback ({self.component}):\n{report.traceback}")
            self._report = {"reason": "failed"}
            self._reported.set()
            self._ready.set_exception(self._failure)
        elif kind == "exited" and self._hello and isinstance(body, dict) and self._report is None:
            self._report = body
            self._reported.set()
        else:
            self._violation(f"sent an unexpected {kind!r} message")

    def _on_hello(self, body: Any) -> None:
        token = body.get("token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not hmac.compare_digest(token, self._token):
            self._violation("sent a wrong handshake token")
            return
        pid = body.get("pid")
        self.pid = pid if isinstance(pid, int) and not isinstance(pid, bool) else None
        self._hello = True
        for name, obj in self._services.items():
            self._peer.serve(name, obj, self._classes[name], exclude=LIFECYCLE)
        self._spawn(self._send_heartbeats())

    async def _receive(self) -> None:
        try:
            await self._peer.run()
        except ProtocolError as exc:
            self._violation(f"sent a malformed frame: {exc}")

    # -- ending it ------------------------------------------------------------------------------

    def _violation(self, what: str) -> None:
        self._end(ChildExit("protocol", f"{what}; ended"))

    def _end(self, verdict: ChildExit) -> None:
        if self._verdict is None:
            self._verdict = verdict
        with contextlib.suppress(Exception):
            self._kill_child()

    async def _send_heartbeats(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                self._peer.send_control("heartbeat")
            await asyncio.sleep(self._limits.heartbeat_interval)

    async def _watch_heartbeats(self) -> None:
        timeout = self._limits.heartbeat_timeout
        while self._state is ChildState.RUNNING:
            late = self._loop.time() - (self._last_beat + timeout)
            if late >= 0:
                self._end(ChildExit("hung", f"no heartbeat for {timeout:g} s; ended"))
                return
            await asyncio.sleep(-late)

    async def _escalate(self, grace: float) -> None:
        with contextlib.suppress(Exception):
            self._peer.send_control("stop")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._ended), grace)
        if not self._ended.done():
            self._end(ChildExit("stopped", f"did not stop within {grace:g} s; ended"))

    async def _finish(self) -> None:
        cause = await self._ended
        if self._report is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reported.wait(), _REPORT_GRACE_SECONDS)
        ended = self._describe(cause)
        self._state = ChildState.EXITED
        try:
            if not self._ready.done():
                self._ready.set_exception(
                    ChildStartError(f"{self.component} {ended.cause} before it was ready")
                )
            crashed = ComponentCrashed(f"{self.component} {ended.cause}", component=self.component)
            self._peer.fail_pending(crashed)
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._peer.aclose()
        finally:
            self._exit.set_result(ended)

    def _describe(self, cause: str) -> ChildExit:
        report = self._report
        if report is not None:
            reason = report.get("reason")
            if reason == "returned":
                return ChildExit("returned", "run() returned")
            if reason == "stopped":
                return ChildExit("stopped", "stopped on request")
            if reason == "raised" and isinstance(report.get("error"), dict):
                raised = ErrorReport.from_data(report["error"])
                remote = raised.rebuild(self.component, "run")
                return ChildExit(
                    "raised", f"run() raised {raised.type}: {raised.message}", error=remote
                )
            if reason == "failed":
                return ChildExit("raised", str(self._failure), error=self._failure)
        if self._verdict is not None:
            return replace(self._verdict)
        return ChildExit("died", cause)

    def _spawn(self, coro: Any) -> None:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _service_classes(spec: ChildSpec, services: Mapping[str, object]) -> dict[str, type]:
    missing = sorted(set(spec.services) - set(services))
    if missing:
        raise ChildStartError(
            f"cannot start {spec.component}: no object given for service(s) {', '.join(missing)}"
        )
    classes: dict[str, type] = {}
    for name, class_name in spec.services.items():
        try:
            classes[name] = resolve(class_name, what=f"service {name!r} of {spec.component}")
        except ImportError as exc:
            raise ChildStartError(f"cannot start {spec.component}: {exc}") from exc
    return classes


def remote_config(
    spec: ChildSpec, keys: Mapping[str, str], endpoint: str, token: str
) -> dict[str, Any]:
    """The start-up message of a remote child: what ``serve_remote`` needs, as plain data.

    It carries the channel's client keys, so it must reach the child only through the
    scheduler's own authenticated transport (Ray's), never over an open connection.
    """
    limits = spec.isolation
    return {
        "component": spec.component,
        "endpoint": endpoint,
        "token": token,
        "keys": dict(keys),
        "limits": {
            "memory_mb": None,
            "cpu_seconds": None,
            "heartbeat_interval": limits.heartbeat_interval,
            "heartbeat_timeout": limits.heartbeat_timeout,
        },
        "log_level": logging.getLogger().getEffectiveLevel(),
        "init": {"factory": spec.factory, "services": dict(spec.services), "payload": spec.payload},
        "hold_run": True,  # run() once the parent counts the child running: start_run()
    }
