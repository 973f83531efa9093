"""The client side of the control socket (see ``minions.ops.control``): what the CLI uses.

:class:`ControlClient` sends one request and waits for its answer, synchronously, under a
timeout. Before it sends anything it checks that a system is there: no socket file means no
system; a socket file that refuses connections is stale (its system was killed). Every problem
is a :class:`ControlError` whose message is one line saying what happened and what to do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped]  # ships no type information
import zmq

from ..core.errors import MinionsError
from .control import PROTOCOL_VERSION, probe, socket_path

__all__ = ["ControlClient", "ControlError", "NoSystemError", "RequestFailed"]


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
    ) -> Any:
        """Send ``op`` (for component ``name``; ``replicas`` for ``scale``) and return the
        answer's result."""
        path = self._check_socket()
        limit = self.timeout if timeout is None else timeout
        context = zmq.Context()
        try:
            sock = context.socket(zmq.REQ)
            sock.setsockopt(zmq.LINGER, 0)
            try:
                sock.connect(f"ipc://{path}")
                request = {"v": PROTOCOL_VERSION, "op": op, "name": name}
                if replicas is not None:
                    request["replicas"] = replicas
                sock.send(msgpack.packb(request))
                if not sock.poll(int(limit * 1000), zmq.POLLIN):
                    raise ControlError(
                        f"the system in {self.project_dir} did not answer {op!r} within "
                        f"{limit:g} s; it may be busy or stuck (see 'minions logs'), or pass a "
                        "longer --timeout"
                    )
                body = sock.recv()
            except zmq.ZMQError as exc:
                raise ControlError(f"cannot talk to the system at {path}: {exc}") from exc
            finally:
                sock.close()
        finally:
            context.term()
        return self._result(body)

    def _check_socket(self) -> Path:
        project = self.project_dir
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

    def _result(self, body: bytes) -> Any:
        try:
            answer = msgpack.unpackb(body)
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
            raise ControlError(f"the system sent an unreadable answer: {exc}") from None
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
