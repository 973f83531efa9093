"""A spare's head start: the event loop, ZeroMQ context and socket, made before there is a job.

The zygote keeps one child forked ahead of time (see ``_zygote_loop``). Whatever that spare does
before it is given a job is off the restart path, and in a fresh fork nearly everything is
slow the first time: every page first written is copied from the zygote, and the first ZeroMQ
socket starts the context's I/O thread. So ``prepare`` makes the loop, the context and the
channel socket, then *rehearses* a session — two Peers over an in-process socket pair exchange
a call and a control message — so that the code and data a real session touches are already
the spare's own when the job arrives. ``take`` hands the result to ``_child.main`` once; a child
forked on demand (no spare was ready) prepares without the rehearsal.
"""

from __future__ import annotations

import asyncio
import itertools

import zmq
import zmq.asyncio

from ._channel import CONTROL_SOCKET_TYPE, FLUSH_MILLISECONDS, LIFECYCLE
from ._rpc import Peer

__all__ = ["Warm", "prepare", "take"]

Warm = tuple[asyncio.AbstractEventLoop, zmq.asyncio.Context, zmq.asyncio.Socket]

_warm: Warm | None = None
_names = itertools.count()


def prepare(*, rehearse: bool) -> None:
    """Make the loop, context and channel socket now (and rehearse a session if asked)."""
    global _warm
    loop = asyncio.new_event_loop()
    context = zmq.asyncio.Context()
    if rehearse:
        loop.run_until_complete(_rehearse(context))
    socket = context.socket(CONTROL_SOCKET_TYPE)
    socket.setsockopt(zmq.LINGER, FLUSH_MILLISECONDS)
    _warm = (loop, context, socket)


def take() -> Warm:
    """The prepared loop, context and socket, made now if no spare made them; only once."""
    global _warm
    if _warm is None:
        prepare(rehearse=False)
    assert _warm is not None
    warm, _warm = _warm, None
    return warm


class _Echo:
    async def echo(self, value: str) -> str:
        return value


async def _rehearse(context: zmq.asyncio.Context) -> None:
    endpoint = f"inproc://rehearsal-{next(_names)}"
    near, far = context.socket(zmq.PAIR), context.socket(zmq.PAIR)
    try:
        near.bind(endpoint)
        far.connect(endpoint)
        heard = asyncio.Event()
        caller = Peer(near, component="rehearsal")
        server = Peer(far, component="rehearsal", on_control=lambda kind, body: heard.set())
        receivers = [asyncio.create_task(caller.run()), asyncio.create_task(server.run())]
        server.serve("echo", _Echo(), _Echo, exclude=LIFECYCLE)
        await caller.proxy("echo", _Echo, exclude=LIFECYCLE).echo("ready?")
        caller.send_control("hello", {"token": "", "pid": 0})
        await asyncio.wait({asyncio.ensure_future(heard.wait())}, timeout=1.0)
        await caller.aclose()
        await server.aclose()
        for receiver in receivers:
            receiver.cancel()
        await asyncio.gather(*receivers, return_exceptions=True)
    finally:
        near.close(linger=0)
        far.close(linger=0)
