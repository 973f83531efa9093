"""The parent-child channel's fixed points, shared by both ends.

Both ends use ``CONTROL_SOCKET_TYPE`` (the parent binds, the child connects) and carry a wire
layer ``Peer``. The component the child builds is served under the name ``COMPONENT``; the
parent's services under their own names. Neither side offers the lifecycle hooks (``LIFECYCLE``)
across the boundary: only the runtime starts and stops a component, never a dependent's call.
Errors cross as data (:class:`~isolation._errors.ErrorReport`) and become a ``RemoteError`` on
the parent's side.
"""

from __future__ import annotations

import zmq

__all__ = [
    "COMPONENT",
    "CONTROL_SOCKET_TYPE",
    "FLUSH_MILLISECONDS",
    "LIFECYCLE",
]

COMPONENT = "component"
CONTROL_SOCKET_TYPE = zmq.PAIR
LIFECYCLE = frozenset({"startup", "run", "shutdown"})
#: How long a child's last messages (its final report) may take to leave before it exits anyway.
FLUSH_MILLISECONDS = 2000
