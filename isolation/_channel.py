"""The parent-child channel's fixed points, shared by both ends.

Both ends use ``CONTROL_SOCKET_TYPE`` (the parent binds, the child connects) and carry a wire
layer ``Peer``. The component the child builds is served under the name ``COMPONENT``; the
parent's services under their own names. Errors cross as data (``error_to_data``) and become a
``RemoteError`` on the parent's side (``error_from_data``).
"""

from __future__ import annotations

import traceback
from typing import Any

import zmq

from ._errors import RemoteError

__all__ = ["COMPONENT", "CONTROL_SOCKET_TYPE", "error_from_data", "error_to_data"]

COMPONENT = "component"
CONTROL_SOCKET_TYPE = zmq.PAIR


def error_to_data(exc: BaseException) -> dict[str, Any]:
    """An exception as msgpack data: type name, message and formatted traceback."""
    return {
        "type": type(exc).__qualname__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(exc)),
    }


def error_from_data(data: dict[str, Any], component: str) -> RemoteError:
    """The parent-side ``RemoteError`` for an error the child sent as data."""
    return RemoteError(str(data.get("type")), str(data.get("message")), str(data.get("traceback")))
