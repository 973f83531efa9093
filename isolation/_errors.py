"""Every error the isolation layer raises, grouped by what the caller does about it.

::

    IsolationError                      catch-all for this package
    ├── ChildStartError                 fix the component (or its limits): it never became ready
    ├── ComponentCrashed                the other side died or the channel closed: let the
    │                                   supervisor restart it, then retry
    ├── RemoteError                     the remote method raised: handle it like a local error
    │   └── Remote<Builtin>             e.g. a remote ValueError is also a ValueError
    ├── SerializationError              fix the program: a value cannot cross the boundary
    └── ProtocolError                   a bug or a stray writer on the channel: report it

Errors cross the process boundary as data (type name, message, traceback text) and are rebuilt
here. A remote exception whose type is a Python builtin keeps that type: the rebuilt error is an
instance of a small subclass of both :class:`RemoteError` and the builtin (created once per
builtin and cached), so ``except ValueError`` works across processes exactly as it does locally,
while ``except RemoteError`` still catches everything that was raised on the other side.
"""

from __future__ import annotations

import builtins
from functools import cache

__all__ = [
    "ChildStartError",
    "ComponentCrashed",
    "IsolationError",
    "ProtocolError",
    "RemoteError",
    "SerializationError",
    "remote_error",
]


class IsolationError(Exception):
    """Base class of every error raised by the isolation layer."""


class ChildStartError(IsolationError):
    """A child process failed to import, construct or start its component, or never said READY.

    Fix the component (or raise its start timeout); restarting it unchanged fails the same way.
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
