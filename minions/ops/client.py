"""The client side of the control socket (see ``minions.ops.control``): what the CLI uses.

:class:`ControlClient` sends one request and waits for its answer, synchronously, under a
timeout; :class:`AsyncControlClient` does the same on an event loop, where requests may
overlap (the dashboard follows the system's events while it samples its telemetry). Before
either sends anything it checks that a system is there: no socket file means no
system; a socket file that refuses connections is stale (its system was killed). Every problem
is a :class:`ControlError` whose message is one line saying what happened and what to do.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped]  # ships no type information
import zmq
import zmq.asyncio

from isolation import unpack_untrusted

from ..core.errors import MinionsError
from .control import MAX_ANSWER_BYTES, PROTOCOL_VERSION, probe, run_dir, socket_path
from .credential import Credential

__all__ = [
    "AsyncControlClient",
    "ControlClient",
    "ControlError",
    "NoSystemError",
    "RequestFailed",
    "result_of",
]


class ControlError(MinionsError):
    """A control request could not be made or answered."""


class NoSystemError(ControlError):
    """No system runs in the project folder (no control socket, or a stale one)."""


class RequestFailed(ControlError):
    """The system answered with an error; ``kind`` says which (see ``minions.ops.control``)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class ControlClient:
    """Talks to the system running in ``project_dir``."""

    def __init__(self, project_dir: Path, *, timeout: float = 5.0) -> None:
        self.project_dir = project_dir
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"<ControlClient {self.project_dir}>"

    def request(
        self,
        op: str,
        name: str | None = None,
        *,
        timeout: float | None = None,
        replicas: int | str | None = None,
        fields: Mapping[str, Any] | None = None,
    ) -> Any:
        """Send ``op`` (for component ``name``; ``replicas`` for ``scale``; the request's other
        ``fields``) and return the answer's result."""
        path = check_socket(self.project_dir)
        limit = self.timeout if timeout is None else timeout
        context = zmq.Context()
        try:
            sock = context.socket(zmq.REQ)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.MAXMSGSIZE, MAX_ANSWER_BYTES)
            try:
                sock.connect(f"ipc://{path}")
                extra = {
                    **(fields or {}),
                    **({"replicas": replicas} if replicas is not None else {}),
                }
                sock.send(_request(op, name, extra, read_credential(self.project_dir)))
                if not sock.poll(int(limit * 1000), zmq.POLLIN):
                    raise _no_answer(self.project_dir, op, limit)
                body = sock.recv()
            except zmq.ZMQError as exc:
                raise ControlError(f"cannot talk to the system at {path}: {exc}") from exc
            finally:
                sock.close()
        finally:
            context.term()
        return result_of(_unpack(body))


class AsyncControlClient:
    """Talks to the system running in ``project_dir`` from an event loop.

    Each request has a socket of its own, so requests may be in flight together (a long
    ``events`` wait beside ``telemetry`` samples and a restart). A request waits for its answer
    as long as it takes: bound it with :func:`asyncio.timeout`. :meth:`close` when done.
    """

    def __init__(self, project_dir: Path) -> None:
        self.project_dir = project_dir
        self._context = zmq.asyncio.Context()

    def __repr__(self) -> str:
        return f"<AsyncControlClient {self.project_dir}>"

    async def request(
        self, op: str, name: str | None = None, *, fields: Mapping[str, Any] | None = None
    ) -> Any:
        """As :meth:`ControlClient.request`, without blocking the event loop."""
        path = check_socket(self.project_dir)
        sock = self._context.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_ANSWER_BYTES)
        try:
            sock.connect(f"ipc://{path}")
            await sock.send(_request(op, name, fields, read_credential(self.project_dir)))
            body = await sock.recv()
        except zmq.ZMQError as exc:
            raise ControlError(f"cannot talk to the system at {path}: {exc}") from exc
        finally:
            sock.close()
        return result_of(_unpack(body))

    def close(self) -> None:
        """Release the ZeroMQ context (every request has ended)."""
        self._context.term()


def _request(op: str, name: str | None, fields: Mapping[str, Any] | None, token: str) -> bytes:
    request = {**(fields or {}), "v": PROTOCOL_VERSION, "op": op, "name": name, "token": token}
    packed: bytes = msgpack.packb(request)
    return packed


def read_credential(project: Path) -> str:
    """The credential of the system in ``project`` (``minions.ops.credential``), for a request."""
    directory = run_dir(project)
    try:
        return Credential.read(directory)
    except PermissionError:
        raise ControlError(
            f"permission denied on the control credential in {directory}: run the command as "
            "the user who started the system"
        ) from None
    except OSError as exc:
        raise ControlError(
            f"cannot read the control credential in {directory} ({exc}); the system may be "
            "starting or stopping: try again"
        ) from exc


def _no_answer(project: Path, op: str, limit: float) -> ControlError:
    return ControlError(
        f"the system in {project} did not answer {op!r} within {limit:g} s; it may be busy "
        "or stuck (see 'minions logs'), or pass a longer --timeout"
    )


def check_socket(project: Path) -> Path:
    """The control socket of the system in ``project``, once something listens on it."""
    path = socket_path(project)
    if path is None or not path.exists():
        raise NoSystemError(
            f"no Minions system is running in {project} (no control socket in "
            f"{project / '.minions' / 'run'}); start one with 'minions run app.py', or "
            "name its folder with --project DIR or $MINIONS_PROJECT_DIR"
        )
    try:
        alive = probe(path)
    except PermissionError:
        raise ControlError(
            f"permission denied on the control socket {path}: run the command as the user "
            "who started the system"
        ) from None
    except OSError as exc:
        raise ControlError(f"cannot reach the control socket {path}: {exc}") from exc
    if not alive:
        raise NoSystemError(
            f"no Minions system is running in {project}: the control socket {path} is "
            "stale (its system ended without removing it; it is safe to delete)"
        )
    return path


def _unpack(body: bytes) -> Any:
    try:
        return unpack_untrusted(body)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise ControlError(f"the system sent an unreadable answer: {exc}") from None


def result_of(answer: Any) -> Any:
    """The result of an answer map, or the :class:`RequestFailed` it carries."""
    if not isinstance(answer, dict) or answer.get("v") != PROTOCOL_VERSION:
        raise ControlError(
            "the system answered in another control protocol version; use the minions "
            "command of the same installation as the system"
        )
    if answer.get("ok"):
        return answer.get("result")
    error = answer.get("error")
    if not isinstance(error, dict):
        error = {}
    raise RequestFailed(str(error.get("kind", "failed")), str(error.get("message", "")))
