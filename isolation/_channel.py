"""The parent-child channel's fixed points, shared by both ends.

Both ends use ``CONTROL_SOCKET_TYPE`` (the parent binds, the child connects) and carry a wire
layer ``Peer``. The component the child builds is served under the name ``COMPONENT``; the
parent's services under their own names. Neither side offers the lifecycle hooks (``LIFECYCLE``)
across the boundary: only the runtime starts and stops a component, never a dependent's call.
Errors cross as data (``error_to_data``) and become a ``RemoteError`` on the parent's side
(``error_from_data``).
"""

from __future__ import annotations

import traceback
from typing import Any

import zmq

from ._errors import RemoteError, remote_error

__all__ = [
    "COMPONENT",
    "CONTROL_SOCKET_TYPE",
    "FLUSH_MILLISECONDS",
    "LIFECYCLE",
    "error_from_data",
    "error_to_data",
]

COMPONENT = "component"
CONTROL_SOCKET_TYPE = zmq.PAIR
LIFECYCLE = frozenset({"startup", "run", "shutdown"})
#: How long a child's last messages (its final report) may take to leave before it exits anyway.
FLUSH_MILLISECONDS = 2000


def error_to_data(exc: BaseException) -> dict[str, Any]:
    """An exception as msgpack data: type name, message and formatted traceback."""
    return {
        "type": type(exc).__qualname__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(exc)),
    }


def error_from_data(data: dict[str, Any], component: str, method: str) -> RemoteError:
    """The parent-side ``RemoteError`` for an error the child's ``method`` sent as data."""
    return remote_error(
        remote_type=str(data.get("type")),
        remote_message=str(data.get("message")),
        remote_traceback=str(data.get("traceback")),
        component=component,
        method=method,
    )
