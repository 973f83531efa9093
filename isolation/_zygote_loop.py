"""Inside the zygote: fork children on request, keep a warm spare, reap, report.

The zygote is single-threaded and synchronous: one selector over the runtime's socket and a
pidfd per child. A readable pidfd means a child ended; the zygote reaps it with ``wait4`` (so it
needs no SIGCHLD handler) and reports the wait status and CPU time to the runtime.

**The spare.** Even a fork of a warm process pays for what the new child does first: every page
it writes is copied, and a fresh event loop and ZeroMQ context touch a lot of them. So the
zygote keeps one child forked *ahead of time*, with its event loop and ZeroMQ context already
made, blocked on a socketpair until it is given a job. A ``fork`` request hands the job (entry
point, arguments, stdout/stderr pipes) to the spare, and the runtime gets its pid at once; a
new spare is forked when the zygote has been quiet for ``SPARE_DELAY`` seconds, so that making
it never competes with a child that is starting. Without a spare ready, the zygote forks on the
spot. (Android's zygote keeps a pool of unspecialised processes for the same reason.)

**Warming.** When a child is READY the runtime sends ``warm`` with the names of its classes;
the zygote builds their remote interfaces (validation schemas can take tens of milliseconds)
so that later children inherit them, and replaces its spare, which was forked before.

Protocol with the runtime, one msgpack map per SOCK_SEQPACKET packet:

- runtime → zygote: ``fork {id, entry, args}`` (stdout/stderr pipe ends attached),
  ``warm {classes}``, ``exit``;
- zygote → runtime: ``forked {id, pid}`` (a pidfd attached), ``fork_failed {id, error}``,
  ``exited {pid, status, cpu_time}``.
"""

from __future__ import annotations

import contextlib
import os
import select
import selectors
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgpack  # type: ignore[import-untyped]  # ships no type information

from . import _child  # noqa: F401 - loaded here so that every fork of the zygote has it
from ._channel import LIFECYCLE
from ._errors import IsolationError
from ._fork import close_fds_except, fresh_stdio
from ._interface import remote_interface
from ._lifeline import die_with_parent
from ._protocol import unpack_untrusted
from ._spare import prepare as prepare_spare
from ._spec import resolve

__all__ = ["MAX_MESSAGE_BYTES", "ZygoteLoop", "pack", "unpack", "warm_codecs"]

#: Upper bound on one zygote protocol message; they carry only small control data.
MAX_MESSAGE_BYTES = 64 * 1024
#: Quiet time after a fork before the next spare is made.
SPARE_DELAY = 0.05


def pack(message: Mapping[str, Any]) -> bytes:
    data: bytes = msgpack.packb(message)
    if len(data) > MAX_MESSAGE_BYTES:
        raise IsolationError(
            f"zygote message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}; "
            "pass large data to the child over its channel instead"
        )
    return data


def unpack(data: bytes) -> dict[str, Any]:
    try:
        message = unpack_untrusted(data)
    except (ValueError, msgpack.UnpackException) as exc:
        raise IsolationError(f"malformed zygote message: {exc}") from exc
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        raise IsolationError(f"malformed zygote message: {message!r}")
    return message


class _Builtins:
    """Annotations every interface uses; building them once warms the codec machinery."""

    async def call(
        self, a: int, b: float, c: str, d: bytes, e: bool, f: None, g: Any, h: list[Any]
    ) -> dict[str, Any]:
        raise NotImplementedError


def warm_codecs() -> None:
    """Build the codecs of the builtin types now, so that no fork has to.

    The first codec a process builds initialises the validation library, tens of milliseconds
    that every child would otherwise pay on each start; done before the zygote is forked, the
    parent and every child share the result.
    """
    remote_interface(_Builtins)


@dataclass
class _Spare:
    pid: int
    job: socket.socket  # where the zygote sends the spare its job


