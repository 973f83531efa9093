"""Transport: frames in and out of one ZeroMQ socket, without ever awaiting the socket.

Sending: :meth:`Transport.send` appends a packed message to an outbox and, on the first
message of an event-loop pass, schedules one flush (``call_soon``). The flush groups the outbox
into as few frames as the size limit allows (everything produced in that pass usually leaves as
one ZeroMQ message) and sends them without blocking. Frames a full or not-yet-connected socket
refuses wait, in order, until the socket says it can take more.

Receiving: while reading is on, a reader callback on the socket's file descriptor drains it and
hands each frame to ``on_frame``, within a bounded *slice* per wake-up (``SLICE_SECONDS`` of
work and at most ``_MAX_FRAMES_PER_WAKEUP`` frames) so that other callbacks get their turn
however fast the other end writes; replies produced meanwhile are flushed before the callback
returns. ``on_frame`` gets the slice's deadline and may keep part of a large frame for later: it
returns False, and calls :meth:`Transport.resume` once it has handled the rest (nothing more is
read meanwhile, so at most one frame waits in this process).

The other end cannot make this side hold unbounded data either: frames the socket refuses
(a peer that does not read) wait in order up to ``MAX_UNSENT_BYTES``; beyond that the channel
fails, since its other end has stopped reading it.

ZeroMQ's descriptor is edge-triggered and any socket operation may consume the edge: after
sends the socket is asked whether messages arrived meanwhile, so none waits for the next edge.
Failures (a closed or broken socket, an exception from ``on_frame``) go to ``on_failure``.

The socket may be a plain or an asyncio ZeroMQ socket: the unbound ``zmq.Socket`` methods used
here skip zmq.asyncio's future machinery, which the transport never needs.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final

import zmq

from ._errors import ComponentCrashed, ProtocolError
from ._protocol import build_frames

__all__ = ["MAX_UNSENT_BYTES", "SLICE_SECONDS", "Transport"]

_send = zmq.Socket.send
_recv = zmq.Socket.recv
_get = zmq.Socket.get
_NOBLOCK: Final = zmq.NOBLOCK
_EVENTS: Final = zmq.EVENTS
_POLLIN: Final = zmq.POLLIN
_POLLOUT: Final = zmq.POLLOUT
_MAX_FRAMES_PER_WAKEUP: Final = 64  # then let other callbacks run before reading on
_clock = time.perf_counter
#: Work done for one channel before other callbacks of the event loop get their turn.
SLICE_SECONDS: Final = 0.002
#: Frames waiting for a peer that does not read, beyond which the channel fails.
MAX_UNSENT_BYTES: Final = 256 * 1024 * 1024


class Transport:
    """Frames over one connected single-part ZeroMQ socket (PAIR or DEALER)."""

    def __init__(
        self,
        socket: zmq.Socket[Any],
        loop: asyncio.AbstractEventLoop,
        *,
        name: str,
        max_frame_bytes: int,
        on_frame: Callable[[memoryview, float], bool],
        on_failure: Callable[[BaseException], None],
    ) -> None:
        self._socket = socket
        self._fd = int(_get(socket, zmq.FD))
        self._loop = loop
        self._name = name
        self._max_frame = max_frame_bytes
        self._on_frame = on_frame
        self._on_failure = on_failure
        self._outbox: list[bytes] = []
        self._unsent: deque[bytes] = deque()
        self._unsent_bytes = 0
        self._flush_scheduled = False
        self._read_scheduled = False
        self._reader_on = False
        self._reading = False
        self._held = False  # on_frame keeps part of a frame: read nothing more until resume()
        self._closed = False

    @property
    def queued(self) -> int:
        """Frames waiting for the socket to accept them."""
        return len(self._unsent)

    def send(self, message: bytes) -> None:
        """Queue a packed message; it leaves with the others of this loop pass."""
        if self._closed:
            return
        self._outbox.append(message)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self.flush)

    def start_reading(self) -> None:
        self._reading = True
        self._sync_reader()
        # Messages that arrived before now raised no edge we could see: look once.
        self._schedule_read()

    def stop_reading(self) -> None:
        self._reading = False
        self._sync_reader()

    def resume(self) -> None:
        """The consumer has handled the frame it held (see ``on_frame``): read on."""
        self._held = False
        if not self._closed:
            self._schedule_read()

    def close(self) -> None:
        """Send nothing more (queued frames are dropped) and stop watching the socket."""
        self._closed = True
        self._outbox.clear()
        self._unsent.clear()
        self._unsent_bytes = 0
        self._sync_reader()

    def flush(self, *, recheck: bool = True) -> None:
        """Send what is queued, as far as the socket takes it now.

        ``recheck=False`` is for a caller inside the reader callback, which looks at the
        socket's events again itself: the flush then does not schedule another read.
        """
        self._flush_scheduled = False
        if self._closed:
            return
        socket = self._socket
        if socket.closed:
            self._on_failure(ComponentCrashed(f"the socket to {self._name} was closed"))
            return
        if self._outbox:
            for frame in build_frames(self._outbox, self._max_frame):
                self._unsent.append(frame)
                self._unsent_bytes += len(frame)
            self._outbox = []
        unsent = self._unsent
        try:
            while unsent:
                try:
                    _send(socket, unsent[0], _NOBLOCK)
                except zmq.Again:
                    break  # full or not connected yet: the descriptor signals when it can take more
                self._unsent_bytes -= len(unsent.popleft())
            more = self._reading and int(_get(socket, _EVENTS)) & _POLLIN
        except zmq.ZMQError as exc:
            self._on_failure(ComponentCrashed(f"the socket to {self._name} failed: {exc}"))
            return
        if self._unsent_bytes > MAX_UNSENT_BYTES:
            self._on_failure(
                ProtocolError(
                    f"{self._name} stopped reading its channel: {self._unsent_bytes} bytes "
                    f"waited for it, over the {MAX_UNSENT_BYTES}-byte limit"
                )
            )
            return
        self._sync_reader()
        if more and recheck:
            self._schedule_read()

    def _sync_reader(self) -> None:
        want = not self._closed and (self._reading or bool(self._unsent))
        if want and not self._socket.closed and not self._reader_on:
            self._loop.add_reader(self._fd, self._on_readable)
            self._reader_on = True
        elif not want and self._reader_on:
            self._loop.remove_reader(self._fd)
            self._reader_on = False

    def _schedule_read(self) -> None:
        """Look at the socket again on the next loop pass: once, however many ask (a busy
        socket would otherwise pile up look-ups and keep the loop's timers from their turn)."""
        if not self._read_scheduled:
            self._read_scheduled = True
            self._loop.call_soon(self._scheduled_read)

    def _scheduled_read(self) -> None:
        self._read_scheduled = False
        self._on_readable()

    def _on_readable(self) -> None:
        if self._closed:
            return
        socket = self._socket
        if socket.closed:
            self._on_failure(ComponentCrashed(f"the socket to {self._name} was closed"))
            return
        try:
            events = int(_get(socket, _EVENTS))
            frames = 0
            deadline = _clock() + SLICE_SECONDS
            while events & _POLLIN and self._reading and not self._held:
                # Without a copy: a large frame is read by the decoder a chunk at a time.
                if not self._on_frame(_recv(socket, _NOBLOCK, copy=False).buffer, deadline):
                    self._held = True  # the consumer calls resume() when it is done
                    break
                frames += 1
                if frames == _MAX_FRAMES_PER_WAKEUP or _clock() >= deadline:
                    self._schedule_read()
                    break
                events = int(_get(socket, _EVENTS))
        except zmq.ZMQError as exc:
            self._on_failure(ComponentCrashed(f"the socket to {self._name} failed: {exc}"))
            return
        except Exception as exc:  # a bad frame, or a handler rejecting a message
            self._on_failure(exc)
            return
        if self._outbox or (self._unsent and events & _POLLOUT):
            self.flush()
