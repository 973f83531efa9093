"""Every error the isolation layer raises, grouped by what the caller does about it.

::

    IsolationError                      catch-all for this package
    ├── ChildStartError                 fix the component (or its limits): it never became ready
    │   └── SandboxUnavailable          its sandbox cannot be enforced here: see the message
    ├── ComponentCrashed                the other side died or the channel closed: let the
    │                                   supervisor restart it, then retry
    ├── RemoteError                     the remote method raised: handle it like a local error
    │   └── Remote<Builtin>             e.g. a remote ValueError is also a ValueError
    ├── SerializationError              fix the program: a value cannot cross the boundary
    └── ProtocolError                   a bug or a stray writer on the channel: report it

Errors cross the process boundary as data — an :class:`ErrorReport`: the type's name, the
message and the traceback text, each bounded in size — made by :meth:`ErrorReport.of` on the
side that raised and rebuilt by :meth:`ErrorReport.rebuild` on the other, the same way for
calls, streams and a child's final report. A remote exception whose type is a Python builtin
keeps that type: the rebuilt error is an instance of a small subclass of both
:class:`RemoteError` and the builtin (created once per builtin and cached), so ``except
ValueError`` works across processes exactly as it does locally, while ``except RemoteError``
still catches everything that was raised on the other side. Other types are named by module
and qualified name (``mypkg.errors.Rejected``); the name is only ever text, never looked up.
"""

from __future__ import annotations

import builtins
import traceback
from dataclasses import dataclass
from functools import cache
from typing import Any

__all__ = [
    "ChildStartError",
    "ComponentCrashed",
    "ErrorReport",
    "IsolationError",
    "ProtocolError",
    "RemoteError",
    "SandboxUnavailable",
    "SerializationError",
    "remote_error",
]

#: Bounds of an error crossing the boundary, in characters: a type name, a message, a traceback
#: (its last lines are kept, where the error was raised).
MAX_TYPE_CHARS = 200
MAX_MESSAGE_CHARS = 4000
MAX_TRACEBACK_CHARS = 16000


class IsolationError(Exception):
    """Base class of every error raised by the isolation layer."""


class ChildStartError(IsolationError):
    """A child process failed to import, construct or start its component, or never said READY.

    Fix the component (or raise its start timeout); restarting it unchanged fails the same way.
    """


class SandboxUnavailable(ChildStartError):
    """A component's sandbox cannot be enforced: the kernel lacks a part it requires, or a
    setting cannot be honoured (a path that does not exist, a host that does not resolve).

    The message names what is missing and how to relax the sandbox knowingly
    (``Sandbox(require=...)``). The child is never started without it.
    """


class ComponentCrashed(IsolationError):
    """A pending call or stream failed because the other side died or the channel closed.

    ``component`` and ``method`` name the call that was waiting; the exception that broke the
    channel (a child's exit, a protocol error, a close) is chained as ``__cause__``.
    """

    def __init__(self, message: str, *, component: str = "", method: str = "") -> None:
        super().__init__(message)
        self.component = component
        self.method = method