class ZygoteLoop:
    """The zygote's main loop; ``run()`` returns the zygote's exit code.

    ``child_setup`` runs first thing in every child (and spare) after the fork, while it is
    single-threaded (a sandbox zygote passes the sandbox's per-child step); with ``warm`` off,
    ``warm`` requests are ignored (a sandbox zygote runs no code of the component after it
    started).
    """

    def __init__(
        self,
        channel: socket.socket,
        *,
        spare: bool,
        child_setup: Callable[[], None] | None = None,
        warm: bool = True,
    ) -> None:
        self._channel = channel
        self._child_setup = child_setup
        self._accept_warm = warm
        self._selector = selectors.DefaultSelector()
        self._selector.register(channel, selectors.EVENT_READ, None)
        self._children: dict[int, int] = {}  # pid -> pidfd, the spare included
        self._pid = os.getpid()
        self._want_spare = spare
        self._spare: _Spare | None = None
        self._discarded: set[int] = set()  # spares killed unused: their ends are not reported
        self._spare_due: float | None = time.monotonic() if spare else None

    def run(self) -> int:
        while True:
            timeout = None
            if self._spare_due is not None:
                timeout = max(0.0, self._spare_due - time.monotonic())
            for key, _ in self._selector.select(timeout):
                if key.data is None:
                    if not self._serve_one():
                        self._kill_all()
                        return 0
                else:
                    self._reap(key.data)
            if self._spare_due is not None and time.monotonic() >= self._spare_due:
                self._spare_due = None
                self._make_spare()

    def _serve_one(self) -> bool:
        try:
            data, fds, _, _ = socket.recv_fds(self._channel, MAX_MESSAGE_BYTES, 4)
        except OSError:
            return False
        if not data:
            return False
        try:
            message = unpack(data)
            if message["op"] == "exit":
                return False
            if message["op"] == "fork":
                self._fork(message, fds)
            elif message["op"] == "warm" and self._accept_warm:
                self._warm(message["classes"])
        finally:
            for fd in fds:
                os.close(fd)
        return True

    def _fork(self, message: dict[str, Any], stdio: list[int]) -> None:
        job = {"entry": message["entry"], "args": message["args"]}
        spare, self._spare = self._spare, None
        if self._want_spare:
            self._spare_due = time.monotonic() + SPARE_DELAY
        if spare is not None and not _has_exited(self._children[spare.pid]):
            # Reply first: once the spare has its job it competes with us for a CPU, and the
            # runtime can set up its side of the channel while the spare starts.
            self._reply_forked(message["id"], spare.pid)
            with contextlib.suppress(OSError):  # if it died just now, _reap reports it
                socket.send_fds(spare.job, [msgpack.packb(job)], stdio)
            spare.job.close()
            return
        if spare is not None:
            spare.job.close()
        try:
            pid = self._fork_child(lambda: _run_child(job, stdio, self._pid, self._child_setup))
        except OSError as exc:
            self._send({"op": "fork_failed", "id": message["id"], "error": str(exc)})
            return
        self._reply_forked(message["id"], pid)

    def _warm(self, classes: list[str]) -> None:
        for name in classes:
            if name.partition(":")[0] not in sys.modules:
                # Importing here could start threads in the zygote, and forking a threaded
                # process is unsafe; children keep building what the parent never imported.
                continue
            # Best effort: a class that cannot be prepared here is prepared by each child.
            with contextlib.suppress(Exception):
                remote_interface(resolve(name, what="class"), LIFECYCLE)
        spare, self._spare = self._spare, None
        if spare is not None:
            # It was forked before these interfaces existed; a new one will have them.
            self._discarded.add(spare.pid)
            spare.job.close()  # the spare reads EOF and exits
        if self._want_spare:
            self._spare_due = time.monotonic() + SPARE_DELAY

    def _reply_forked(self, request_id: int, pid: int) -> None:
        reply = pack({"op": "forked", "id": request_id, "pid": pid})
        socket.send_fds(self._channel, [reply], [self._children[pid]])

    def _make_spare(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            pid = self._fork_child(lambda: _run_spare(theirs, self._pid, self._child_setup))
        except OSError:
            ours.close()
            return  # no spare this time; forks happen on demand
        finally:
            theirs.close()
        self._spare = _Spare(pid, ours)

    def _fork_child(self, body: Callable[[], object]) -> int:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child never returns from body()
            body()
        pidfd = os.pidfd_open(pid)
        self._children[pid] = pidfd
        self._selector.register(pidfd, selectors.EVENT_READ, pid)
        return pid

    def _reap(self, pid: int) -> None:
        pidfd = self._children.pop(pid)
        self._selector.unregister(pidfd)
        os.close(pidfd)
        _, status, usage = os.wait4(pid, 0)
        if pid in self._discarded:
            self._discarded.discard(pid)
            return
        if self._spare is not None and self._spare.pid == pid:
            # A spare that died unused is nobody's business but ours; the next fork is direct.
            self._spare.job.close()
            self._spare = None
            return
        cpu_time = usage.ru_utime + usage.ru_stime
        self._send({"op": "exited", "pid": pid, "status": status, "cpu_time": cpu_time})

    def _send(self, message: Mapping[str, Any]) -> None:
        with contextlib.suppress(OSError):  # the runtime is gone; the lifeline will end us
            self._channel.send(pack(message))

    def _kill_all(self) -> None:
        for pidfd in self._children.values():
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        for pid in list(self._children):
            self._reap(pid)


def _has_exited(pidfd: int) -> bool:
    return bool(select.select([pidfd], [], [], 0)[0])


def _run_spare(
    job_socket: socket.socket, zygote_pid: int, setup: Callable[[], None] | None
) -> None:
    """A spare: get warm, wait for a job from the zygote, then become that child."""
    code = 1
    try:
        die_with_parent(zygote_pid)
        close_fds_except({0, 1, 2, job_socket.fileno()})
        if setup is not None:
            setup()
        prepare_spare(rehearse=True)
        data, stdio, _, _ = socket.recv_fds(job_socket, MAX_MESSAGE_BYTES, 4)
        if not data:
            os._exit(0)  # the zygote is gone or closed us
        job_socket.close()
        code = _become(_unpack_job(data), stdio)
    except BaseException:
        with contextlib.suppress(BaseException):
            traceback.print_exc()
    finally:
        os._exit(code)


def _run_child(
    job: dict[str, Any],
    stdio: list[int],
    zygote_pid: int,
    setup: Callable[[], None] | None,
) -> None:
    """A child forked on demand: run the job now."""
    code = 1
    try:
        die_with_parent(zygote_pid)
        close_fds_except({0, 1, 2, *stdio})
        if setup is not None:
            setup()
        code = _become(job, stdio)
    except BaseException:
        with contextlib.suppress(BaseException):
            traceback.print_exc()
    finally:
        os._exit(code)


def _unpack_job(data: bytes) -> dict[str, Any]:
    job = unpack_untrusted(data)
    if not isinstance(job, dict) or not isinstance(job.get("entry"), str):
        raise IsolationError(f"malformed job from the zygote: {job!r}")
    return job


def _become(job: dict[str, Any], stdio: list[int]) -> int:
    """Put the job's pipes on fds 1 and 2 and run ``entry(args)``; the exit code."""
    os.dup2(stdio[0], 1)
    os.dup2(stdio[1], 2)
    for fd in stdio:
        if fd > 2:
            os.close(fd)
    fresh_stdio()
    code = 1
    try:
        result = resolve(job["entry"], what="entry point")(job["args"])
        code = result if isinstance(result, int) else 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        with contextlib.suppress(BaseException):
            traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(BaseException):
                stream.flush()
    return code
