"""The parent's handle on one isolated child: start it, watch it, stop it, describe its end.

Lifecycle (``ChildState``)::

    STARTING ──ready──▶ RUNNING ──stop()──▶ STOPPING
        │                  │                   │
        └──────────────────┴───── death ───────┴──▶ EXITED   (ChildExit resolved)

A child ends in exactly one place, ``_finish``, which runs once the process is *dead* — never
before — so every ``ChildExit`` describes a reaped process. Death is noticed at once: the pidfd
becomes readable, then the zygote reports the wait status. Everything else only decides *why*
before killing: a missed heartbeat ("hung"), a frame the wire layer rejected ("protocol"), a
start timeout, a stop that was not honoured (SIGTERM, then SIGKILL). ``_finish`` then fails
pending calls with ``ComponentCrashed``, closes the channel, the pipes and the pidfd, removes the
socket file, and resolves ``wait()``.

The child's own final report (``exited``) is the best witness of how ``run()`` ended. It is
sent before the child exits, but may be read a moment after the pidfd fires; so for a child that
exited with status 0 and has not reported yet, ``_finish`` waits briefly for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hmac
import logging
import os
import secrets
import signal
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import msgpack  # type: ignore[import-untyped]  # ships no type information
import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from ._channel import COMPONENT, CONTROL_SOCKET_TYPE, LIFECYCLE, configure_socket
from ._errors import (
    ChildStartError,
    ComponentCrashed,
    ErrorReport,
    ProtocolError,
    SerializationError,
)
from ._exit import ChildExit, describe_status
from ._interface import remote_interface
from ._limits import MIB
from ._logs import LogLimiter, bounded_event, default_log_sink
from ._output import OutputPump, default_output_sink
from ._protocol import DEFAULT_MAX_FRAME_BYTES
from ._rpc import Peer
from ._spec import ChildSpec, resolve
from ._zygote import ExitStatus, Forked, Zygote

__all__ = ["ChildProcess", "ChildState", "spawn"]

CHILD_ENTRY = "isolation._child:main"
#: How long a cleanly exited child's final report may trail its death.
_REPORT_GRACE_SECONDS = 1.0
#: How long the zygote's status report may trail a death the pidfd showed.
_STATUS_GRACE_SECONDS = 2.0
#: How long output may keep flowing after a death (a grandchild may hold the pipe open).
_OUTPUT_GRACE_SECONDS = 0.5
#: Largest init (factory, services, payload) sent along with the job instead of after hello.
_INLINE_INIT_BYTES = 32 * 1024
#: Upper bound on the wait between SIGTERM and SIGKILL when a stop is escalated.
_TERM_GRACE_SECONDS = 1.0
#: How long a child whose connection dropped may take to die before it is killed for it.
_DISCONNECT_GRACE_SECONDS = 0.5
#: Log events per second a child may have logged on average, and at once.
LOG_EVENTS_PER_SECOND = 1000
LOG_EVENTS_BURST = 5000

LogSink = Callable[[str, dict[str, Any]], None]
OutputSink = Callable[[str, str, str], None]


class ChildState(enum.Enum):
    """Where a ChildProcess is in its life (drawn in the module docstring)."""

    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    EXITED = "exited"


async def spawn(
    zygote: Zygote,
    spec: ChildSpec,
    services: Mapping[str, object],
    *,
    on_log: LogSink | None = None,
    on_output: OutputSink | None = None,
    hold_run: bool = False,
) -> ChildProcess:
    """Fork a child for ``spec`` through ``zygote``, serve it ``services``, and return it once
    it is READY.

    With ``hold_run``, the child serves its component from READY on but calls its ``run()``
    only once told to (:meth:`ChildProcess.start_run`): a supervisor that counts it running
    first never sees a component's own code run before that.

    ``on_log(component, event)`` receives the child's log events and ``on_output(component,
    stream, line)`` its stdout and stderr lines (by default both are logged here). The child
    forwards only the events at or above the level this process's root logger is at when it is
    spawned: what would be dropped here is not sent. Raises
    ``ChildStartError`` (with the child's traceback when it has one) if the child cannot be
    forked, fails to import or build its component, or is not READY within
    ``spec.isolation.start_timeout``.
    """
    zygote.check_open(spec.component)
    if spec.isolation.sandbox is not None and zygote.trusted:
        raise ChildStartError(
            f"cannot start {spec.component}: it is sandboxed, and a sandboxed child is forked "
            "by its own sandbox zygote (isolation._sandbox_zygote), not by this one"
        )
    service_classes = _service_classes(spec, services)
    init = {"factory": spec.factory, "services": dict(spec.services), "payload": spec.payload}
    inline = _fits_inline(spec, init)
    path = zygote.socket_path(zygote.next_socket_name())
    socket = zygote.zmq_context().socket(CONTROL_SOCKET_TYPE)
    socket.setsockopt(zmq.LINGER, 0)
    configure_socket(socket, DEFAULT_MAX_FRAME_BYTES)
    try:
        socket.bind(f"ipc://{path}")
    except zmq.ZMQError as exc:
        socket.close()
        raise ChildStartError(
            f"cannot open a channel for {spec.component} at {path}: {exc}"
        ) from exc
    token = secrets.token_urlsafe(24)
    limits = spec.isolation
    config: dict[str, Any] = {
        "component": spec.component,
        "endpoint": f"ipc://{path}",
        "token": token,
        "limits": {
            "memory_mb": limits.memory_mb,
            "cpu_seconds": limits.cpu_seconds,
            "heartbeat_interval": limits.heartbeat_interval,
            "heartbeat_timeout": limits.heartbeat_timeout,
        },
        "log_level": logging.getLogger().getEffectiveLevel(),
        "init": init if inline else None,
        "hold_run": hold_run,
        "sandboxed": not zygote.trusted,
    }
    out_read, out_write = os.pipe2(os.O_CLOEXEC)
    err_read, err_write = os.pipe2(os.O_CLOEXEC)
    try:
        forked = await zygote.fork(CHILD_ENTRY, config, [out_write, err_write], spec.component)
    except BaseException:
        socket.close()
        _unlink(path)
        os.close(out_read)
        os.close(err_read)
        raise
    finally:
        os.close(out_write)
        os.close(err_write)
    sink = on_output or default_output_sink
    pumps = [
        OutputPump(out_read, spec.component, "stdout", sink),
        OutputPump(err_read, spec.component, "stderr", sink),
    ]
    child = ChildProcess(zygote, spec, forked, socket, path, token, pumps, on_log)
    await child._start(services, service_classes, None if inline else init)
    return child


def _fits_inline(spec: ChildSpec, init: dict[str, Any]) -> bool:
    """Whether ``init`` may travel with the job (else it is sent on the channel after hello)."""
    try:
        size = len(msgpack.packb(init))
    except (TypeError, ValueError, OverflowError) as exc:
        raise ChildStartError(
            f"cannot start {spec.component}: its payload is not msgpack data ({exc}); "
            "pass plain data (dicts, lists, strings, numbers) as the payload"
        ) from exc
    return size <= _INLINE_INIT_BYTES


def _service_classes(spec: ChildSpec, services: Mapping[str, object]) -> dict[str, type]:
    missing = sorted(set(spec.services) - set(services))
    if missing:
        raise ChildStartError(
            f"cannot start {spec.component}: no object given for service(s) {', '.join(missing)}"
        )
    classes: dict[str, type] = {}
    for name, class_name in spec.services.items():
        try:
            cls = resolve(class_name, what=f"service {name!r} of {spec.component}")
            # Checked here, before anything is forked: the child builds its proxies from it.
            remote_interface(cls, LIFECYCLE)
        except (ImportError, SerializationError) as exc:
            raise ChildStartError(f"cannot start {spec.component}: {exc}") from exc
        classes[name] = cls
    return classes


class ChildProcess:
    """A running isolated child. Reach its component with ``proxy(cls)``; end it with ``stop()``."""

    def __init__(
        self,
        zygote: Zygote,
        spec: ChildSpec,
        forked: Forked,
        socket: zmq.asyncio.Socket,
        path: str,
        token: str,
        pumps: list[OutputPump],
        on_log: LogSink | None,
    ) -> None:
        self.pid = forked.pid
        self.component = spec.component
        self.spec = spec
        self._zygote = zygote
        self._limits = spec.isolation
        self._pidfd = forked.pidfd
        self._socket = socket
        self._path = path
        self._token = token
        self._pumps = pumps
        self._on_log = on_log or default_log_sink
        self._state = ChildState.STARTING
        loop = self._loop = asyncio.get_running_loop()
        self._ready: asyncio.Future[None] = loop.create_future()
        self._exit: asyncio.Future[ChildExit] = loop.create_future()
        self._died = asyncio.Event()
        self._reported = asyncio.Event()
        self._report: dict[str, Any] | None = None
        self._failure: ChildStartError | None = None
        self._verdict: ChildExit | None = None
        self._hello = False
        self._run_started = False
        self._init: dict[str, Any] | None = None  # sent after hello when too big to go inline
        self._last_beat = loop.time()
        self._services: Mapping[str, object] = {}
        self._service_classes: Mapping[str, type] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._log_limiter = LogLimiter(LOG_EVENTS_PER_SECOND, LOG_EVENTS_BURST)
        self._dropped_reported = -1.0
        self._peer = Peer(
            socket,
            component=spec.component,
            on_control=self._on_control,
            max_calls_in_flight=spec.isolation.max_calls_in_flight,
            max_streams_open=spec.isolation.max_streams_open,
        )
        loop.add_reader(self._pidfd, self._on_death)
        zygote.adopt(self)
        self._monitor = socket.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        self._spawn_task(self._watch_connection())
        self._spawn_task(self._receive())
        self._finisher = loop.create_task(self._finish())

    def __repr__(self) -> str:
        return f"<ChildProcess {self.component} pid={self.pid} {self._state.value}>"

    @property
    def state(self) -> ChildState:
        return self._state

    @property
    def channel(self) -> Peer:
        """The Peer of the child's channel (a router sends calls over it)."""
        return self._peer

    def proxy(self, cls: type) -> Any:
        """A proxy to the component the child built, with the methods of ``cls``."""
        return self._peer.proxy(COMPONENT, cls, exclude=LIFECYCLE)

    def start_run(self) -> None:
        """Let a child spawned with ``hold_run`` call its component's ``run()`` (once it is
        READY; idempotent, and harmless for a child that was not held)."""
        if self._state is ChildState.RUNNING and not self._run_started:
            self._run_started = True
            with contextlib.suppress(ComponentCrashed):
                self._peer.send_control("run")

    async def wait(self) -> ChildExit:
        """Wait for the child to end, for whatever reason, and say how it ended."""
        return await asyncio.shield(self._exit)

    async def stop(self, timeout: float | None = None) -> ChildExit:  # noqa: ASYNC109 - a grace period
        """Stop the child: ask, wait ``timeout`` (default ``stop_timeout``), SIGTERM, SIGKILL.

        Idempotent; concurrent and repeated calls share one stop and return the same exit.
        """
        if self._state is ChildState.RUNNING:
            self._state = ChildState.STOPPING
            grace = self._limits.stop_timeout if timeout is None else timeout
            self._spawn_task(self._escalate(grace))
        return await asyncio.shield(self._exit)

    async def kill_on_close(self) -> None:
        """Kill at once (the zygote is closing) and wait until the child is reaped."""
        if not self._exit.done():
            self._kill(ChildExit("stopped", "killed because its zygote was closed"))
            await asyncio.shield(self._exit)

    # -- start ------------------------------------------------------------------------------

    async def _start(
        self,
        services: Mapping[str, object],
        classes: Mapping[str, type],
        init: dict[str, Any] | None,
    ) -> None:
        self._services = services
        self._service_classes = classes
        self._init = init
        timeout = self._limits.start_timeout
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), timeout)
        except TimeoutError:
            self._kill(ChildExit("died", f"was not ready within {timeout:g} s; killed"))
            await asyncio.shield(self._exit)
            raise ChildStartError(
                f"{self.component} did not become ready within {timeout:g} s "
                "(raise Isolation.start_timeout if its startup is slow)"
            ) from None
        except BaseException:
            if not self._exit.done():
                self._kill(ChildExit("died", "start abandoned; killed"))
            await asyncio.shield(self._exit)
            raise
        self._state = ChildState.RUNNING
        self._last_beat = self._loop.time()
        self._spawn_task(self._watch_heartbeats())

    # -- messages from the child --------------------------------------------------------------

    def _on_control(self, kind: str, body: Any) -> None:
        if kind == "heartbeat":
            self._last_beat = self._loop.time()
        elif kind == "log":
            self._forward_log(body)
        elif kind == "hello" and not self._hello:
            self._on_hello(body)
        elif kind == "ready" and self._hello and not self._ready.done():
            self._ready.set_result(None)
            classes = body.get("classes") if isinstance(body, dict) else None
            if isinstance(classes, list):
                self._zygote.warm([*classes, *self.spec.services.values()])
        elif kind == "failed" and self._hello and not self._ready.done():
            self._on_failed(body)
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
        self._hello = True
        for name, obj in self._services.items():
            if name in self._service_classes:
                self._peer.serve(name, obj, self._service_classes[name], exclude=LIFECYCLE)
        if self._init is not None:
            self._peer.send_control("init", self._init)
        if not self._zygote.trusted:
            self._peer.send_control("seal", {"data_limit": self._data_limit()})
        self._spawn_task(self._send_heartbeats())

    def _data_limit(self) -> int | None:
        """The memory limit of a sandboxed child, which cannot measure itself (no /proc)."""
        if self._limits.memory_mb is None:
            return None
        try:
            with open(f"/proc/{self.pid}/status", encoding="ascii") as status:
                for line in status:
                    if line.startswith("VmData:"):
                        return int(line.split()[1]) * 1024 + self._limits.memory_mb * MIB
        except OSError:
            pass
        return None

    def _on_failed(self, body: Any) -> None:
        report = ErrorReport.from_data(body)
        if isinstance(body, dict) and body.get("memory") is True:
            reason = self._limits.memory_cause()
        else:
            reason = f"{report.type}: {report.message}"
        self._failure = ChildStartError(f"{self.component} failed to start: {reason}")
        if report.traceback:
            self._failure.add_note(f"Remote traceback ({self.component}):\n{report.traceback}")
        self._report = {"reason": "failed", "cause": f"failed to start: {reason}"}
        self._reported.set()
        self._ready.set_exception(self._failure)

    def _forward_log(self, body: Any) -> None:
        if not isinstance(body, dict):
            self._violation("sent a log event that is not a map")
            return
        limiter = self._log_limiter
        now = self._loop.time()
        if not limiter.admit(now):
            return
        dropped = limiter.dropped
        if dropped and now - self._dropped_reported >= 1.0:  # one report a second at most
            self._dropped_reported = now
            limiter.take_dropped()
            self._emit_log(
                {
                    "event": "child.logs_dropped",
                    "level": "warning",
                    "dropped": dropped,
                    "reason": f"over {LOG_EVENTS_PER_SECOND} log events per second",
                }
            )
        self._emit_log(bounded_event(body))

    def _emit_log(self, event: dict[str, Any]) -> None:
        try:
            self._on_log(self.component, event)
        except Exception as exc:
            self._loop.call_exception_handler(
                {"message": f"log callback failed for {self.component}", "exception": exc}
            )

    async def _receive(self) -> None:
        try:
            await self._peer.run()
        except ProtocolError as exc:
            self._violation(f"sent a malformed frame: {exc}")

    async def _watch_connection(self) -> None:
        """Kill a child that lives on after its connection dropped.

        ZeroMQ drops a frame over the size limit together with the connection that carried it
        (and the child's socket reconnects); a child that ends closes its connection too, and
        dies a moment later, so only a child still alive after a grace period is killed.
        """
        # The monitor is read without pause until the child is released, and closed only after
        # the channel's socket stopped reporting to it: ZeroMQ blocks the thread reporting an
        # event to a monitor that is not read.
        checking = False
        while True:
            event = parse_monitor_message(await self._monitor.recv_multipart())
            if event["event"] == zmq.EVENT_DISCONNECTED and self._report is None and not checking:
                checking = True
                self._spawn_task(self._check_dropped())

    async def _check_dropped(self) -> None:
        if not await self._died_within(_DISCONNECT_GRACE_SECONDS):
            self._violation(
                "sent a malformed frame: its connection dropped while it lived on (a frame "
                f"over the {DEFAULT_MAX_FRAME_BYTES}-byte limit is dropped with the connection "
                "that carried it)"
            )

    # -- deciding to end it ---------------------------------------------------------------------

    def _violation(self, what: str) -> None:
        self._kill(ChildExit("protocol", f"{what}; killed"))

    def _kill(self, verdict: ChildExit, signum: int = signal.SIGKILL) -> None:
        if self._verdict is None or signum == signal.SIGKILL:
            self._verdict = verdict
        self._signal(signum)

    def _signal(self, signum: int) -> None:
        if self._died.is_set():
            return
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(self._pidfd, signum)

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
                # Give the receiver one more turn: after a stall of our own loop, heartbeats
                # may be waiting unread in the socket.
                await asyncio.sleep(min(self._limits.heartbeat_interval, 0.05))
                if self._loop.time() - self._last_beat >= timeout:
                    if self._state is ChildState.RUNNING:
                        self._kill(ChildExit("hung", f"no heartbeat for {timeout:g} s; killed"))
                    return
                continue
            await asyncio.sleep(-late)

    async def _escalate(self, grace: float) -> None:
        with contextlib.suppress(Exception):
            self._peer.send_control("stop")
        if await self._died_within(grace):
            return
        self._kill(
            ChildExit("stopped", f"did not stop within {grace:g} s; terminated with SIGTERM"),
            signal.SIGTERM,
        )
        if await self._died_within(min(grace, _TERM_GRACE_SECONDS)):
            return
        self._kill(ChildExit("stopped", f"did not stop within {grace:g} s nor on SIGTERM; killed"))

    async def _died_within(self, seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._died.wait(), seconds)
        return self._died.is_set()

    # -- the end ------------------------------------------------------------------------------

    def _on_death(self) -> None:
        self._loop.remove_reader(self._pidfd)
        self._died.set()

    async def _finish(self) -> None:
        await self._died.wait()
        status: ExitStatus | None = None
        with contextlib.suppress(TimeoutError):
            status = await asyncio.wait_for(
                self._zygote.exit_status(self.pid), _STATUS_GRACE_SECONDS
            )
        if status is not None and status.status == 0 and self._report is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reported.wait(), _REPORT_GRACE_SECONDS)
        ended = self._describe(status)
        self._state = ChildState.EXITED
        try:
            await self._release(ended)
        finally:
            # Whatever failed above, wait() and stop() must not hang on a dead child.
            self._exit.set_result(ended)

    async def _release(self, ended: ChildExit) -> None:
        """Fail what waits on the child and close everything it held."""
        await asyncio.gather(*(pump.drained(_OUTPUT_GRACE_SECONDS) for pump in self._pumps))
        if not self._ready.done():
            error = ChildStartError(f"{self.component} {ended.cause} before it was ready")
            stderr = "\n".join(self._pumps[1].tail)
            if stderr:
                error.add_note(f"Last lines on its stderr:\n{stderr}")
            self._ready.set_exception(error)
        crashed = ComponentCrashed(f"{self.component} {ended.cause}", component=self.component)
        self._peer.fail_pending(crashed)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            await self._peer.aclose()
        finally:
            with contextlib.suppress(zmq.ZMQError):
                self._socket.disable_monitor()
            self._monitor.close(linger=0)
            self._socket.close()
            _unlink(self._path)
            os.close(self._pidfd)
            self._zygote.forget(self)

    def _describe(self, status: ExitStatus | None) -> ChildExit:
        code = signum = None
        if status is not None:
            if os.WIFEXITED(status.status):
                code = os.WEXITSTATUS(status.status)
            elif os.WIFSIGNALED(status.status):
                signum = os.WTERMSIG(status.status)
        report = self._report
        if report is not None:
            reason = report.get("reason")
            error = report.get("error")
            if reason == "returned":
                return ChildExit("returned", "run() returned", code, signum)
            if reason == "stopped":
                return ChildExit("stopped", "stopped on request", code, signum)
            if reason in ("raised", "memory") and isinstance(error, dict):
                raised = ErrorReport.from_data(error)
                remote = raised.rebuild(self.component, "run")
                if reason == "memory":
                    return ChildExit("memory", self._limits.memory_cause(), code, signum, remote)
                cause = f"run() raised {raised.type}: {raised.message}"
                return ChildExit("raised", cause, code, signum, remote)
            if reason == "failed":
                return ChildExit("raised", str(report.get("cause")), code, signum, self._failure)
        if self._verdict is not None:
            return replace(self._verdict, exit_code=code, signal=signum)
        if status is None:
            return ChildExit("died", "ended; its exit status is unknown (the zygote is gone)")
        return describe_status(status.status, cpu_time=status.cpu_time, isolation=self._limits)

    def _spawn_task(self, coro: Any) -> None:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
