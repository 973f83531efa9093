"""The zygote: a warm, single-threaded process that forks isolated children on request.

Starting a Python interpreter and importing a user's program takes hundreds of milliseconds;
forking a process that already has everything imported takes about one. So the runtime forks
the zygote once, early (``Zygote.start``, synchronous, ideally before any event loop, thread or
ZeroMQ context exists), and every isolated child — first start and every restart — is a fork of
the zygote. The zygote holds the user's modules as they were when it was forked, including the
``__main__`` of a one-file script without an ``if __name__ == "__main__"`` guard: children find
the script's classes already defined, and nothing is imported twice.

::

    runtime ──socketpair (msgpack, SOCK_SEQPACKET, fds attached)── zygote
       │                                                              │ fork
       └──────────── ZeroMQ ipc:// (calls, heartbeats, logs) ───── child, child, ...

The zygote's side — its protocol (``fork``, ``warm``, ``exit`` in; ``forked``, ``fork_failed``,
``exited`` out), the warm spare it keeps, the reaping — is ``_zygote_loop``; this module is the
runtime's side. ``warm_codecs`` runs before the fork, so that neither the zygote nor any child
pays for initialising the value codecs.

Children are the zygote's children, so the zygote reaps them (it waits on their pidfds, so it
needs no SIGCHLD handler) and reports each status. The runtime learns of a death at the same
instant from its own copy of the pidfd, which is also how it signals a child without any risk of
hitting a recycled pid. The zygote dies with the runtime and each child with the zygote (see
``_lifeline``).

A *sandbox zygote* (``isolation._sandbox_zygote``) speaks the same protocol but is not trusted:
it is a fresh interpreter that imported a sandboxed component's code. Its messages are checked
like any child's (their shape, their number per pass of the event loop), the descriptors it
sends are closed unread, and the pidfd of each child it reports is opened here, for a process
whose parent it must be — so it cannot have the runtime signal a process of its choosing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import zmq.asyncio

from ._errors import ChildStartError, IsolationError
from ._fork import shed_parent_state
from ._lifeline import die_with_parent
from ._platform import unsupported_reason
from ._zygote_loop import MAX_MESSAGE_BYTES, ZygoteLoop, pack, unpack, warm_codecs

__all__ = ["Adopted", "ExitStatus", "Forked", "Zygote"]

#: AF_UNIX socket paths are limited to 108 bytes including the terminating NUL.
_MAX_SOCKET_PATH = 107
#: Room left in the private directory's path for socket names like "/c12345".
_SOCKET_NAME_ROOM = 16
#: How long the zygote may take to kill and reap its children on ``exit`` before it is killed.
_ZYGOTE_EXIT_SECONDS = 5.0
#: Messages from the zygote handled per pass of the event loop.
_MESSAGES_PER_WAKEUP = 64
#: Longest text (an error) kept from an untrusted zygote's message.
_MAX_TEXT = 4000


@dataclass(frozen=True)
class Forked:
    """A freshly forked child: its pid and a pidfd the caller now owns (and must close)."""

    pid: int
    pidfd: int


@dataclass(frozen=True)
class ExitStatus:
    """What the zygote reported after reaping a child: raw wait status and CPU seconds used."""

    status: int
    cpu_time: float


class Adopted(Protocol):
    """A child the zygote tracks from its fork on (a ``ChildProcess``), to end it on close."""

    async def kill_on_close(self) -> None:
        """Kill at once and wait until the child is reaped."""
        ...


class Zygote:
    """A warm process that forks isolated children; one per runtime.

    Create it with ``Zygote.start(run_dir=...)``, spawn children with
    ``await isolation.spawn(zygote, ...)``, and end it with ``await aclose()``, which kills and
    reaps every child and the zygote. The first spawn binds it to the running event loop.
    """

    def __init__(
        self,
        pid: int,
        channel: socket.socket,
        private_dir: Path,
        *,
        process: subprocess.Popen[bytes] | None = None,
        name: str = "zygote",
    ) -> None:
        self.pid = pid
        self.private_dir = private_dir
        #: Untrusted (a sandbox zygote): started as ``process``, a fresh interpreter.
        self.trusted = process is None
        self.name = name
        self._process = process
        self._channel = channel
        self._booted: asyncio.Future[None] | None = None
        self._pumps: list[Any] = []  # OutputPumps of an untrusted zygote's stdout and stderr
        self._loop: asyncio.AbstractEventLoop | None = None
        self._next_id = 0
        self._pending: dict[int, asyncio.Future[Forked]] = {}
        self._statuses: dict[int, ExitStatus] = {}
        self._status_waiters: dict[int, asyncio.Future[ExitStatus | None]] = {}
        self._children: set[Adopted] = set()
        self._gone: asyncio.Event | None = None
        self._closed = False
        self._zmq: zmq.asyncio.Context | None = None
        self._socket_names = 0
        self._warmed: set[str] = set()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("gone" if self.gone else "running")
        kind = "" if self.trusted else f" sandbox of {self.name}"
        return f"<Zygote{kind} pid={self.pid} {state}, {len(self._children)} children>"

    @classmethod
    def start(cls, *, run_dir: Path, spare: bool = True) -> Zygote:
        """Fork the zygote now. Call it early, from the main thread.

        The zygote dies when the thread that called this exits, so a worker thread is the wrong
        place. It may be called inside a running event loop. With ``spare`` (the default) the
        zygote keeps one child forked and warmed up ahead of time, which makes a start or
        restart several times faster for the memory of one idle process.
        """
        problem = unsupported_reason()
        if problem is not None:
            raise IsolationError(problem)
        private_dir = _make_private_dir(Path(run_dir))
        warm_codecs()
        parent_end, zygote_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        parent_pid = os.getpid()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        try:
            pid = os.fork()
        except OSError as exc:
            parent_end.close()
            zygote_end.close()
            shutil.rmtree(private_dir, ignore_errors=True)
            raise IsolationError(f"cannot fork the zygote: {exc}") from exc
        if pid == 0:  # pragma: no cover - runs in the zygote, which never returns
            code = 1
            try:
                die_with_parent(parent_pid)
                shed_parent_state(keep_fds=[zygote_end.fileno()])
                code = ZygoteLoop(zygote_end, spare=spare).run()
            except BaseException:
                with contextlib.suppress(BaseException):
                    traceback.print_exc()
            finally:
                os._exit(code)
        zygote_end.close()
        return cls(pid, parent_end, private_dir)

    def adopt_pumps(self, pumps: Sequence[Any]) -> None:
        """Output pumps reading this zygote's stdout and stderr, closed with it."""
        self._pumps.extend(pumps)

    def expect_boot(self) -> asyncio.Future[None]:
        """A future resolved by the zygote's ``ready`` (or failed by ``boot_failed``, or by its
        end); starts reading its messages."""
        loop = self._attach()
        if self._booted is None:
            self._booted = loop.create_future()
        return self._booted

    @property
    def gone(self) -> bool:
        """True once the zygote process has ended (closed, or died unexpectedly)."""
        return self._gone is not None and self._gone.is_set()

    async def aclose(self) -> None:
        """Kill and reap every child, then the zygote; remove the private directory."""
        if self._closed:
            return
        self._closed = True
        try:
            children = list(self._children)
            await asyncio.gather(*(child.kill_on_close() for child in children))
            if not self.gone:
                with contextlib.suppress(OSError):
                    self._send({"op": "exit"})
        finally:
            await self._reap_zygote()
            self._detach()
            self._channel.close()
            if self._zmq is not None:
                self._zmq.destroy(linger=0)  # closes any socket a failed start left open
            for pump in self._pumps:
                await pump.drained(0.5)
            shutil.rmtree(self.private_dir, ignore_errors=True)

    def warm(self, classes: Sequence[str]) -> None:
        """Have the zygote prepare the remote interfaces of these ``"module:qualname"`` classes.

        Every later child inherits them ready-made instead of building them (a model-heavy
        interface costs tens of milliseconds). ``ChildProcess`` calls this when a child is READY,
        so that its restarts are fast; names already sent are skipped.
        """
        fresh = [name for name in classes if name not in self._warmed]
        if not fresh or self._closed or self.gone:
            return
        self._warmed.update(fresh)
        with contextlib.suppress(OSError, IsolationError):
            self._send({"op": "warm", "classes": fresh})

    # -- used by ChildProcess -------------------------------------------------------------

    def check_open(self, component: str) -> None:
        """Raise ``ChildStartError`` naming ``component`` if no child can be forked now."""
        if self._closed:
            raise ChildStartError(f"cannot start {component}: the zygote is closed")
        if self.gone:
            raise ChildStartError(
                f"cannot start {component}: the zygote (pid {self.pid}) has died; "
                "start a new one with Zygote.start()"
            )

    def adopt(self, child: Adopted) -> None:
        """Track a child from its fork on, so that ``aclose`` also ends one still starting."""
        self._children.add(child)

    def forget(self, child: Adopted) -> None:
        self._children.discard(child)

    def socket_path(self, name: str) -> str:
        return str(self.private_dir / name)

    def next_socket_name(self) -> str:
        self._socket_names += 1
        return f"c{self._socket_names}"

    def zmq_context(self) -> zmq.asyncio.Context:
        """The parent's ZeroMQ context for child channels, created after the zygote's fork."""
        if self._zmq is None:
            self._zmq = zmq.asyncio.Context()
        return self._zmq

    async def fork(self, entry: str, args: Any, stdio: Sequence[int], component: str) -> Forked:
        """Ask the zygote to fork a child running ``entry(args)`` with ``stdio`` as fds 1 and 2.

        ``entry`` is a "module:function" name resolved in the child.
        """
        self.check_open(component)
        loop = self._attach()
        request_id = self._next_id
        self._next_id += 1
        future: asyncio.Future[Forked] = loop.create_future()
        self._pending[request_id] = future
        try:
            self._send({"op": "fork", "id": request_id, "entry": entry, "args": args}, stdio)
        except OSError as exc:
            del self._pending[request_id]
            raise ChildStartError(f"cannot reach the zygote to start {component}: {exc}") from exc
        # If the caller is cancelled, the future is too, and a late "forked" reply kills the
        # orphan (see _dispatch).
        return await future

    async def exit_status(self, pid: int) -> ExitStatus | None:
        """The wait status of ``pid`` once the zygote has reaped it; None if the zygote is gone."""
        if pid in self._statuses:
            return self._statuses.pop(pid)
        if self.gone or self._loop is None:
            return None
        waiter = self._status_waiters.get(pid)
        if waiter is None:
            waiter = self._status_waiters[pid] = self._loop.create_future()
        try:
            return await waiter
        finally:
            self._status_waiters.pop(pid, None)
            self._statuses.pop(pid, None)

    # -- internals --------------------------------------------------------------------------

    def _attach(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
            self._gone = asyncio.Event()
            self._channel.setblocking(False)
            loop.add_reader(self._channel.fileno(), self._on_readable)
        elif self._loop is not loop:
            raise IsolationError("this Zygote is already used by another event loop")
        return loop

    def _detach(self) -> None:
        if self._loop is not None and self._channel.fileno() >= 0:
            self._loop.remove_reader(self._channel.fileno())

    def _send(self, message: Mapping[str, Any], fds: Sequence[int] = ()) -> None:
        # Messages are small and the zygote reads promptly, so a full buffer means it is stuck.
        if fds:
            socket.send_fds(self._channel, [pack(message)], list(fds))
        else:
            self._channel.send(pack(message))

    def _on_readable(self) -> None:
        for _ in range(_MESSAGES_PER_WAKEUP):
            try:
                data, fds, _, _ = socket.recv_fds(self._channel, MAX_MESSAGE_BYTES, 4)
            except BlockingIOError:
                return
            except OSError:
                data, fds = b"", []
            if not data:
                for fd in fds:
                    os.close(fd)
                self._on_gone()
                return
            kept: int | None = None
            try:
                kept = self._dispatch(unpack(data), fds if self.trusted else [])
            except (IsolationError, KeyError, TypeError, ValueError, OSError) as exc:
                if not self.trusted:
                    self._misbehaved(f"sent a message outside its protocol ({exc})")
            finally:
                for fd in fds:
                    if fd != kept:
                        os.close(fd)
        # More may be waiting: the descriptor stays readable and the loop calls again.

    def _misbehaved(self, what: str) -> None:
        """An untrusted zygote broke its protocol: it is killed, and its children with it."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        message = f"the sandbox zygote of {self.name} {what}; killed"
        if self._loop is not None:
            self._loop.call_exception_handler({"message": message})

    def _dispatch(self, message: dict[str, Any], fds: list[int]) -> int | None:
        """Act on one message; return the descriptor kept from ``fds`` (the rest are closed)."""
        op = message["op"]
        if op == "forked":
            future = self._pending.pop(_integer(message["id"]))
            pid = _integer(message["pid"])
            try:
                pidfd = fds[0] if self.trusted else self._open_child(pid)
            except ProcessLookupError:  # it ended at once (and was collected): no child
                if not future.done():
                    future.set_exception(ChildStartError(f"the child (pid {pid}) ended at once"))
                return None
            except Exception as exc:
                if not future.done():
                    future.set_exception(
                        ChildStartError(f"the zygote of {self.name} reported a bad child: {exc}")
                    )
                raise
            forked = Forked(pid, pidfd)
            if future.done():
                _kill_orphan(forked)
            else:
                future.set_result(forked)
            return pidfd if self.trusted else None
        if op == "fork_failed":
            future = self._pending.pop(_integer(message["id"]))
            if not future.done():
                error = str(message["error"])[:_MAX_TEXT]
                future.set_exception(ChildStartError(f"the zygote could not fork: {error}"))
        elif op == "exited":
            status = ExitStatus(_integer(message["status"]), _seconds(message["cpu_time"]))
            pid = _integer(message["pid"])
            waiter = self._status_waiters.get(pid)
            if waiter is not None and not waiter.done():
                waiter.set_result(status)
            elif len(self._statuses) < 1024:  # nobody asked: kept for a while, bounded
                self._statuses[pid] = status
        elif op in ("ready", "boot_failed") and self._booted is not None:
            if not self._booted.done():
                if op == "ready":
                    self._booted.set_result(None)
                else:
                    self._booted.set_exception(_BootFailed(message.get("error")))
        elif not self.trusted:
            raise IsolationError(f"unknown operation {str(op)[:40]!r}")
        return None

    def _open_child(self, pid: int) -> int:
        """A pidfd for ``pid``, which must be a child of this (untrusted) zygote."""
        pidfd = os.pidfd_open(pid)
        if _parent_of(pid) != self.pid:
            os.close(pidfd)
            raise IsolationError(f"reported process {pid}, which is not its child")
        return pidfd

    def _on_gone(self) -> None:
        self._detach()
        assert self._gone is not None
        self._gone.set()
        error = ChildStartError(f"the zygote (pid {self.pid}) died while starting a child")
        if self._booted is not None and not self._booted.done():
            self._booted.set_exception(OSError(f"it ended (pid {self.pid})"))
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        self._pending.clear()
        for waiter in self._status_waiters.values():
            if not waiter.done():
                waiter.set_result(None)

    async def _reap_zygote(self) -> None:
        """Wait for the zygote to leave after ``exit`` (bounded), kill it if it does not, reap."""
        try:
            pidfd = os.pidfd_open(self.pid)
        except ProcessLookupError:
            self._reaped()
            return
        try:
            loop = asyncio.get_running_loop()
            exited: asyncio.Future[None] = loop.create_future()
            loop.add_reader(pidfd, _resolve, exited)
            try:
                await asyncio.wait_for(asyncio.shield(exited), _ZYGOTE_EXIT_SECONDS)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                await exited
            finally:
                loop.remove_reader(pidfd)
        finally:
            os.close(pidfd)
        self._reaped()

    def _reaped(self) -> None:
        """Collect the zygote, which has exited."""
        if self._process is not None:
            # What it forked and could not stop goes too: its process group, which it may not
            # leave. Before it is collected, while its pid (the group's id) cannot be reused.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
            self._process.wait()
        else:
            _reap_exited(self.pid)


class _BootFailed(Exception):
    """A sandbox zygote could not enter its sandbox or load the component's code."""

    def __init__(self, report: object) -> None:
        super().__init__(report)
        self.report = report


def _integer(value: object) -> int:
    if type(value) is not int or not 0 <= value < 2**63:
        raise TypeError(f"expected a non-negative integer, got {str(value)[:40]!r}")
    return value


def _seconds(value: object) -> float:
    if not (type(value) is int or type(value) is float) or not 0 <= value < 2**63:
        raise TypeError(f"expected seconds, got {str(value)[:40]!r}")
    return float(value)


def _parent_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            data = stat.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2 :].split()
    return int(fields[1]) if len(fields) > 1 else None


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _reap_exited(pid: int) -> None:
    """Collect a child whose pidfd has shown it exited (so this does not block)."""
    os.waitpid(pid, os.WNOHANG)


def _kill_orphan(forked: Forked) -> None:
    """Kill a child whose spawn was abandoned; the zygote still reaps it."""
    with contextlib.suppress(ProcessLookupError):
        signal.pidfd_send_signal(forked.pidfd, signal.SIGKILL)
    os.close(forked.pidfd)


def _make_private_dir(run_dir: Path) -> Path:
    """A fresh 0700 directory for this runtime's sockets, under ``run_dir`` when paths fit."""
    run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if len(str(run_dir.resolve())) + 12 + _SOCKET_NAME_ROOM <= _MAX_SOCKET_PATH:
        return Path(tempfile.mkdtemp(prefix="ipc-", dir=run_dir)).resolve()
    # A deep project folder would make socket paths too long for AF_UNIX; the system's temporary
    # directory keeps them short, and mkdtemp still makes the directory private (0700).
    return Path(tempfile.mkdtemp(prefix="minions-ipc-")).resolve()
