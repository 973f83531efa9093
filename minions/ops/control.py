"""The control socket: how the ``minions`` command reaches a running system.

A system started by :func:`minions.run` attaches a :class:`ControlServer` to its runtime. It
listens on a ZeroMQ ``ipc://`` socket at ``<project>/.minions/run/control.sock`` — the
directory made owner-only (0700) and the socket file 0600, so only the user who runs the system
can operate it. (When the project path is too deep for a Unix socket path, the socket lives in
a private directory under the system's temporary directory and ``.minions/run/control.endpoint``
names it.) Every request on the socket must carry the system's credential and come from a peer
that is neither another user nor an isolated child (see ``minions.ops.credential``).

The protocol is one request, one answer, both msgpack maps::

    request  {"v": 1, "op": "status" | "restart" | "stop" | "redeploy" | "scale" | "metrics"
                          | "ping" | "telemetry" | "events",
              "name": <component name, for restart, redeploy, scale and stop of one component>,
              "replicas": <a count of 1 or more, or "cores": for scale>,
              "since": <events: the last event number seen>, "wait": <events: seconds>,
              "token": <the secret in .minions/run/control.token>}
    answer   {"v": 1, "ok": true, "result": ...}
             {"v": 1, "ok": false, "error": {"kind": ..., "message": ...}}

``telemetry`` answers the status with the raw readings behind the metrics
(``minions.ops.telemetry``); ``events`` answers the lifecycle events numbered above ``since``
(``minions.ops.lifecycle``: the server keeps the last thousand), waiting up to ``wait`` seconds
(at most 30) for the next one when there is none yet. The dashboard follows a system with these
two. :meth:`ControlServer.answer` serves a request in the system's own process, with the same
checks and answers as the socket.

The workflow operations (``workflows``, ``workflow``, ``workflow_retry``, ``workflow_cancel``,
whose ``name`` is a filter or a workflow id) are :mod:`.workflow_ops`'s.

``scale`` answers once the new replicas are READY, or the removed ones have drained and
stopped. Error kinds: ``unknown_component``, ``unknown_workflow``, ``refused`` (the operation
does not apply: redeploying an in-process component, scaling one without replicas, retrying a
running workflow), ``failed`` (it was tried and failed: the restarted component crashed),
``metrics_off``, ``bad_request``, ``unauthorized`` (no valid credential, or a peer that may not
operate the system), ``busy`` (too many requests at once), ``internal``. Requests are served
concurrently (``status`` answers while a restart is under way); the runtime applies structural
changes one at a time.
``stop`` without a name asks the system to stop as the first SIGTERM would, and is answered
once everything has stopped, just before the socket closes.

A socket file nobody listens on (the system was killed) is *stale*: connecting to it is
refused. A system started by :func:`minions.run` holds the project lock (``minions.ops.lock``)
before its server opens, so whatever socket file the server finds then is stale by definition
(only the lock's holder listens there) and is replaced without being probed. A server given no
lock (a ``Runtime`` embedded with ``ControlServer()``) probes the file: it replaces a stale one,
and if another live system already answers on it, it logs ``control.unavailable`` and the
runtime runs without a control socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped]  # ships no type information
import structlog
import zmq
import zmq.asyncio

from isolation import unpack_untrusted

from ..core.errors import (
    MinionsError,
    PrivateDirectoryError,
    RuntimeStateError,
    StartupError,
    UnknownComponentError,
)
from ..core.private import PRIVATE_DIR_NAME, private_dir, private_file
from ..core.runtime import Runtime
from ..core.status import ComponentStatus, ReplicaStatus
from ..workflows.board import WorkflowActionError
from .credential import Credential, PeerCredentials, descends_from, peer_credentials
from .lifecycle import MAX_WAIT, LifecycleHistory
from .lock import ProjectLock
from .metrics import MetricsEndpoint
from .telemetry import telemetry
from .usage import Usage, UsageSampler, local_pids
from .workflow_ops import WORKFLOW_OPS, answer_workflow_op

__all__ = [
    "PROTOCOL_VERSION",
    "ControlServer",
    "probe",
    "replica_row",
    "socket_path",
    "status_row",
]

log = structlog.get_logger("minions")

PROTOCOL_VERSION = 1
SOCKET_NAME = "control.sock"
POINTER_NAME = "control.endpoint"
#: AF_UNIX paths hold 107 bytes; beyond this the socket moves to the temporary directory.
_MAX_SOCKET_PATH = 100
#: How long the last answers (to ``stop``) may take to leave when the socket closes.
_CLOSE_LINGER_MS = 1000
#: Requests are a few bytes; ZeroMQ drops anything larger before allocating it.
MAX_REQUEST_BYTES = 64 * 1024
#: Requests served at once (an ``events`` request may wait 30 s); one more is answered ``busy``.
MAX_CONCURRENT_REQUESTS = 64
#: Answers (a status of many components, a metrics exposition) stay well under this.
MAX_ANSWER_BYTES = 16 * 1024 * 1024
#: The longest ``name`` a request may carry (a component name, a workflow id or a filter).
MAX_NAME = 200
OPS = (
    frozenset(
        {"ping", "status", "restart", "stop", "redeploy", "scale", "metrics", "telemetry", "events"}
    )
    | WORKFLOW_OPS
)
_NEEDS_NAME = frozenset(
    {"restart", "redeploy", "scale", "workflow", "workflow_retry", "workflow_cancel"}
)


def run_dir(project_dir: Path) -> Path:
    return project_dir / PRIVATE_DIR_NAME / "run"


def _fits(path: Path) -> bool:
    return len(os.fsencode(path)) <= _MAX_SOCKET_PATH


def socket_path(project_dir: Path) -> Path | None:
    """Where the control socket of the system in ``project_dir`` is; ``None`` if nowhere."""
    default = run_dir(project_dir) / SOCKET_NAME
    if _fits(default):
        return default
    try:
        named = Path((run_dir(project_dir) / POINTER_NAME).read_text().strip())
    except OSError:
        return None
    return named if named.is_absolute() and _fits(named) else None


def probe(path: Path) -> bool:
    """Whether something listens on the Unix socket ``path`` (False: the file is stale).

    Raises :class:`PermissionError` when the socket belongs to someone else.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        try:
            client.connect(os.fspath(path))
        except (ConnectionRefusedError, FileNotFoundError):
            return False
    return True


