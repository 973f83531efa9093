"""Peer: one end of a bidirectional call-and-stream channel over a connected ZeroMQ socket.

Both ends are symmetric. Each can :meth:`~Peer.serve` objects under a name and build
:meth:`~Peer.proxy` objects for what the other end serves; calls and streams flow both ways at
once, with any number in flight. Lifecycle messages of the process layer (hello, ready,
heartbeat, stop, log, exited, ...) share the socket as *control* messages:
:meth:`~Peer.send_control` out, the ``on_control`` callback in.

States::

    OPEN ──fail_pending()/bad frame──> BROKEN ──aclose()──> CLOSED
      └───────────────────aclose()───────────────────────────┘

BROKEN: the other end died or misbehaved; new calls and streams fail at once with
ComponentCrashed, control messages can still be sent and received. CLOSED: nothing more is
sent or received; every call, stream and served task has ended.

What the other end may cost this side is bounded: each frame is read in slices of at most
``SLICE_SECONDS`` of work (a frame of millions of small messages is handled over many event-loop
passes, so other channels and tasks keep their turn); with ``max_calls_in_flight`` and
``max_streams_open`` the other end's calls and streams running here are limited, and the ones
beyond are refused at once with an error that says so.

How a message moves, and why it is fast: a call's arguments are encoded and packed in the
caller (so an unencodable value raises there, naming the parameter) and queued on the
:class:`~isolation._transport.Transport`, which sends everything produced in one event-loop pass
as one ZeroMQ message. Frames arrive through a reader callback (registered while
:meth:`~Peer.run` runs) that resolves callers' futures directly, with no queue or intermediate
task, and hands the other side's calls to the :class:`~isolation._server.Server`, which starts
them as eager tasks: a method that answers without suspending has its reply queued before the
next frame is read, and the replies of a whole batch leave together.

The socket must be a connected ``PAIR`` or ``DEALER`` (single-part messages, one peer). The
Peer owns it for its lifetime: do not use it directly, call :meth:`~Peer.aclose` (or cancel
:meth:`~Peer.run`) before closing it; the Peer never closes it itself.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Final

import zmq

from ._errors import ComponentCrashed, ErrorReport, SerializationError
from ._interface import RemoteMethod
from ._protocol import (
    DEFAULT_MAX_FRAME_BYTES,
    FRAME_HEADER_BYTES,
    ErrorCode,
    FrameDecoder,
    Kind,
    pack,
)
from ._proxy import build_proxy
from ._server import Server
from ._stream import DEFAULT_STREAM_CREDIT, StreamReader
from ._transport import SLICE_SECONDS, Transport

__all__ = ["Peer", "PeerState", "PeerStatistics"]

_CALL: Final = int(Kind.CALL)
_RESULT: Final = int(Kind.RESULT)
_ERROR: Final = int(Kind.ERROR)
_CANCEL: Final = int(Kind.CANCEL)
_STREAM_OPEN: Final = int(Kind.STREAM_OPEN)
_STREAM_ITEM: Final = int(Kind.STREAM_ITEM)
_STREAM_END: Final = int(Kind.STREAM_END)
_STREAM_ERROR: Final = int(Kind.STREAM_ERROR)
_CREDIT: Final = int(Kind.CREDIT)
_CONTROL: Final = int(Kind.CONTROL)
_PACK_ERRORS: Final = (TypeError, ValueError, OverflowError)
#: Time spent handling one frame's messages after which the replies so far are sent at once.
_SLOW_DISPATCH_SECONDS: Final = 0.0005
_perf = time.perf_counter
_clock = _perf


class PeerState(enum.Enum):
    """Where a :class:`Peer` is: OPEN carries calls; BROKEN (after ``fail_pending`` or a bad
    frame) fails new calls at once but still carries control messages; CLOSED after ``aclose``."""

    OPEN = "open"
    BROKEN = "broken"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class PeerStatistics:
    """A snapshot of a Peer: what is in flight in each direction."""

    state: PeerState
    calls_pending: int  # calls this side made, awaiting an answer
    streams_open: int  # streams this side consumes
    serving: int  # calls and streams of the other side running here
    frames_queued: int  # frames waiting for the socket to accept them


class Peer:
    """One end of a channel: serves local objects, proxies remote ones, carries control messages.

    ``component`` names the channel in messages (usually the isolated component it reaches).
    ``max_frame_bytes`` bounds one ZeroMQ message in both directions (set the same on both
    ends). ``stream_credit`` is the window of items a stream's producer may run ahead of its
    consumer. ``on_control(kind, body)`` receives control messages; if it raises, the channel
    is broken and :meth:`run` raises that error (raise ProtocolError for a message that must
    not happen). ``max_calls_in_flight`` and ``max_streams_open`` bound the other end's calls
    and streams running here at once (None: no bound). Create the Peer inside the event loop
    that will run it.
    """

    def __init__(
        self,
        socket: zmq.Socket[Any],
        *,
        component: str,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        on_control: Callable[[str, Any], None] | None = None,
        stream_credit: int = DEFAULT_STREAM_CREDIT,
        max_calls_in_flight: int | None = None,
        max_streams_open: int | None = None,
    ) -> None:
        if max_frame_bytes <= FRAME_HEADER_BYTES + 16:
            raise ValueError(f"max_frame_bytes must be more than 21 bytes, got {max_frame_bytes}")
        if stream_credit < 1:
            raise ValueError(f"stream_credit must be at least 1, got {stream_credit}")
        self.component = component
        self._socket = socket
        self._loop = asyncio.get_running_loop()
        self._max_frame = max_frame_bytes
        self._max_message = max_frame_bytes - FRAME_HEADER_BYTES
        self._on_control = on_control
        self._credit = stream_credit
        self._state = PeerState.OPEN
        self._failure: BaseException | None = None  # why it is BROKEN
        self._fatal: BaseException | None = None  # why receiving stopped for good
        self._decoder = FrameDecoder(max_frame_bytes)
        self._transport = transport = Transport(
            socket,
            self._loop,
            name=component,
            max_frame_bytes=max_frame_bytes,
            on_frame=self._on_frame,
            on_failure=self._break,
        )
        self._enqueue = transport.send
        self._running = False
        self._run_waiter: asyncio.Future[None] | None = None
        self._next_id = 1
        # Outgoing: calls and streams this side started, by id.
        self._calls: dict[int, tuple[asyncio.Future[Any], RemoteMethod]] = {}
        self._streams: dict[int, StreamReader] = {}
        # Incoming: the other side's calls and streams, answered by the server.
        self._server = server = Server(
            self._loop,
            transport.send,
            self._max_message,
            max_frame_bytes,
            max_calls=max_calls_in_flight,
            max_streams=max_streams_open,
            peer=component,
        )
        self._handlers: dict[int, Callable[[list[Any]], None]] = {
            _CALL: server.on_call,
            _RESULT: self._on_result,
            _ERROR: self._on_error,
            _CANCEL: server.on_cancel,
            _STREAM_OPEN: server.on_stream_open,
            _STREAM_ITEM: self._on_stream_item,
            _STREAM_END: self._on_stream_end,
            _STREAM_ERROR: self._on_stream_error,
            _CREDIT: server.on_credit,
            _CONTROL: self._on_control_message,
        }

    def __repr__(self) -> str:
        return (
            f"<Peer {self.component} {self._state.value}: {len(self._calls)} calls pending, "
            f"{len(self._streams)} streams, serving {self._server.active}>"
        )

    @property
    def state(self) -> PeerState:
        return self._state

    def statistics(self) -> PeerStatistics:
        return PeerStatistics(
            self._state,
            len(self._calls),
            len(self._streams),
            self._server.active,
            self._transport.queued,
        )

    # -- public API -------------------------------------------------------------------------

    def serve(self, name: str, obj: object, cls: type, *, exclude: Collection[str] = ()) -> None:
        """Answer calls and streams for ``name`` with ``obj``'s public async methods of ``cls``.

        Only the remote interface of ``cls`` is reachable (minus ``exclude``); anything else is
        answered with an error naming what is. Serving a name again replaces the object.
        """
        self._server.serve(name, obj, cls, exclude)

    def proxy(self, name: str, cls: type, *, exclude: Collection[str] = ()) -> Any:
        """A proxy for the object the other end serves as ``name``, offering ``cls``'s methods."""
        return build_proxy(self, name, cls, exclude)

    async def run(self) -> None:
        """Receive until the Peer is closed; raises ProtocolError if the other end sends garbage.

        Cancelling ``run()`` stops receiving (nothing else); it may be called again.
        """
        if self._running:
            raise RuntimeError(f"{self!r}: run() is already running")
        if self._state is PeerState.CLOSED:
            return
        if self._fatal is not None:
            raise self._fatal
        waiter = self._run_waiter = self._loop.create_future()
        self._running = True
        self._transport.start_reading()
        try:
            await waiter
        finally:
            self._running = False
            self._run_waiter = None
            self._transport.stop_reading()

    def send_control(self, kind: str, body: Any = None) -> None:
        """Send a control message to the other end's ``on_control``; ``body`` is plain data."""
        if self._state is PeerState.CLOSED:
            raise ComponentCrashed(
                f"cannot send {kind!r} to {self.component}: the channel is closed"
            )
        try:
            message = pack(Kind.CONTROL, 0, kind, body)
        except _PACK_ERRORS as exc:
            raise SerializationError(
                f"control message {kind!r}: cannot send its body ({exc}); send builtins"
            ) from exc
        self._check_size(message, f"control message {kind!r}")
        self._enqueue(message)

    def fail_pending(self, exc: BaseException) -> None:
        """Fail every pending call and stream of this side because of ``exc``.

        Each waiting caller gets a ComponentCrashed naming its own call, chained from ``exc``.
        The Peer becomes BROKEN: later calls and streams fail at once the same way, while
        control messages still flow (the process layer may still be talking to the child).
        """
        if self._state is PeerState.OPEN:
            self._state = PeerState.BROKEN
            self._failure = exc
        calls, self._calls = self._calls, {}
        for future, method in calls.values():
            if not future.done():
                future.set_exception(self._crashed(method.codec.label, exc))
        streams, self._streams = self._streams, {}
        for reader in streams.values():
            reader.finish(self._crashed(reader.label, exc))

    async def aclose(self) -> None:
        """Close the channel: queued messages are sent, pending calls fail with ComponentCrashed,
        served calls and streams are cancelled and awaited. The socket is left to its owner."""
        if self._state is PeerState.CLOSED:
            return
        self._transport.flush()
        closed = ComponentCrashed(f"the channel to {self.component} was closed")
        self.fail_pending(self._failure or closed)
        self._state = PeerState.CLOSED
        self._transport.close()
        waiter = self._run_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        await self._server.aclose()

    # -- calls and streams (used by proxies) ------------------------------------------------

    async def _call(
        self, target: str, method: RemoteMethod, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        codec = method.codec
        if self._state is not PeerState.OPEN:
            raise self._unavailable(codec.label)
        wire_args, wire_kwargs = codec.encode_args(args, kwargs)
        call_id = self._next_id
        self._next_id = call_id + 1
        try:
            message = pack(_CALL, call_id, target, method.name, wire_args, wire_kwargs)
        except _PACK_ERRORS as exc:
            raise SerializationError(codec.find_unpackable(wire_args, wire_kwargs)) from exc
        self._check_size(message, codec.label)
        future: asyncio.Future[Any] = self._loop.create_future()
        self._calls[call_id] = (future, method)
        self._enqueue(message)
        try:
            value = await future
        except asyncio.CancelledError:
            if self._calls.pop(call_id, None) is not None:
                self._enqueue(pack(_CANCEL, call_id))  # dropped if the channel is closed
            raise
        return codec.decode_result(value)

    def _open_stream(
        self, target: str, method: RemoteMethod, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[int, StreamReader]:
        codec = method.codec
        if self._state is not PeerState.OPEN:
            raise self._unavailable(codec.label)
        wire_args, wire_kwargs = codec.encode_args(args, kwargs)
        stream_id = self._next_id
        self._next_id = stream_id + 1
        try:
            message = pack(
                _STREAM_OPEN, stream_id, target, method.name, wire_args, wire_kwargs, self._credit
            )
        except _PACK_ERRORS as exc:
            raise SerializationError(codec.find_unpackable(wire_args, wire_kwargs)) from exc
        self._check_size(message, codec.label)

        def grant(n: int) -> None:
            if stream_id in self._streams:
                self._enqueue(pack(_CREDIT, stream_id, n))
                # Now, not at the end of the pass: a busy consumer may not yield to the loop
                # until its buffer is empty, and the producer would idle until then.
                self._transport.flush()

        reader = StreamReader(codec.label, self._credit, grant, self._loop)
        self._streams[stream_id] = reader
        self._enqueue(message)
        return stream_id, reader

    def _close_stream(self, stream_id: int) -> None:
        """The consumer stopped iterating: cancel the remote generator if it still runs."""
        if self._streams.pop(stream_id, None) is not None and self._state is not PeerState.CLOSED:
            self._enqueue(pack(_CANCEL, stream_id))

    def _unavailable(self, label: str) -> ComponentCrashed:
        if self._state is PeerState.CLOSED:
            cause: BaseException = ComponentCrashed(f"the channel to {self.component} is closed")
        else:
            assert self._failure is not None
            cause = self._failure
        return self._crashed(label, cause)

    @staticmethod
    def _crashed(label: str, cause: BaseException) -> ComponentCrashed:
        owner, _, method = label.rpartition(".")
        error = ComponentCrashed(f"{label} failed: {cause}", component=owner, method=method)
        error.__cause__ = cause
        return error

    def _check_size(self, message: bytes, what: str) -> None:
        if len(message) > self._max_message:
            raise SerializationError(
                f"{what}: the message is {len(message)} bytes, over the {self._max_frame}-byte "
                "frame limit; send less at once or raise max_frame_bytes on both peers"
            )

    # -- receiving --------------------------------------------------------------------------

    def _on_frame(self, frame: memoryview, deadline: float) -> bool:
        """Handle a frame's messages until ``deadline``; False if some are left for later."""
        self._decoder.start(frame)
        return self._handle_pending(deadline)

    def _handle_pending(self, deadline: float) -> bool:
        decoder = self._decoder
        handlers = self._handlers
        began = _clock()
        while decoder.pending:
            message = decoder.next()
            handlers[message[1]](message)
            now = _clock()
            if now - began > _SLOW_DISPATCH_SECONDS:
                # Calls that ran long (CPU-bound methods answer without suspending) send their
                # replies now, not after the rest of the frame's calls: their callers, and a
                # router counting calls in flight, hear of them as soon as they are done. (The
                # reader callback, or resume(), looks for more frames itself.)
                self._transport.flush(recheck=False)
                began = now
            if decoder.pending and now >= deadline:
                # The rest of the frame waits for the next pass; the transport reads nothing
                # more meanwhile.
                self._loop.call_soon(self._handle_rest)
                return False
        return True

    def _handle_rest(self) -> None:
        if self._state is PeerState.CLOSED or self._fatal is not None:
            return
        try:
            done = self._handle_pending(_clock() + SLICE_SECONDS)
        except Exception as exc:  # a bad message, or a handler rejecting one
            self._break(exc)
            return
        if done:
            self._transport.resume()

    def _break(self, exc: BaseException) -> None:
        """The channel cannot go on: fail what waits here and make run() raise ``exc``."""
        if self._state is PeerState.CLOSED or self._fatal is not None:
            return
        self.fail_pending(exc)
        self._failure = self._fatal = exc
        self._state = PeerState.BROKEN
        self._transport.stop_reading()
        self._server.cancel_all()
        waiter = self._run_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    # -- answers to this side's calls and streams -------------------------------------------

    def _on_result(self, message: list[Any]) -> None:
        entry = self._calls.pop(message[2], None)
        if entry is not None and not entry[0].done():
            entry[0].set_result(message[3])

    def _on_error(self, message: list[Any]) -> None:
        entry = self._calls.pop(message[2], None)
        if entry is not None and not entry[0].done():
            entry[0].set_exception(self._remote_failure(entry[1].codec.label, message))

    @staticmethod
    def _remote_failure(label: str, message: list[Any]) -> Exception:
        remote_type, text, trace, code = message[3], message[4], message[5], message[6]
        if code == ErrorCode.SERIALIZATION:
            return SerializationError(text)
        owner, _, method = label.rpartition(".")
        return ErrorReport(remote_type, text, trace).bounded().rebuild(owner, method)

    def _on_stream_item(self, message: list[Any]) -> None:
        reader = self._streams.get(message[2])
        if reader is not None:
            reader.feed(message[3])

    def _on_stream_end(self, message: list[Any]) -> None:
        reader = self._streams.pop(message[2], None)
        if reader is not None:
            reader.finish()

    def _on_stream_error(self, message: list[Any]) -> None:
        reader = self._streams.pop(message[2], None)
        if reader is not None:
            reader.finish(self._remote_failure(reader.label, message))

    def _on_control_message(self, message: list[Any]) -> None:
        if self._on_control is not None:
            self._on_control(message[3], message[4])