class RemoteError(IsolationError):
    """The remote method raised; the remote exception travelled back as data.

    ``remote_type`` is the remote exception's type (``ValueError``, ``mypkg.errors.Rejected``),
    ``remote_message`` its text and ``remote_traceback`` the formatted remote traceback, also
    attached as a note so it shows when the error is printed.
    """

    def __init__(
        self,
        message: str,
        *,
        remote_type: str,
        remote_message: str,
        remote_traceback: str,
        component: str,
        method: str,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.remote_type = remote_type
        self.remote_message = remote_message
        self.remote_traceback = remote_traceback
        self.component = component
        self.method = method
        if remote_traceback:
            self.add_note(f"Remote traceback ({component}.{method}):\n{remote_traceback}")

    def __str__(self) -> str:
        # Builtins such as KeyError format their args differently; keep our message.
        return self.message


class SerializationError(IsolationError):
    """A value cannot cross the isolation boundary: it cannot be encoded, or fails validation.

    The message names the method and the parameter (or the return value); send builtins,
    dataclasses or pydantic models, matching the method's annotations.
    """


class ProtocolError(IsolationError):
    """A frame on the channel is not a valid message: garbage, truncated, oversized, wrong
    version or shape, or a wrong handshake token. The channel cannot be trusted any more.
    """


# Builtins whose constructor cannot take a single message: they are rebuilt as their nearest
# well-behaved base class instead.
_REBUILT_AS = {
    "UnicodeDecodeError": "UnicodeError",
    "UnicodeEncodeError": "UnicodeError",
    "UnicodeTranslateError": "UnicodeError",
}
# Exceptions with control-flow meaning must not be re-raised as themselves in the caller.
_NOT_REBUILT = {"StopIteration", "StopAsyncIteration", "ExceptionGroup"}


@cache
def _typed_remote_error(builtin_name: str) -> type[RemoteError]:
    """Return the cached subclass of RemoteError and the named builtin exception."""
    name = _REBUILT_AS.get(builtin_name, builtin_name)
    base = getattr(builtins, name, None)
    if (
        name in _NOT_REBUILT
        or not isinstance(base, type)
        or not issubclass(base, Exception)
        or issubclass(base, IsolationError)
    ):
        return RemoteError
    return type(f"Remote{name}", (RemoteError, base), {"__module__": __name__})


def remote_error(
    *,
    remote_type: str,
    remote_message: str,
    remote_traceback: str,
    component: str,
    method: str,
) -> RemoteError:
    """Rebuild a remote exception: typed as the builtin when ``remote_type`` names one."""
    cls = RemoteError if "." in remote_type else _typed_remote_error(remote_type)
    message = f"{component}.{method} raised {remote_type}"
    if remote_message:
        message = f"{message}: {remote_message}"
    return cls(
        message,
        remote_type=remote_type,
        remote_message=remote_message,
        remote_traceback=remote_traceback,
        component=component,
        method=method,
    )


@dataclass(frozen=True, slots=True)
class ErrorReport:
    """An exception as it crosses the process boundary (see the module docstring)."""

    type: str
    message: str
    traceback: str

    @classmethod
    def of(cls, exc: BaseException) -> ErrorReport:
        """The report of ``exc``; an error from a further hop keeps its original type."""
        if isinstance(exc, RemoteError):
            name, text = exc.remote_type, exc.remote_message
        else:
            kind = type(exc)
            module = kind.__module__
            name = kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"
            text = str(exc)
        return cls(name, text, "".join(traceback.format_exception(exc))).bounded()

    @classmethod
    def from_data(cls, data: object) -> ErrorReport:
        """A report received as a map (``to_data``); anything malformed is reported as such,
        never trusted: only strings are kept, and they are bounded."""
        fields = data if isinstance(data, dict) else {}
        values = [fields.get(key) for key in ("type", "message", "traceback")]
        name, text, trace = (value if isinstance(value, str) else "" for value in values)
        return cls(name or "UnknownError", text, trace).bounded()

    def to_data(self) -> dict[str, Any]:
        return {"type": self.type, "message": self.message, "traceback": self.traceback}

    def bounded(self) -> ErrorReport:
        """This report with each field cut to its bound."""
        if (
            len(self.type) <= MAX_TYPE_CHARS
            and len(self.message) <= MAX_MESSAGE_CHARS
            and len(self.traceback) <= MAX_TRACEBACK_CHARS
        ):
            return self
        trace = self.traceback
        if len(trace) > MAX_TRACEBACK_CHARS:
            trace = "...\n" + trace[-MAX_TRACEBACK_CHARS:]
        return ErrorReport(self.type[:MAX_TYPE_CHARS], self.message[:MAX_MESSAGE_CHARS], trace)

    def rebuild(self, component: str, method: str) -> RemoteError:
        """The error to raise on this side for ``component.method``."""
        return remote_error(
            remote_type=self.type,
            remote_message=self.message,
            remote_traceback=self.traceback,
            component=component,
            method=method,
        )
