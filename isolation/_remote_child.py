"""The child's side of a remote child: one session of the child protocol in a running loop.

A child forked from the zygote owns its process and event loop (``_child.main``). A remote
child lives inside a process a scheduler started — a Ray actor's worker, whose event loop
already runs — so :func:`serve_remote` runs the same session (``_child``: connect, hello,
build, READY, ``run()``, the final report) as a coroutine of that loop, over the secure channel
of :mod:`isolation._secure`, and returns once the session is over.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import zmq
import zmq.asyncio

from ._channel import FLUSH_MILLISECONDS
from ._child import _Child
from ._secure import connect_secure

__all__ = ["serve_remote"]


async def serve_remote(config: Mapping[str, Any]) -> int:
    """Run one remote child session described by ``config`` (the parent's start-up message,
    with the channel's ``keys``) in the running event loop; the session's exit code."""
    context = zmq.asyncio.Context()
    socket = connect_secure(context, config["keys"])
    socket.setsockopt(zmq.LINGER, FLUSH_MILLISECONDS)
    return await _Child(config, context, socket, asyncio.get_running_loop()).run()
