"""The parent-child channel's fixed points, shared by both ends.

Both ends use ``CONTROL_SOCKET_TYPE`` (the parent binds, the child connects) and carry a wire
layer ``Peer``. The component the child builds is served under the name ``COMPONENT``; the
parent's services under their own names. Neither side offers the lifecycle hooks (``LIFECYCLE``)
across the boundary: only the runtime starts and stops a component, never a dependent's call.
Errors cross as data (:class:`~isolation._errors.ErrorReport`) and become a ``RemoteError`` on
the parent's side.

Both ends' sockets are set up by :func:`configure_socket` before they bind or connect: ZeroMQ
itself drops a message over the frame limit (``MAXMSGSIZE``) before allocating it, with the
connection that carried it, and holds at most ``QUEUED_FRAMES`` frames in each direction
(``SNDHWM``/``RCVHWM``), so that what the other end writes costs bounded memory here however
fast it writes.
"""

from __future__ import annotations

from typing import Any

import zmq

__all__ = [
    "COMPONENT",
    "CONTROL_SOCKET_TYPE",
    "FLUSH_MILLISECONDS",
    "LIFECYCLE",
    "QUEUED_FRAMES",
    "configure_socket",
]

COMPONENT = "component"
CONTROL_SOCKET_TYPE = zmq.PAIR
LIFECYCLE = frozenset({"startup", "run", "shutdown"})
#: How long a child's last messages (its final report) may take to leave before it exits anyway.
FLUSH_MILLISECONDS = 2000
#: Frames ZeroMQ queues per direction of a channel (its high-water marks).
QUEUED_FRAMES = 16


def configure_socket(socket: zmq.Socket[Any], max_frame_bytes: int) -> None:
    """Set a channel socket's bounds; call before it binds or connects."""
    socket.setsockopt(zmq.MAXMSGSIZE, max_frame_bytes)
    socket.setsockopt(zmq.SNDHWM, QUEUED_FRAMES)
    socket.setsockopt(zmq.RCVHWM, QUEUED_FRAMES)