class ControlUnavailable(MinionsError):
    """The control socket could not be opened (the system runs without it)."""


class ControlServer:
    """Answers the ``minions`` command for one runtime (an
    :class:`~minions.core.runtime.Extension`).

    ``on_stop`` is called for ``minions stop`` without a name (``run()`` passes its graceful
    stop); without it the runtime is stopped directly. ``metrics`` answers ``status --metrics``.
    ``lock`` is the project lock the system holds, if any (see the module docstring).
    """

    def __init__(
        self,
        *,
        on_stop: Callable[[], None] | None = None,
        metrics: MetricsEndpoint | None = None,
        lock: ProjectLock | None = None,
    ) -> None:
        self._on_stop = on_stop
        self._metrics = metrics
        self._lock = lock
        self._runtime: Runtime | None = None
        self._context: zmq.asyncio.Context | None = None
        self._socket: zmq.asyncio.Socket | None = None
        self._path: Path | None = None
        self._inode: int | None = None
        self._private_dir: Path | None = None
        self._credential: Credential | None = None
        self._serving: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stop_waiters: list[bytes] = []
        self._stopping: asyncio.Task[None] | None = None
        self._sampler = UsageSampler()
        self._started_at = datetime.now(UTC)
        self._history = LifecycleHistory()

    def __repr__(self) -> str:
        where = self._path if self._socket is not None else "not listening"
        return f"<ControlServer {where}>"

    @property
    def path(self) -> Path | None:
        """The socket's path while it listens."""
        return self._path if self._socket is not None else None

    @property
    def runtime(self) -> Runtime | None:
        """The runtime it is attached to (``None`` before :meth:`attach`)."""
        return self._runtime

    async def attach(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._started_at = datetime.now(UTC)
        runtime.add_lifecycle_listener(self._history)
        try:
            self._open(runtime.project_dir)
        except ControlUnavailable as exc:
            log.warning("control.unavailable", reason=str(exc))
            return
        self._serving = asyncio.get_running_loop().create_task(
            self._serve(), name="minions:control"
        )
        log.info("control.listening", socket=str(self._path))

    async def detach(self) -> None:
        if self._runtime is not None:
            self._runtime.remove_lifecycle_listener(self._history)
        serving, self._serving = self._serving, None
        if serving is not None:
            serving.cancel()
        tasks = [*self._tasks, *([serving] if serving is not None else [])]
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        sock = self._socket
        if sock is not None:
            for identity in self._stop_waiters:
                with contextlib.suppress(zmq.ZMQError):
                    # The plain socket's send: it never waits (a ROUTER drops what it cannot
                    # deliver), and no future is left behind by a loop that is about to end.
                    zmq.Socket.send_multipart(
                        sock, [identity, b"", _pack(_success({"stopped": True}))]
                    )
            self._stop_waiters.clear()
        self._close(_CLOSE_LINGER_MS)

    # -- the socket -----------------------------------------------------------------------------

    def _open(self, project_dir: Path) -> None:
        directory = run_dir(project_dir)
        try:
            private_dir(directory, root=project_dir)
        except (OSError, PrivateDirectoryError) as exc:
            raise ControlUnavailable(f"cannot prepare {directory}: {exc}") from exc
        path = directory / SOCKET_NAME
        if not _fits(path):
            self._private_dir = Path(tempfile.mkdtemp(prefix="minions-control-"))
            path = self._private_dir / SOCKET_NAME
        elif path.exists() and self._lock is not None and self._lock.held:
            try:
                path.unlink(missing_ok=True)  # stale: only the lock's holder (us) listens there
            except OSError as exc:
                raise ControlUnavailable(f"cannot replace the stale socket {path}: {exc}") from exc
        elif path.exists():
            try:
                alive = probe(path)
            except OSError as exc:
                raise ControlUnavailable(f"cannot check the existing socket {path}: {exc}") from exc
            if alive:
                raise ControlUnavailable(
                    f"another Minions system already answers on {path}; this one runs without "
                    "a control socket (run one system per project folder)"
                )
            path.unlink(missing_ok=True)  # stale: left by a system that was killed
        context = zmq.asyncio.Context()
        sock = context.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_BYTES)
        try:
            sock.bind(f"ipc://{path}")
            path.chmod(0o600)
            self._inode = path.stat().st_ino
            # Made now, after the zygote was forked: no isolated child holds it in memory.
            self._credential = Credential.create(directory)
            if self._private_dir is not None:
                pointer = private_file(directory / POINTER_NAME)
                pointer.write_text(f"{path}\n")
        except (zmq.ZMQError, OSError) as exc:
            sock.close()
            context.term()
            self._remove_private_dir()
            raise ControlUnavailable(f"cannot listen on {path}: {exc}") from exc
        self._context, self._socket, self._path = context, sock, path

    def _close(self, linger_ms: int) -> None:
        sock, self._socket = self._socket, None
        if sock is not None:
            sock.close(linger=linger_ms)
        context, self._context = self._context, None
        if context is not None:
            context.term()
        credential, self._credential = self._credential, None
        if credential is not None:
            credential.remove()
        path = self._path
        if path is not None and self._inode is not None:
            with contextlib.suppress(OSError):
                if path.stat().st_ino == self._inode:  # not a newer system's socket
                    path.unlink()
        if self._private_dir is not None and self._runtime is not None:
            pointer = run_dir(self._runtime.project_dir) / POINTER_NAME
            with contextlib.suppress(OSError):
                if pointer.read_text().strip() == str(path):
                    pointer.unlink()
        self._remove_private_dir()

    def _remove_private_dir(self) -> None:
        private, self._private_dir = self._private_dir, None
        if private is not None:
            shutil.rmtree(private, ignore_errors=True)

    async def _serve(self) -> None:
        assert self._socket is not None
        sock = self._socket
        loop = asyncio.get_running_loop()
        while True:
            frames = await sock.recv_multipart(copy=False)
            if len(frames) != 3 or frames[1].bytes != b"":
                continue  # not a REQ envelope: nothing to answer
            identity, body = frames[0].bytes, frames[2].bytes
            if len(self._tasks) >= MAX_CONCURRENT_REQUESTS:
                with contextlib.suppress(zmq.ZMQError):
                    busy = _failure("busy", "too many requests at once; retry in a moment")
                    await sock.send_multipart([identity, b"", _pack(busy)])
                continue
            peer = peer_credentials(_peer_address(frames[2]))
            task = loop.create_task(self._handle(identity, body, peer))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _check_peer(self, peer: PeerCredentials | None) -> None:
        """Refuse another user, and an isolated child or anything it started."""
        if peer is None:
            return  # ZeroMQ does not say who it is here: the credential alone decides
        if peer.uid not in (os.geteuid(), 0):
            raise _Refusal(
                "unauthorized",
                f"requests from uid {peer.uid} are refused: run the command as the user who "
                "started the system",
            )
        assert self._runtime is not None
        if descends_from(peer.pid, self._runtime.isolated_process_roots()):
            log.warning("control.refused", pid=peer.pid, reason="an isolated child")
            raise _Refusal(
                "unauthorized",
                f"process {peer.pid} is an isolated child of this system (or was started by "
                "one); isolated components cannot operate the system",
            )

    def _check_credential(self, request: Mapping[str, Any]) -> None:
        credential = self._credential
        if request.get("v") != PROTOCOL_VERSION:
            return  # answered as a request of another version, which says nothing more
        if credential is None or not credential.matches(request.get("token")):
            raise _Refusal(
                "unauthorized",
                "the request does not carry this system's credential: use the minions command "
                "as the user who started the system (it reads .minions/run/control.token)",
            )

    async def _handle(self, identity: bytes, body: bytes, peer: PeerCredentials | None) -> None:
        try:
            self._check_peer(peer)
            request = _decode(body)
            self._check_credential(request)
            if _check(request) == ("stop", None):
                self._stop_all(identity)
                return  # answered at detach, once everything has stopped
        except _Refusal as exc:
            reply = _failure(exc.kind, str(exc))
        else:
            reply = await self.answer(request)
        if self._socket is not None:
            with contextlib.suppress(zmq.ZMQError):
                await self._socket.send_multipart([identity, b"", _pack(reply)])

    async def answer(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """The answer to one request map, as the socket would send it (before msgpack): how
        the dashboard served by the system itself operates it. ``stop`` without a name is
        refused here: stopping the whole system is asked on the socket (``minions stop``)."""
        try:
            op, name = _check(request)
            if op == "stop" and name is None:
                raise _Refusal("refused", "stop the whole system with 'minions stop' or a signal")
            return _success(await self._dispatch(op, name, request))
        except (_Refusal, WorkflowActionError) as exc:
            return _failure(exc.kind, str(exc))
        except UnknownComponentError as exc:
            return _failure("unknown_component", str(exc))
        except RuntimeStateError as exc:
            return _failure("refused", str(exc))
        except (StartupError, MinionsError) as exc:
            return _failure("failed", str(exc))
        except Exception as exc:
            log.error("control.failed", reason=f"{type(exc).__name__}: {exc}", exc_info=exc)
            return _failure("internal", f"{type(exc).__name__}: {exc} (see the system's log)")

    # -- operations -----------------------------------------------------------------------------

    async def _dispatch(self, op: str, name: str | None, request: Mapping[str, Any]) -> Any:
        runtime = self._runtime
        assert runtime is not None
        if op == "ping":
            return {"pid": os.getpid()}
        if op == "status":
            return self.status()
        if op == "telemetry":
            metrics = self._metrics.metrics if self._metrics is not None else None
            return {"at": time.time(), "status": self.status(), **telemetry(runtime, metrics)}
        if op == "events":
            since, wait = _events_range(request)
            page = await self._history.after(since, wait)
            return {"pid": os.getpid(), **page.as_data()}
        if op == "metrics":
            if self._metrics is None:
                raise _Refusal(
                    "metrics_off",
                    "metrics are off in this system; start it with 'minions run --metrics-port "
                    "PORT', run(..., metrics_port=PORT) or metrics_port in [minions] of "
                    "minions.toml",
                )
            return await self._metrics.exposition()
        if op in WORKFLOW_OPS:
            return await answer_workflow_op(runtime, op, name)
        assert name is not None
        log.info("control.request", op=op, component=name)
        if op == "restart":
            await runtime.restart(name)
        elif op == "redeploy":
            await runtime.redeploy(name)
        elif op == "stop":
            await runtime.stop(name)
        elif op == "scale":
            replicas = request.get("replicas")
            assert isinstance(replicas, int | str)  # checked by _check
            await runtime.scale(name, replicas)
        return self._component_status(name)

    def _stop_all(self, identity: bytes) -> None:
        self._stop_waiters.append(identity)
        log.info("control.request", op="stop")
        if self._on_stop is not None:
            self._on_stop()
        elif self._stopping is None and self._runtime is not None:
            self._stopping = asyncio.get_running_loop().create_task(self._runtime.stop())

    def _component_status(self, name: str) -> dict[str, Any]:
        assert self._runtime is not None
        status = self._runtime.status()[name]
        return status_row(status, self._usage, datetime.now(UTC))

    def _usage(self, pid: int | None) -> Usage | None:
        return self._sampler.sample(pid) if pid is not None else None

    def status(self) -> dict[str, Any]:
        """The ``status`` answer: the system and every component, as plain data."""
        assert self._runtime is not None
        now = datetime.now(UTC)
        statuses = list(self._runtime.status().values())
        pids = {pid for s in statuses for pid in local_pids(s)} | {os.getpid()}
        self._sampler.forget_others(pids)
        own = self._sampler.sample(os.getpid())
        return {
            "system": {
                "pid": os.getpid(),
                "project": str(self._runtime.project_dir),
                "started_at": self._started_at.isoformat(),
                "uptime_seconds": round((now - self._started_at).total_seconds(), 3),
                "cpu_percent": own.cpu_percent,
                "rss_bytes": own.rss_bytes,
                "stopping": bool(self._stop_waiters),
                "metrics_url": self._metrics.url if self._metrics is not None else None,
            },
            "components": [status_row(s, self._usage, now) for s in statuses],
        }


def status_row(
    status: ComponentStatus, usage_of: Callable[[int | None], Usage | None], now: datetime
) -> dict[str, Any]:
    """One component as plain data (the rows of ``minions status --json``); ``usage_of``
    measures a process of this host."""
    uptime = (now - status.started_at).total_seconds() if status.started_at is not None else None
    usage = usage_of(status.pid)
    return {
        "name": status.name,
        "kind": status.kind,
        "isolated": status.isolated,
        "state": status.state.value,
        "pid": status.pid,
        "restarts": status.restarts,
        "crashes": status.crashes,
        "crash_causes": dict(status.crash_causes),
        "started_at": status.started_at.isoformat() if status.started_at is not None else None,
        "uptime_seconds": round(uptime, 3) if uptime is not None else None,
        "cpu_percent": usage.cpu_percent if usage is not None else None,
        "rss_bytes": usage.rss_bytes if usage is not None else None,
        "last_error": status.last_error,
        "ended_by_crash": status.ended_by_crash,
        "replicas": [replica_row(r, usage_of, now) for r in status.replicas],
        "dependencies": list(status.dependencies),
    }


def replica_row(
    replica: ReplicaStatus, usage_of: Callable[[int | None], Usage | None], now: datetime
) -> dict[str, Any]:
    """One replica of a replicated component as plain data (in its component's row)."""
    started = replica.started_at
    uptime = (now - started).total_seconds() if started is not None else None
    usage = usage_of(replica.pid) if replica.node is None else None
    return {
        "index": replica.index,
        "state": replica.state.value,
        "pid": replica.pid,
        "node": replica.node,
        "restarts": replica.restarts,
        "crashes": replica.crashes,
        "calls_in_flight": replica.calls_in_flight,
        "uptime_seconds": round(uptime, 3) if uptime is not None else None,
        "cpu_percent": usage.cpu_percent if usage is not None else None,
        "rss_bytes": usage.rss_bytes if usage is not None else None,
        "last_error": replica.last_error,
    }


class _Refusal(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _peer_address(frame: zmq.Frame) -> str | None:
    try:
        address = frame.get("Peer-Address")
    except zmq.ZMQError:
        return None
    return address if isinstance(address, str) else None


def _decode(body: bytes) -> Mapping[str, Any]:
    try:
        request = unpack_untrusted(body)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise _Refusal("bad_request", f"the request is not msgpack data: {exc}") from None
    if not isinstance(request, dict):
        raise _Refusal("bad_request", f"expected a map with v={PROTOCOL_VERSION}")
    return request


def _check(request: Mapping[str, Any]) -> tuple[str, str | None]:
    if request.get("v") != PROTOCOL_VERSION:
        raise _Refusal(
            "bad_request",
            f"expected a map with v={PROTOCOL_VERSION}; this system speaks control protocol "
            f"version {PROTOCOL_VERSION} (is the minions command from another version?)",
        )
    op, name = request.get("op"), request.get("name")
    if op not in OPS:
        raise _Refusal("bad_request", f"unknown operation {op!r}; known: {', '.join(sorted(OPS))}")
    if name is not None and not isinstance(name, str):
        raise _Refusal("bad_request", f"the component name must be a string, got {name!r}")
    if name is not None and len(name) > MAX_NAME:
        raise _Refusal(
            "bad_request",
            f"the name is {len(name)} characters long; a component name, workflow id or filter "
            f"has at most {MAX_NAME}",
        )
    if op in _NEEDS_NAME and not name:
        raise _Refusal("bad_request", f"{op} needs a component name")
    replicas = request.get("replicas")
    if op == "scale" and not (
        replicas == "cores"
        or (isinstance(replicas, int) and not isinstance(replicas, bool) and replicas >= 1)
    ):
        raise _Refusal(
            "bad_request", f'scale needs a replica count of 1 or more, or "cores"; got {replicas!r}'
        )
    return op, name


def _events_range(request: Mapping[str, Any]) -> tuple[int, float]:
    since, wait = request.get("since", 0), request.get("wait", 0)
    if not isinstance(since, int) or isinstance(since, bool) or since < 0:
        raise _Refusal("bad_request", f"since must be an event number, 0 or more; got {since!r}")
    if not isinstance(wait, int | float) or isinstance(wait, bool) or not 0 <= wait <= MAX_WAIT:
        raise _Refusal(
            "bad_request", f"wait must be a number of seconds from 0 to {MAX_WAIT:g}; got {wait!r}"
        )
    return since, float(wait)


def _success(result: Any) -> dict[str, Any]:
    return {"v": PROTOCOL_VERSION, "ok": True, "result": result}


def _failure(kind: str, message: str) -> dict[str, Any]:
    return {"v": PROTOCOL_VERSION, "ok": False, "error": {"kind": kind, "message": message}}


def _pack(answer: dict[str, Any]) -> bytes:
    packed: bytes = msgpack.packb(answer)
    return packed
